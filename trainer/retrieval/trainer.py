"""Trainer module file for the two-tower retrieval model (TFX `run_fn`).

Settings come from the Trainer's `custom_config` (see `RetrievalSettings`), so the pipeline
definition, not this file, decides epochs, batch size and the distribution strategy.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_transform as tft  # noqa: E402
from absl import logging  # noqa: E402
from tfx_bsl.public import tfxio  # noqa: E402

from trainer.retrieval.content import (CONTENT_URI, HAS_ID, VECTOR_FEATURES,  # noqa: E402
                                       CatalogContent, with_content)
from trainer.retrieval.content_graph import ContentGraph, export_encoders  # noqa: E402
from trainer.retrieval.export import (RetrievalModule, complete_raw_features,  # noqa: E402
                                      export_retrieval_model)
from trainer.retrieval import warm_start  # noqa: E402
from trainer.retrieval.model import TowerConfig, TwoTowerModel, Vocabularies  # noqa: E402
from trainer.retrieval.signature import as_tensors, item_inputs  # noqa: E402
from trainer.settings import known_settings  # noqa: E402
from transform import features as F  # noqa: E402

if TYPE_CHECKING:
  from tfx.components import FnArgs


@dataclasses.dataclass(frozen=True)
class RetrievalSettings:
  """What the pipeline's config may set for this trainer: the fields below, and any field of
  `TowerConfig` (model settings) by name."""
  epochs: int = 8
  batch_size: int = 1024
  # ExampleGen writes examples grouped by user, so a buffer of any size mixes users whose items
  # span the catalog; a larger one mixes more (at 10,000, batches held about 100 distinct items
  # instead of 550 when the examples still came grouped by item).
  shuffle_buffer_size: int = 100_000
  learning_rate: float = 0.005
  # Epochs of a run that starts from the last blessed model's weights (0: `epochs`).
  warm_start_epochs: int = 0
  top_k: int = 100
  # "default" (one device), "mirrored" (all local GPUs) or "tpu".
  strategy: str = "default"
  seed: int = 42
  tower: TowerConfig = TowerConfig()

  @classmethod
  def from_config(cls, config: Mapping[str, Any] | None) -> "RetrievalSettings":
    own = {f.name for f in dataclasses.fields(cls)} - {"tower"}
    tower = {f.name for f in dataclasses.fields(TowerConfig)}
    config = known_settings(config, own | tower, "retrieval trainer custom_config")
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


def without_fold(dataset: tf.data.Dataset, fold: int) -> tf.data.Dataset:
  """Batches of transformed examples -> the same without `fold`: its examples dropped (batches
  shrink by the fold's share), its items taken out of every history (a fold's sources must
  not learn from it)."""

  def drop(batch: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    keep = tf.not_equal(tf.reshape(batch[F.FOLD_ID], [-1]), fold)
    kept = {name: tf.boolean_mask(values, keep) for name, values in batch.items()}
    in_fold = tf.equal(kept[F.HISTORY_FOLD_IDS], fold)
    history = kept[F.HISTORY_INDEX]
    return dict(kept, **{F.HISTORY_INDEX: tf.where(in_fold, tf.constant(-1, history.dtype),
                                                   history)})

  return dataset.map(drop)


def _dataset(fn_args: "FnArgs", files, tft_output: tft.TFTransformOutput,
             batch_size: int, shuffle: bool, seed: int, shuffle_buffer_size: int = 10_000,
             held_out_fold: Optional[int] = None) -> tf.data.Dataset:
  """Batches of transformed examples, `without_fold(held_out_fold)` when one is given."""
  dataset = fn_args.data_accessor.tf_dataset_factory(
      files,
      tfxio.TensorFlowDatasetOptions(batch_size=batch_size, num_epochs=1, shuffle=shuffle,
                                     shuffle_seed=seed, shuffle_buffer_size=shuffle_buffer_size),
      tft_output.transformed_metadata.schema)
  return dataset if held_out_fold is None else without_fold(dataset, held_out_fold)


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


# Beside the SavedModel in the Model artifact: the warm start and the per-epoch eval curve.
TRAINING_REPORT = "training.json"


class EpochLog(tf.keras.callbacks.Callback):
  """Per epoch: its wall time and the logged metrics (the eval split's at each epoch end), so
  that warm and cold runs can be compared by the time they take to reach a metric."""

  def __init__(self):
    super().__init__()
    self.epochs: List[Dict[str, float]] = []
    self._started = 0.0

  def on_epoch_begin(self, epoch: int, logs=None) -> None:
    self._started = time.time()

  def on_epoch_end(self, epoch: int, logs=None) -> None:
    self.epochs.append({"epoch": epoch + 1, "seconds": round(time.time() - self._started, 2),
                        **{name: float(value) for name, value in (logs or {}).items()}})


def vocabulary_files(tft_output: tft.TFTransformOutput) -> Dict[str, str]:
  """The transform's vocabulary files by name, for the warm start's row mapping."""
  names = (F.USER_VOCAB, F.ITEM_VOCAB, F.GENDER_VOCAB, F.OCCUPATION_VOCAB, F.TITLE_VOCAB,
           F.CATEGORY_VOCAB)
  return {name: tft_output.vocabulary_file_by_name(name) for name in names}


def vocabularies(tft_output: tft.TFTransformOutput) -> Vocabularies:
  size = lambda name: tft_output.vocabulary_size_by_name(name) + F.OOV_BUCKETS  # noqa: E731
  return Vocabularies(users=size(F.USER_VOCAB), items=size(F.ITEM_VOCAB),
                      genders=size(F.GENDER_VOCAB), occupations=size(F.OCCUPATION_VOCAB),
                      title_tokens=size(F.TITLE_VOCAB))


def _with_content(dataset: tf.data.Dataset, by_index: Optional[Mapping[str, tf.Tensor]]
                  ) -> tf.data.Dataset:
  return dataset if by_index is None else dataset.map(lambda b: with_content(b, by_index))


def cold_candidates(content: CatalogContent, rows: List[int], tft_layer: tf.keras.layers.Layer,
                    raw_feature_spec: Mapping[str, object], like: Mapping[str, np.ndarray]
                    ) -> Dict[str, np.ndarray]:
  """The tower's features of catalog items without interactions: their catalog fields through
  the transform graph, their content vectors, no id. `like`: warm features (dtypes, shapes)."""
  parts: Dict[str, List[np.ndarray]] = {name: [] for name in like}
  for start in range(0, len(rows), 1024):
    chunk = rows[start:start + 1024]
    request = as_tensors(item_inputs([content.catalog[row] for row in chunk]))
    transformed = tft_layer(complete_raw_features(request, raw_feature_spec, len(chunk)))
    for name in F.CANDIDATE_FEATURES:
      parts[name].append(transformed[name].numpy().reshape((len(chunk),) + like[name].shape[1:]))
    for name in VECTOR_FEATURES:
      parts[name].append(content.vectors[name][chunk])
    parts[HAS_ID].append(np.zeros(len(chunk), np.float32))
  return {name: np.concatenate(values).astype(like[name].dtype) for name, values in parts.items()}


def train_and_export(fn_args: "FnArgs", settings: RetrievalSettings, export_dir: str,
                     held_out_fold: Optional[int] = None,
                     content: Optional[CatalogContent] = None,
                     base_model_dir: Optional[str] = None) -> None:
  """Trains the two towers on the training files (without one fold, for the ranker stage's
  fold models) and exports the serving SavedModel to `export_dir`. With `content` (the
  multimodal tower) the candidates are every catalog item: those without interactions are
  placed by content; the model that is served (no held-out fold) embeds new items with the
  encoders inside it. With `base_model_dir` (the last blessed model's SavedModel) training
  starts from its weights where the towers allow (`warm_start.py`)."""
  tf.keras.utils.set_random_seed(settings.seed)
  tft_output = tft.TFTransformOutput(fn_args.transform_output)
  vocab = vocabularies(tft_output)
  item_vocab = [item.decode() for item in tft_output.vocabulary_by_name(F.ITEM_VOCAB)]
  by_index = None if content is None else {
      name: tf.constant(values)
      for name, values in content.by_index(item_vocab, vocab.items).items()}
  train = _with_content(_dataset(fn_args, fn_args.train_files, tft_output, settings.batch_size,
                                 True, settings.seed, settings.shuffle_buffer_size,
                                 held_out_fold), by_index)
  evaluation = _with_content(_dataset(fn_args, fn_args.eval_files, tft_output,
                                      settings.batch_size, False, settings.seed), by_index)
  counts, item_features = collect_catalog(
      _dataset(fn_args, fn_args.train_files, tft_output, 4096, False, settings.seed,
               held_out_fold=held_out_fold), vocab.items)
  catalog = np.flatnonzero(counts)
  logging.info("retrieval trainer (held-out fold %s): %d interactions, %d catalog items, %s",
               held_out_fold, counts.sum(), len(catalog), vocab)
  # Probability that an item is among a batch's candidates, for the logQ correction.
  probabilities = 1.0 - np.power(1.0 - counts / counts.sum(), settings.batch_size)
  catalog_features = {name: values[catalog] for name, values in item_features.items()}
  if by_index is not None:
    catalog_features.update({name: by_index[name].numpy()[catalog] for name in VECTOR_FEATURES})
    catalog_features[HAS_ID] = np.ones(len(catalog), np.float32)

  vocab_files = vocabulary_files(tft_output)
  started = {"warm": False, "reason": "no base model (none blessed yet, or --no_warm_start)"}
  with distribution_strategy(settings.strategy).scope():
    model = TwoTowerModel(vocab, probabilities, settings.tower, catalog_features)
    model.compile(optimizer=tf.keras.optimizers.Adam(settings.learning_rate))
    if base_model_dir:
      batch = next(iter(train))  # the towers' weights exist once they have seen a batch
      model.query_tower(batch), model.candidate_tower(batch)
      started = warm_start.restore(model, vocab_files, base_model_dir)
      logging.info("retrieval trainer warm start: %s", started)
  epochs = (settings.warm_start_epochs if started["warm"] and settings.warm_start_epochs
            else settings.epochs)
  log_dir = fn_args.model_run_dir if held_out_fold is None else os.path.join(
      fn_args.model_run_dir, f"fold-{held_out_fold}")
  epoch_log = EpochLog()
  # A fold model is only a source of the ranker's lists: no per-epoch eval, which costs time.
  model.fit(train, validation_data=evaluation if held_out_fold is None else None,
            epochs=epochs, verbose=2,
            callbacks=[tf.keras.callbacks.TensorBoard(log_dir=log_dir), epoch_log])

  item_ids = [item_vocab[i] for i in catalog]
  tft_layer, raw_spec = tft_output.transform_features_layer(), tft_output.raw_feature_spec()
  content_graph, encoders_dir = None, None
  if content is not None:
    cold = content.cold_rows(item_ids)
    logging.info("retrieval trainer: %d catalog items without interactions placed by content",
                 len(cold))
    if cold:
      cold_features = cold_candidates(content, cold, tft_layer, raw_spec, catalog_features)
      catalog_features = {name: np.concatenate([values, cold_features[name]])
                          for name, values in catalog_features.items()}
      item_ids += [content.item_ids[row] for row in cold]
    encoders_dir = export_encoders() if held_out_fold is None else None
    content_graph = ContentGraph(content.item_ids, content.vectors, item_ids[:len(catalog)],
                                 encoders_dir)
  module = RetrievalModule(model.query_tower, model.candidate_tower, tft_layer, raw_spec,
                           item_ids, catalog_features, settings.top_k, content_graph)
  export_retrieval_model(module, export_dir)
  if encoders_dir is not None:
    shutil.rmtree(encoders_dir, ignore_errors=True)
  if held_out_fold is None:  # the served model is what a later run may start from
    warm_start.save(model, vocab_files, export_dir)
    report = os.path.join(os.path.dirname(export_dir.rstrip("/")), TRAINING_REPORT)
    with tf.io.gfile.GFile(report, "w") as f:
      json.dump({"warm_start": started, "epochs": epoch_log.epochs}, f, indent=2)


def _settings_and_content(config: Mapping[str, Any]
                          ) -> Tuple[Dict[str, Any], Optional[CatalogContent]]:
  """The custom_config without the content artifact's uri, and the content it names (which
  turns the multimodal tower on)."""
  config = dict(config or {})
  uri = config.pop(CONTENT_URI, None)
  if uri is None:
    return config, None
  return {**config, "content": True}, CatalogContent.read(uri)


def run_fn(fn_args: "FnArgs") -> None:
  """Trains the two towers and exports the serving SavedModel (TFX Trainer entry point)."""
  config, content = _settings_and_content(fn_args.custom_config)
  train_and_export(fn_args, RetrievalSettings.from_config(config), fn_args.serving_model_dir,
                   content=content, base_model_dir=fn_args.base_model)


# Keys of a fold Trainer's custom_config besides the retrieval settings.
HELD_OUT_FOLDS = "held_out_folds"
FOLD_EPOCHS = "fold_epochs"


def fold_model_dir(serving_model_dir: str, fold: int) -> str:
  """Where the fold Trainer puts the model that never saw `fold` (under its Model artifact)."""
  return os.path.join(serving_model_dir, f"fold-{fold}")


def fold_run_fn(fn_args: "FnArgs") -> None:
  """Trains one two-tower model per held-out fold (TFX Trainer entry point of the ranker
  stage's fold sources); `fold_epochs` (0 = the retrieval model's) bounds their cost."""
  config, content = _settings_and_content(fn_args.custom_config)
  folds, epochs = config.pop(HELD_OUT_FOLDS), config.pop(FOLD_EPOCHS, 0)
  settings = RetrievalSettings.from_config(config)
  if epochs:
    settings = dataclasses.replace(settings, epochs=epochs)
  for fold in folds:
    train_and_export(fn_args, settings, fold_model_dir(fn_args.serving_model_dir, fold), fold,
                     content)
