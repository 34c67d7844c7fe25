"""Mines the ranker's training lists, in Beam: for every user and every held-out fold, the
candidates that fold's sources would serve, their features, and which of them the user chose.

No list leaks its labels: the fold sources (a two-tower model and an item-to-item table fit
without the fold, the item statistics counted without it) never saw the held-out interactions,
and a list's history is the user's other folds only. The candidates are what the cascade
serves (the union of the sources' top-N, `trainer/ranker/signature.py`), not random catalog
items, so the ranker learns to order the lists it will be given. Hash shares of the users
form the `validation` split (early stopping, the ensemble's choice) and the `gate` split, whose
lists also carry each source's own ranking: the ranker's evaluator judges the cascade on them,
as a user measures it (a quarter of each user's items held out, like a random split).

Outputs: Split-train/, Split-validation/, Split-gate/ (gzipped TFRecords,
`trainer/ranker/lists.py`) and catalog/full.npz, the item statistics of the whole training
split the exported ranker carries.
"""
import os
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Sequence, Tuple

import apache_beam as beam
import numpy as np
import tensorflow as tf
from tfx import v1 as tfx
from tfx.types import artifact_utils, standard_artifacts

from pipeline.components.artifacts import serving_model_dir
from pipeline.components.item_to_item_trainer import FULL, fold_variant, tables_dir
from pipeline.data.examples import TRAIN, decode_example, first, stable_hash
from trainer.item_to_item.export import ItemToItemModule
from trainer.item_to_item.model import ItemToItemTables
from trainer.ranker import lists as L
from trainer.ranker.catalog import ItemCatalog, ItemStats, Span, time_bin
from trainer.ranker.features import RankingFeatures, category_vocabulary
from trainer.ranker.signature import request_inputs, training_request, union
from trainer.retrieval import signature
from trainer.retrieval.trainer import fold_model_dir
from transform import features as F

CATALOG_FILE = os.path.join("catalog", "full.npz")
# The sources a gate list stores the rankings of, as the serving model names them.
GATE_SOURCES = ("retrieval", "item_to_item", "popularity")


def parse_training_example(serialized: bytes) -> Dict[str, Any]:
  """The fields of a training example the miner uses."""
  decoded = decode_example(serialized)
  fields = {name: first(decoded, name, default) for name, default in (
      (F.USER_ID, ""), (F.ITEM_ID, ""), (F.TIMESTAMP, 0), (F.FOLD, F.NO_FOLD), (F.AGE, 0),
      (F.GENDER, ""), (F.OCCUPATION, ""), (F.TITLE, ""), (F.YEAR, 0))}
  return dict(fields, **{F.CATEGORIES: decoded.get(F.CATEGORIES, [])})


class _StatsCombine(beam.CombineFn):
  """(timestamp, time bin) per interaction -> the item's ItemStats."""

  def create_accumulator(self) -> ItemStats:
    return ItemStats()

  def add_input(self, stats: ItemStats, timed: Tuple[int, int]) -> ItemStats:
    return stats.add(*timed)

  def merge_accumulators(self, parts: Iterable[ItemStats]) -> ItemStats:
    return ItemStats.merge(list(parts))

  def extract_output(self, stats: ItemStats) -> ItemStats:
    return stats


def _variants(row: Mapping[str, Any], folds: Sequence[int]) -> List[str]:
  """The catalogs an interaction counts in: the full one, and every fold it is not in."""
  return [FULL] + [fold_variant(f) for f in folds if row[F.FOLD] != f]


