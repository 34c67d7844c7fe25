"""Trainer module file for the two-tower retrieval model (TFX `run_fn`).

Settings come from the Trainer's `custom_config` (see `RetrievalSettings`), so the pipeline
definition, not this file, decides epochs, batch size and the distribution strategy.
"""
from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any, Dict, Mapping, Tuple

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_transform as tft  # noqa: E402
from absl import logging  # noqa: E402
from tfx_bsl.public import tfxio  # noqa: E402

from trainer.retrieval.export import RetrievalModule, export_retrieval_model  # noqa: E402
from trainer.retrieval.model import TowerConfig, TwoTowerModel, Vocabularies  # noqa: E402
from transform import features as F  # noqa: E402

if TYPE_CHECKING:
  from tfx.components import FnArgs


@dataclasses.dataclass(frozen=True)
class RetrievalSettings:
  """What the pipeline's config may set for this trainer: the fields below, and any field of
  `TowerConfig` (model settings) by name."""
  epochs: int = 8
  batch_size: int = 1024
  # ExampleGen writes examples grouped by item: a small buffer leaves each batch with few
  # distinct items (about 100 instead of 550 at 10,000), which starves the softmax.
  shuffle_buffer_size: int = 100_000
  learning_rate: float = 0.005
  top_k: int = 100
  # "default" (one device), "mirrored" (all local GPUs) or "tpu".
  strategy: str = "default"
  seed: int = 42
  tower: TowerConfig = TowerConfig()

  @classmethod
  def from_config(cls, config: Mapping[str, Any] | None) -> "RetrievalSettings":
    config = dict(config or {})
    own = {f.name for f in dataclasses.fields(cls)} - {"tower"}
    tower = {f.name for f in dataclasses.fields(TowerConfig)}
    unknown = set(config) - own - tower
    if unknown:
      raise ValueError(f"retrieval trainer custom_config: unknown settings {sorted(unknown)}; "
                       f"known: {sorted(own | tower)}")
    return cls(tower=TowerConfig(**{k: v for k, v in config.items() if k in tower}),
               **{k: v for k, v in config.items() if k in own})


def distribution_strategy(name: str) -> tf.distribute.Strategy:
  """The strategy named in config; the CPU path is "default"."""
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "tpu":
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  raise ValueError(f"unknown distribution strategy {name!r}: use default, mirrored or tpu")


def _dataset(fn_args: "FnArgs", files, tft_output: tft.TFTransformOutput,
             batch_size: int, shuffle: bool, seed: int, shuffle_buffer_size: int = 10_000
             ) -> tf.data.Dataset:
  return fn_args.data_accessor.tf_dataset_factory(
      files,
      tfxio.TensorFlowDatasetOptions(batch_size=batch_size, num_epochs=1, shuffle=shuffle,
                                     shuffle_seed=seed, shuffle_buffer_size=shuffle_buffer_size),
      tft_output.transformed_metadata.schema)


def collect_catalog(dataset: tf.data.Dataset, n_items: int
                    ) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
  """Per item index: how often it occurs in training, and its candidate features.

  One pass over the training data; memory grows with the catalog, not with the interactions.
  """
  counts = np.zeros(n_items, np.int64)
  features: Dict[str, np.ndarray] = {}
  seen = np.zeros(n_items, bool)
  for batch in dataset.as_numpy_iterator():
    index = batch[F.ITEM_INDEX].reshape(-1)
    counts += np.bincount(index, minlength=n_items)
    first, rows = np.unique(index, return_index=True)
    new = ~seen[first]
    for name in F.CANDIDATE_FEATURES:
      column = batch[name].reshape((len(index),) + batch[name].shape[1:])
      if name not in features:
        features[name] = np.zeros((n_items,) + column.shape[1:], column.dtype)
      features[name][first[new]] = column[rows[new]]
    seen[first] = True
  return counts, features


def vocabularies(tft_output: tft.TFTransformOutput) -> Vocabularies:
  size = lambda name: tft_output.vocabulary_size_by_name(name) + F.OOV_BUCKETS  # noqa: E731
  return Vocabularies(users=size(F.USER_VOCAB), items=size(F.ITEM_VOCAB),
                      genders=size(F.GENDER_VOCAB), occupations=size(F.OCCUPATION_VOCAB),
                      title_tokens=size(F.TITLE_VOCAB))


def run_fn(fn_args: "FnArgs") -> None:
  """Trains the two towers and exports the serving SavedModel (TFX Trainer entry point)."""
  settings = RetrievalSettings.from_config(fn_args.custom_config)
  tf.keras.utils.set_random_seed(settings.seed)
  tft_output = tft.TFTransformOutput(fn_args.transform_output)
  vocab = vocabularies(tft_output)
  train = _dataset(fn_args, fn_args.train_files, tft_output, settings.batch_size, True,
                   settings.seed, settings.shuffle_buffer_size)
  evaluation = _dataset(fn_args, fn_args.eval_files, tft_output, settings.batch_size, False,
                        settings.seed)
  counts, item_features = collect_catalog(
      _dataset(fn_args, fn_args.train_files, tft_output, 4096, False, settings.seed), vocab.items)
  catalog = np.flatnonzero(counts)
  logging.info("retrieval trainer: %d interactions, %d catalog items, %s", counts.sum(),
               len(catalog), vocab)
  # Probability that an item is among a batch's candidates, for the logQ correction.
  probabilities = 1.0 - np.power(1.0 - counts / counts.sum(), settings.batch_size)
  catalog_features = {name: values[catalog] for name, values in item_features.items()}

  with distribution_strategy(settings.strategy).scope():
    model = TwoTowerModel(vocab, probabilities, settings.tower, catalog_features)
    model.compile(optimizer=tf.keras.optimizers.Adam(settings.learning_rate))
  model.fit(train, validation_data=evaluation, epochs=settings.epochs, verbose=2,
            callbacks=[tf.keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir)])

  item_vocab = np.array(tft_output.vocabulary_by_name(F.ITEM_VOCAB), dtype=object)
  module = RetrievalModule(
      model.query_tower, model.candidate_tower, tft_output.transform_features_layer(),
      tft_output.raw_feature_spec(), [item_vocab[i].decode() for i in catalog],
      catalog_features, settings.top_k)
  export_retrieval_model(module, fn_args.serving_model_dir)
