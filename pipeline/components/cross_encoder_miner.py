"""Mines the cross-encoder's query groups with the retrieval model, in Beam.

For a bounded, deterministic sample of interactions (the smallest hashes, so the same data gives
the same sample on any runner), each group is one query with candidates in shuffled order, each
with the text the cross-encoder reads, its label and the retriever's score:

- `train` and `validation` (early stopping), from training-period interactions: the item the
  user chose, hard negatives (the retriever's top candidates for that user, history excluded)
  and random catalog items;
- `eval`, from the later interactions: exactly what the cascade would re-rank, the retriever's
  top `eval_depth` candidates, the chosen item among them only if the retriever found it. A
  group with no relevant candidate is dropped (it ranks nothing for either order). Injecting the
  chosen item instead would rank it below the retriever's favourites by construction, and any
  re-ranker would "beat" the retrieval order.

The cross-encoder re-ranks search results (recommendations are the ranker's job), so every
group is a search: the logged query of an interaction that has one (the raw data contract's
`query`), else a SYNTHETIC query generated from the chosen item's metadata
(`synthetic_search.py`), labelled from the metadata; an interaction whose metadata allows no
query is skipped. The item texts are exactly what serving sends (`trainer/cross_encoder/
texts.py`). Splits: `train` and `validation` (early stopping) from the training interactions,
`eval` from the later ones.

The catalog is a side input (a dict per worker): fine for catalogs up to millions of short rows.
"""

import os
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
import tensorflow as tf
from tfx import v1 as tfx
from tfx.types import artifact_utils, standard_artifacts

from pipeline.components.artifacts import serving_model_dir
from pipeline.data import contract
from pipeline.data.beam_io import ReadTable
from pipeline.data.examples import EVAL, TRAIN, decode_example, first, stable_hash
from trainer.cross_encoder import groups as E
from trainer.cross_encoder.synthetic_search import SearchIntent, synthetic_intent
from trainer.cross_encoder.texts import item_text
from trainer.retrieval import signature
from transform import features as F

Interaction = Dict[str, Any]


def parse_interaction(serialized: bytes) -> Interaction:
  """The fields of an InteractionExampleGen example that mining needs ("" / 0 when absent)."""
  decoded = decode_example(serialized)
  scalars = {name: first(decoded, name, default) for name, default in (
      (F.USER_ID, ""), (F.ITEM_ID, ""), (F.TIMESTAMP, 0), (F.QUERY, ""), (F.AGE, 0),
      (F.GENDER, ""), (F.OCCUPATION, ""))}
  return {**scalars, F.HISTORY: decoded.get(F.HISTORY, [])}


def interaction_id(interaction: Interaction) -> str:
  return f"{interaction[F.USER_ID]}:{interaction[F.ITEM_ID]}:{interaction[F.TIMESTAMP]}"


def _smallest_hashes(interactions: beam.PCollection, count: int, seed: int, label: str
                     ) -> beam.PCollection:
  """A deterministic bounded sample: the `count` interactions with the smallest hashes, as one
  list in hash order."""
  return (interactions
          | f"Key[{label}]" >> beam.Map(lambda x: (stable_hash(seed, interaction_id(x)), x))
          | f"Smallest[{label}]" >> beam.combiners.Top.Of(count, key=lambda kv: kv[0],
                                                          reverse=True))


