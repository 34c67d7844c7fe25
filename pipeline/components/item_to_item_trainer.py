"""Learns the item-to-item candidate source from co-occurrence in the train split, in Beam, and
exports its SavedModel, plus the tables of one variant per fold for the ranker's mining.

Beam groups the interactions by user and keeps, per variant, the user's most recent
`history_limit` distinct items (a fold's variant leaves out that fold's interactions, so the
sources a ranker's training lists are mined with have not seen the held-out fold). Each user
then adds the upper triangle of their binary X^T X to the Gram matrix, row by row: key
(variant, item i), value [i] + the user's kept items after i in id order, summed by a
combiner. So the pairs are counted per (variant, i, j) with one element per (user, item)
rather than per pair (20 times faster in the DirectRunner), and what reaches the driver is one
variant's sparse counts at a time, with the catalog: every training item and its interaction
count. The driver then solves each variant over that one catalog (so item indices agree across
variants): dense EASE needs the n x n Gram matrix in one process, the documented
single-machine step, bounded by `dense_limit`.

Under the Model artifact: `Format-Serving/` (the full variant's SavedModel), `tables/full/` and
`tables/fold-<f>/` (`ItemToItemTables` folders; `tables_dir`).
"""
import collections
import json
import os
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import apache_beam as beam
import numpy as np
import tensorflow as tf
from tfx import v1 as tfx
from tfx.types import standard_artifacts

from pipeline.components.artifacts import serving_model_dir
from pipeline.data.examples import TRAIN, decode_example, first
from trainer.item_to_item.export import ItemToItemModule, export_item_to_item
from trainer.item_to_item.model import ItemToItemSettings, ItemToItemTables, fit_tables
from transform import features as F

FULL = "full"
TABLES = "tables"
CATALOG = "catalog"
# One interaction as the per-user lists hold it: (timestamp, item id, fold).
Event = Tuple[int, str, int]


def fold_variant(fold: int) -> str:
  return f"fold-{fold}"


def variants(folds: int) -> List[Tuple[str, Optional[int]]]:
  """(name, held-out fold): the full variant holds out nothing."""
  return [(FULL, None)] + [(fold_variant(fold), fold) for fold in range(folds)]


def tables_dir(model_uri: str, variant: str) -> str:
  return os.path.join(model_uri, TABLES, variant)


def _event(serialized: bytes) -> Tuple[str, Event]:
  decoded = decode_example(serialized)
  return first(decoded, F.USER_ID, ""), (first(decoded, F.TIMESTAMP, 0),
                                         first(decoded, F.ITEM_ID, ""),
                                         first(decoded, F.FOLD, F.NO_FOLD))


def recent_items(events: Iterable[Event], held_out: Optional[int], limit: int) -> List[str]:
  """The user's `limit` most recent distinct items, the held-out fold's interactions left out."""
  kept: Dict[str, None] = {}
  for _, item, fold in sorted(events, reverse=True):
    if len(kept) == limit:
      break
    if fold != held_out:
      kept.setdefault(item)
  return list(kept)


def gram_rows(events: Iterable[Event], folds: int, limit: int
              ) -> Iterator[Tuple[Tuple[str, str], List[str]]]:
  """One user's upper triangle of X^T X per variant: (variant, i) -> [i, later items j...]."""
  events = list(events)
  for variant, held_out in variants(folds):
    items = sorted(recent_items(events, held_out, limit))
    for position, item in enumerate(items):
      yield (variant, item), items[position:]


def _add_counts(values: Iterable[Iterable[str]]) -> collections.Counter:
  """Sums id lists and earlier sums alike (Counter.update counts a list, adds a mapping)."""
  total: collections.Counter = collections.Counter()
  for value in values:
    total.update(value)
  return total


def _read_json_lines(path_prefix: str) -> Iterator[Any]:
  for path in tf.io.gfile.glob(path_prefix + "*"):
    with tf.io.gfile.GFile(path) as f:
      for line in f:
        yield json.loads(line)