class ListMiner(beam.DoFn):
  """Batches of (user, training rows) -> (split, serialized CandidateList), per held-out fold.
  Loads each fold's sources once per worker; the catalogs arrive as a side input."""

  def __init__(self, retrieval_dirs: Mapping[int, str], tables_dirs: Mapping[int, str],
               candidates_per_source: int, validation_share: float, gate_share: float,
               seed: int):
    super().__init__()
    self._retrieval_dirs = dict(retrieval_dirs)
    self._tables_dirs = dict(tables_dirs)
    self._depth = candidates_per_source
    self._shares = (validation_share, validation_share + gate_share)
    self._seed = seed
    self._sources: Dict[int, Tuple[Any, Any, RankingFeatures]] = {}

  def _fold_sources(self, fold: int, catalogs: Mapping[str, ItemCatalog]):
    if fold not in self._sources:
      retrieval = tf.saved_model.load(self._retrieval_dirs[fold])
      tables = ItemToItemTables.load(self._tables_dirs[fold])
      features = RankingFeatures(catalogs[fold_variant(fold)], retrieval, tables,
                                 category_vocabulary(catalogs[FULL], F.CATEGORY_VOCAB_SIZE),
                                 self._depth)
      item_to_item = ItemToItemModule(tables, self._depth).signatures()["serving_default"]
      self._sources[fold] = (retrieval.signatures["serving_default"], item_to_item, features)
    return self._sources[fold]

  def _split(self, user_id: str) -> str:
    share = (stable_hash(self._seed, "validation", user_id) % 10_000) / 10_000
    return (L.VALIDATION if share < self._shares[0] else
            L.GATE if share < self._shares[1] else L.TRAIN)

  def process(self, batch: Sequence[Tuple[str, Iterable[Mapping[str, Any]]]],
              catalogs: Mapping[str, ItemCatalog]) -> Iterator[Tuple[str, bytes]]:
    users = [(user, list(rows)) for user, rows in batch]
    for fold in self._retrieval_dirs:
      requests, targets = [], []
      for user, rows in users:
        held_out = {r[F.ITEM_ID] for r in rows if r[F.FOLD] == fold}
        request = training_request(user, [r for r in rows if r[F.FOLD] != fold], rows[0])
        if held_out and request[F.HISTORY]:
          requests.append(request)
          targets.append(held_out)
      if requests:
        yield from self._mine(fold, requests, targets, catalogs)

  def _mine(self, fold: int, requests: List[Dict[str, Any]], targets: List[set],
            catalogs: Mapping[str, ItemCatalog]) -> Iterator[Tuple[str, bytes]]:
    retrieval, item_to_item, features = self._fold_sources(fold, catalogs)
    query = signature.as_tensors(signature.query_inputs(requests))
    answers = {name: model(**query) for name, model in (
        (GATE_SOURCES[0], retrieval), (GATE_SOURCES[1], item_to_item))}
    ranked = {name: [[item for item, _ in signature.retrieved(
        answer[signature.ITEM_IDS][row].numpy(), answer[signature.SCORES][row].numpy(),
        self._depth)] for row in range(len(requests))] for name, answer in answers.items()}
    candidates = [union([ranked[name][row] for name in ranked], exclude=request[F.HISTORY])
                  for row, request in enumerate(requests)]
    values, _, _ = features(signature.as_tensors(request_inputs(requests, candidates)))
    values = values.numpy()
    for row, (request, chosen) in enumerate(zip(requests, targets)):
      ids = candidates[row]
      split = self._split(request[F.USER_ID])
      mined = L.CandidateList(
          list_id=f"{request[F.USER_ID]}:{fold}", candidate_ids=ids,
          features=values[row, :len(ids)],
          labels=np.array([item in chosen for item in ids], np.float32), relevant=len(chosen))
      if split == L.GATE:
        popular = catalogs[fold_variant(fold)].most_popular(request[F.HISTORY], self._depth)
        mined.relevant_ids = sorted(chosen)
        mined.rankings = {**{name: lists[row] for name, lists in ranked.items()},
                          GATE_SOURCES[2]: popular}
        mined.slices = {F.GENDER: str(request[F.GENDER] or ""),
                        F.ACTIVITY_SEGMENT: F.activity_segment(len(request[F.HISTORY]))}
      yield split, mined.to_example()


def _catalog(keyed: Tuple[str, Iterable[Tuple[str, ItemStats]]],
             metadata: Mapping[str, Mapping[str, Any]], span: Span) -> Tuple[str, ItemCatalog]:
  name, items = keyed
  return name, ItemCatalog.build(metadata, dict(items), span)


def _span(spans: Iterable[Span]) -> Span:
  """The (first, last) timestamp over all interactions; associative, so Beam can combine."""
  spans = list(spans)
  return (min([s[0] for s in spans] + [2 ** 62]), max([s[1] for s in spans] + [0]))


def _save_full_catalog(keyed: Tuple[str, ItemCatalog], path: str) -> None:
  name, catalog = keyed
  if name == FULL:
    tf.io.gfile.makedirs(os.path.dirname(path))
    catalog.save(path)