class GroupMiner(beam.DoFn):
  """Batches of (split, interaction) -> (split, serialized query group), with the retrieval
  SavedModel; the catalog arrives as a side input dict."""

  def __init__(self, retrieval_model_dir: str, hard_negatives: int, random_negatives: int,
               eval_depth: int, seed: int):
    super().__init__()
    self._model_dir = retrieval_model_dir
    self._hard_negatives = hard_negatives
    self._random_negatives = random_negatives
    self._eval_depth = eval_depth
    self._seed = seed
    self._model = None
    self._catalog_ids: List[str] = []

  def setup(self) -> None:
    self._model = tf.saved_model.load(self._model_dir)

  def _item_embeddings(self, item_ids: Sequence[str], catalog: Mapping[str, Mapping[str, Any]]
                       ) -> Dict[str, np.ndarray]:
    inputs = signature.item_inputs([catalog[i] for i in item_ids])
    embeddings = self._model.signatures["item_embeddings"](**signature.as_tensors(inputs))
    return dict(zip(item_ids, embeddings[signature.EMBEDDING].numpy()))

  @staticmethod
  def _query(interaction: Interaction, catalog: Mapping[str, Mapping[str, Any]],
             rng: np.random.Generator) -> Optional[Tuple[str, str, Optional[SearchIntent]]]:
    """(kind, query text, the synthetic intent that labels the candidates, if any): the logged
    search, else a SYNTHETIC one from the chosen item's metadata; None if it allows none."""
    if interaction[F.QUERY]:
      return E.SEARCH, interaction[F.QUERY], None
    intent = synthetic_intent(catalog[interaction[F.ITEM_ID]], rng)
    return None if intent is None else (E.SYNTHETIC_SEARCH, intent.text, intent)

  def _candidates(self, split: str, interaction: Interaction, retrieved: List[str],
                  rng: np.random.Generator) -> List[str]:
    """The group's items in shuffled order (ties then fall in no particular favour)."""
    if split == E.EVAL:
      items = retrieved[:self._eval_depth]
    else:
      positive = interaction[F.ITEM_ID]
      hard = [i for i in retrieved if i != positive][:self._hard_negatives]
      excluded = {positive, *hard, *interaction[F.HISTORY]}
      # Few retrieved items (a tiny catalog) leave room for more random ones: same group size.
      items = [positive] + hard + self._random_items(
          self._random_negatives + self._hard_negatives - len(hard), excluded, rng)
    return [items[i] for i in rng.permutation(len(items))]

  def _random_items(self, count: int, excluded: set, rng: np.random.Generator) -> List[str]:
    if len(self._catalog_ids) - len(excluded) < count:
      raise ValueError(f"the catalog has too few items for {count} random negatives")
    chosen: List[str] = []
    while len(chosen) < count:
      item = self._catalog_ids[rng.integers(len(self._catalog_ids))]
      if item not in excluded:
        excluded.add(item)
        chosen.append(item)
    return chosen

  def process(self, batch: Sequence[Tuple[str, Interaction]],
              catalog: Mapping[str, Mapping[str, Any]]) -> Iterator[Tuple[str, bytes]]:
    if not self._catalog_ids:
      self._catalog_ids = sorted(catalog)
    features = signature.as_tensors(signature.query_inputs([x for _, x in batch]))
    top = self._model.signatures["serving_default"](**features)
    query_embeddings = self._model.signatures["query_embedding"](
        **features)[signature.EMBEDDING].numpy()
    groups = []
    for row, (split, interaction) in enumerate(batch):
      rng = np.random.default_rng(stable_hash(self._seed, split, interaction_id(interaction)))
      query = self._query(interaction, catalog, rng)
      if query is None:
        continue
      retrieved = signature.retrieved(top[signature.ITEM_IDS][row].numpy(),
                                      top[signature.SCORES][row].numpy(),
                                      depth=len(self._catalog_ids))
      items = self._candidates(split, interaction, [item for item, _ in retrieved], rng)
      groups.append((split, interaction, items, query))
    if not groups:
      return
    embeddings = self._item_embeddings(sorted({i for _, _, items, _ in groups for i in items}),
                                       catalog)
    for row, (split, interaction, items, (kind, text, intent)) in enumerate(groups):
      labels = [float(intent.matches(catalog[i]) if intent else i == interaction[F.ITEM_ID])
                for i in items]
      if not any(labels):
        continue
      group = E.Group(
          query_id=f"{kind}:{interaction_id(interaction)}", query=text, kind=kind,
          item_ids=items, item_texts=[item_text(catalog[i]) for i in items], labels=labels,
          retriever_scores=[float(query_embeddings[row] @ embeddings[i]) for i in items])
      yield split, group.to_example()


@tfx.dsl.components.component(use_beam=True)
def CrossEncoderMiner(  # pylint: disable=invalid-name
    examples: tfx.dsl.components.InputArtifact[standard_artifacts.Examples],
    retrieval_model: tfx.dsl.components.InputArtifact[standard_artifacts.Model],
    groups: tfx.dsl.components.OutputArtifact[standard_artifacts.Examples],
    data_root: tfx.dsl.components.Parameter[str],
    train_groups: tfx.dsl.components.Parameter[int],
    validation_groups: tfx.dsl.components.Parameter[int],
    eval_groups: tfx.dsl.components.Parameter[int],
    hard_negatives: tfx.dsl.components.Parameter[int],
    random_negatives: tfx.dsl.components.Parameter[int],
    eval_depth: tfx.dsl.components.Parameter[int],
    seed: tfx.dsl.components.Parameter[int],
    beam_pipeline: tfx.dsl.components.BeamComponentParameter[beam.Pipeline] = None,
) -> None:
  """Writes gzipped TFRecords of query groups to Split-train, Split-validation, Split-eval.

  Every parameter is required (defaults live in pipeline/config.py's CrossEncoderStage), so each is
  recorded in MLMD and a changed value is a cache miss.
  """
  miner = GroupMiner(serving_model_dir(retrieval_model), hard_negatives,
                     random_negatives, eval_depth, seed)
  with beam_pipeline as p:
    catalog = (p | ReadTable(data_root, contract.ITEMS)
               | "KeyItems" >> beam.Map(lambda row: (row["item_id"], row)))
    raw = {split: (p | f"Read[{split}]" >> beam.io.ReadFromTFRecord(
        os.path.join(examples.uri, f"Split-{split}", "*"))
                   | f"Parse[{split}]" >> beam.Map(parse_interaction)) for split in (TRAIN, EVAL)}
    training = _smallest_hashes(raw[TRAIN], train_groups + validation_groups, seed, TRAIN)
    later = _smallest_hashes(raw[EVAL], eval_groups, seed, EVAL)
    sampled = (
        (training | "AssignTrain" >> beam.FlatMap(
            lambda top: [(E.VALIDATION if i < validation_groups else E.TRAIN, x)
                         for i, (_, x) in enumerate(top)]),
         later | "AssignEval" >> beam.FlatMap(lambda top: [(E.EVAL, x) for _, x in top]))
        | "Sampled" >> beam.Flatten())
    mined = (sampled
             | "Batch" >> beam.BatchElements(min_batch_size=32, max_batch_size=256)
             | "Mine" >> beam.ParDo(miner, catalog=beam.pvalue.AsDict(catalog)))
    parts = mined | "BySplit" >> beam.Partition(lambda kv, _: E.SPLITS.index(kv[0]),
                                                len(E.SPLITS))
    for i, split in enumerate(E.SPLITS):
      _ = (parts[i] | f"Value[{split}]" >> beam.Values()
           | f"Write[{split}]" >> beam.io.WriteToTFRecord(
               os.path.join(groups.uri, f"Split-{split}", "groups"), file_name_suffix=".gz"))
  groups.split_names = artifact_utils.encode_split_names(list(E.SPLITS))