def _fit_variant(rows: Iterable[Tuple[str, Dict[str, int]]], index: Dict[str, int],
                 item_ids: List[str], settings: ItemToItemSettings) -> ItemToItemTables:
  """One variant's Gram rows (item i, {i: its count, later j: co-occurrence}) -> its tables,
  over the shared catalog (an item the variant never kept has count 0 and no pairs)."""
  counts = np.zeros(len(item_ids), np.int64)
  pair_rows: List[int] = []
  pair_cols: List[int] = []
  pair_counts: List[int] = []
  for item, row in rows:
    counts[index[item]] = row.pop(item)
    pair_rows.extend([index[item]] * len(row))
    pair_cols.extend(index[other] for other in row)
    pair_counts.extend(row.values())
  return fit_tables(item_ids, counts, np.array(pair_rows, np.int64),
                    np.array(pair_cols, np.int64), np.array(pair_counts, np.int64), settings)


@tfx.dsl.components.component(use_beam=True)
def ItemToItemTrainer(  # pylint: disable=invalid-name
    examples: tfx.dsl.components.InputArtifact[standard_artifacts.Examples],
    model: tfx.dsl.components.OutputArtifact[standard_artifacts.Model],
    settings: tfx.dsl.components.Parameter[str] = "{}",
    folds: tfx.dsl.components.Parameter[int] = 0,
    beam_pipeline: tfx.dsl.components.BeamComponentParameter[beam.Pipeline] = None,
) -> None:
  """`settings`: JSON of `ItemToItemSettings` fields; `folds`: the variants besides the full one
  (an example's `fold` feature, -1 or absent = never held out)."""
  config = ItemToItemSettings.from_config(json.loads(settings))
  names = [name for name, _ in variants(folds)]
  counts_path = os.path.join(model.uri, "counts")  # the driver's input, removed at the end
  with beam_pipeline as p:
    events = (p
              | "ReadTrain" >> beam.io.ReadFromTFRecord(
                  os.path.join(examples.uri, f"Split-{TRAIN}", "*"))
              | "Event" >> beam.Map(_event))
    _ = (events
         | "ItemId" >> beam.Map(lambda event: event[1][1])
         | "CountItems" >> beam.combiners.Count.PerElement()
         | "CatalogJson" >> beam.Map(json.dumps)
         | "WriteCatalog" >> beam.io.WriteToText(os.path.join(counts_path, CATALOG)))
    parts = (events
             | "GroupByUser" >> beam.GroupByKey()
             | "GramRows" >> beam.FlatMap(lambda user: gram_rows(user[1], folds,
                                                                 config.history_limit))
             | "Count" >> beam.CombinePerKey(_add_counts)
             | "ByVariant" >> beam.Partition(lambda row, _: names.index(row[0][0]), len(names)))
    for name, part in zip(names, parts):
      _ = (part
           | f"Json[{name}]" >> beam.Map(lambda row: json.dumps([row[0][1], row[1]]))
           | f"Write[{name}]" >> beam.io.WriteToText(os.path.join(counts_path, name)))
  interactions = dict(_read_json_lines(os.path.join(counts_path, CATALOG)))
  if not interactions:
    raise ValueError(f"item-to-item: no interactions in {examples.uri} Split-{TRAIN}")
  # Every training item (a variant may keep items the full variant's history limit drops), by
  # interaction count: an empty history's all-zero scores then answer the most popular items.
  item_ids = sorted(interactions, key=lambda item: (-interactions[item], item))
  index = {item: position for position, item in enumerate(item_ids)}
  for name in names:
    tables = _fit_variant(_read_json_lines(os.path.join(counts_path, name)), index, item_ids,
                          config)
    tables.save(tables_dir(model.uri, name))
    if name == FULL:
      export_item_to_item(ItemToItemModule(tables, config.top_k), serving_model_dir(model))
  tf.io.gfile.rmtree(counts_path)