@tfx.dsl.components.component(use_beam=True)
def RankingListMiner(  # pylint: disable=invalid-name
    examples: tfx.dsl.components.InputArtifact[standard_artifacts.Examples],
    fold_retrieval_model: tfx.dsl.components.InputArtifact[standard_artifacts.Model],
    item_to_item_model: tfx.dsl.components.InputArtifact[standard_artifacts.Model],
    candidate_lists: tfx.dsl.components.OutputArtifact[standard_artifacts.Examples],
    held_out_folds: tfx.dsl.components.Parameter[str],
    candidates_per_source: tfx.dsl.components.Parameter[int],
    validation_share: tfx.dsl.components.Parameter[float],
    gate_share: tfx.dsl.components.Parameter[float],
    seed: tfx.dsl.components.Parameter[int],
    beam_pipeline: tfx.dsl.components.BeamComponentParameter[beam.Pipeline] = None,
) -> None:
  """Writes the lists (Split-train, Split-validation, Split-gate) and the full catalog.

  `held_out_folds` is comma-separated (transform/features.py held_out_folds); every parameter
  is required (defaults in pipeline/config.py RankingStage), so MLMD records each.
  """
  folds = [int(f) for f in held_out_folds.split(",") if f]
  retrieval_dirs = {f: fold_model_dir(serving_model_dir(fold_retrieval_model), f)
                    for f in folds}
  tables_dirs = {f: tables_dir(item_to_item_model.uri, fold_variant(f)) for f in folds}
  miner = ListMiner(retrieval_dirs, tables_dirs, candidates_per_source, validation_share,
                    gate_share, seed)
  with beam_pipeline as p:
    rows = (p | "ReadTrain" >> beam.io.ReadFromTFRecord(
        os.path.join(examples.uri, f"Split-{TRAIN}", "*"))
            | "Parse" >> beam.Map(parse_training_example))
    metadata = (rows | "KeyItem" >> beam.Map(lambda r: (r[F.ITEM_ID], {
        "title": r[F.TITLE], "categories": r[F.CATEGORIES], "year": r[F.YEAR]}))
                | "OnePerItem" >> beam.combiners.Sample.FixedSizePerKey(1)
                | "Unwrap" >> beam.MapTuple(lambda item, rows_: (item, rows_[0])))
    span = beam.pvalue.AsSingleton(
        rows | "Times" >> beam.Map(lambda r: (r[F.TIMESTAMP], r[F.TIMESTAMP]))
        | "Span" >> beam.CombineGlobally(_span))
    catalogs = (rows
                | "PerVariant" >> beam.FlatMap(lambda r, s: [
                    ((v, r[F.ITEM_ID]), (r[F.TIMESTAMP], time_bin(r[F.TIMESTAMP], s)))
                    for v in _variants(r, folds)], s=span)
                | "Stats" >> beam.CombinePerKey(_StatsCombine())
                | "ByVariant" >> beam.MapTuple(lambda key, stats: (key[0], (key[1], stats)))
                | "GroupVariant" >> beam.GroupByKey()
                | "Catalog" >> beam.Map(_catalog, metadata=beam.pvalue.AsDict(metadata),
                                        span=span))
    _ = catalogs | "SaveFull" >> beam.Map(
        _save_full_catalog, path=os.path.join(candidate_lists.uri, CATALOG_FILE))
    mined = (rows | "KeyUser" >> beam.Map(lambda r: (r[F.USER_ID], r))
             | "GroupUser" >> beam.GroupByKey()
             | "Batch" >> beam.BatchElements(min_batch_size=16, max_batch_size=128)
             | "Mine" >> beam.ParDo(miner, catalogs=beam.pvalue.AsDict(catalogs)))
    parts = mined | "BySplit" >> beam.Partition(lambda kv, _: L.SPLITS.index(kv[0]),
                                                len(L.SPLITS))
    for i, split in enumerate(L.SPLITS):
      _ = (parts[i] | f"Value[{split}]" >> beam.Values()
           | f"Write[{split}]" >> beam.io.WriteToTFRecord(
               os.path.join(candidate_lists.uri, f"Split-{split}", "lists"),
               file_name_suffix=".gz"))
  candidate_lists.split_names = artifact_utils.encode_split_names(list(L.SPLITS))
