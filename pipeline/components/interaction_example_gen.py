"""An ExampleGen that joins interactions with the catalog and the user table in Beam.

TFX's built-in ExampleGens read one table and split by hash; retrieval needs a join, each
example's history, and a split per user that matches how the history is read (`SplitSettings`):
for sequences the last interactions of every user are the eval split, so no future leaks into
training; for logs whose order means nothing a random share of each user's interactions, as the
public protocols split. Training interactions also get a fold, which the ranker's training
lists hold out in turn. This is a `FileBasedExampleGen` with a custom executor: the stock driver
still fingerprints every file under the data root, so an unchanged data root is a cache hit and
a changed one is a new span of examples.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Set, Tuple

import apache_beam as beam
from google.protobuf import any_pb2, json_format, struct_pb2
from tfx.components import FileBasedExampleGen
from tfx.components.example_gen import base_example_gen_executor
from tfx.dsl.components.base import executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import standard_component_specs
from tfx.utils import proto_utils

from pipeline.data import contract
from pipeline.data.beam_io import ReadTable
from pipeline.data.examples import EVAL, SPLITS, TRAIN, encode_example, stable_hash
from transform import features as F
from transform.features import HISTORY_ALL_TRAINING, HISTORY_EARLIER, HISTORY_SCOPES


def _eval_count(n_positive: int, eval_fraction: float) -> int:
  """How many of a user's interactions go to eval; users with one interaction train only."""
  if n_positive < 2:
    return 0
  return min(n_positive - 1, max(1, int(math.floor(n_positive * eval_fraction + 0.5))))


def _eval_positions(user_id: str, events: List[Dict[str, Any]], eval_fraction: float,
                    eval_split: str) -> Set[int]:
  """Which of a user's time-ordered events are eval: the latest ones, or (for logs whose order
  means nothing) a random subset chosen by a hash, the same on any runner."""
  count = _eval_count(len(events), eval_fraction)
  if eval_split == F.EVAL_LATEST:
    return set(range(len(events) - count, len(events)))
  ranked = sorted(range(len(events)), key=lambda i: stable_hash(
      "eval", user_id, events[i]["item_id"], events[i]["timestamp"]))
  return set(ranked[:count])


def _training_folds(user_id: str, events: List[Dict[str, Any]], training: List[int],
                    folds: int, history_scope: str) -> Dict[int, int]:
  """The fold of each training event (see transform/features.py FOLD): for logs whose order
  means nothing a hash spreads them over `folds` folds; for sequences only the latest
  1/`folds` of the training events are held out (fold 0), so a ranker learns to predict what
  comes next from what came before."""
  if not folds:
    return {}
  if history_scope == HISTORY_ALL_TRAINING:
    return {i: stable_hash("fold", user_id, events[i]["item_id"], events[i]["timestamp"]) % folds
            for i in training}
  latest = int(math.floor(len(training) / folds + 0.5)) if len(training) > 1 else 0
  return {i: 0 for i in training[len(training) - latest:]}


def _duplicate_error(table: str, key: str, rows: List[Mapping[str, Any]]) -> contract.ContractError:
  sources = ", ".join(row[contract.SOURCE_FIELD] for row in rows)
  return contract.ContractError(
      f"{table}: duplicate {table[:-1]} id {key!r} in rows {sources}; ids must be unique")


def _earlier_positions(events: List[Dict[str, Any]]) -> Iterator[Tuple[List[int], int]]:
  """Per event: (the positions of strictly earlier events, most recent HISTORY_LENGTH first;
  how many there are).

  Events in the same second are simultaneous (bulk ratings are), so none is another's history.
  """
  earlier: List[int] = []
  same_second: List[int] = []
  for position, row in enumerate(events):
    if same_second and row["timestamp"] != events[position - 1]["timestamp"]:
      earlier.extend(same_second)
      same_second = []
    same_second.append(position)
    yield earlier[-F.HISTORY_LENGTH:][::-1], len(earlier)


def _other_training_positions(n_events: int, training: List[int]
                              ) -> Iterator[Tuple[List[int], int]]:
  """Per event: (the positions of the user's training events other than its own, most recent
  HISTORY_LENGTH first; how many there are)."""
  latest = training[-F.HISTORY_LENGTH:][::-1]
  # Only an event among the latest HISTORY_LENGTH + 1 training ones has itself to leave out.
  recent = set(training[-F.HISTORY_LENGTH - 1:])
  is_training = set(training)
  for position in range(n_events):
    if position not in recent:
      yield latest, len(training) - (position in is_training)
      continue
    others = [i for i in training[-F.HISTORY_LENGTH - 1:] if i != position]
    yield others[-F.HISTORY_LENGTH:][::-1], len(training) - 1


def user_timeline(user_id: str, grouped: Mapping[str, Iterable[Dict[str, Any]]],
                  settings: "SplitSettings") -> Iterator[Tuple[str, Dict[str, Any]]]:
  """Orders one user's positive interactions by time and emits (item_id, example fields).

  Each example carries the user's history (see HISTORY_SCOPES; the most recent
  HISTORY_LENGTH items, most recent first), the folds of those history items, its own fold
  (training events) and its split (`eval_fraction` of the user's interactions are eval: the
  latest, or a random subset, see EVAL_SPLITS).
  """
  user_rows = list(grouped[contract.USERS])
  if len(user_rows) > 1:
    raise _duplicate_error(contract.USERS, user_id, user_rows)
  events = sorted((row for row in grouped[contract.INTERACTIONS]
                   if row["event"] not in contract.NEGATIVE_EVENT_TYPES),
                  key=lambda row: (row["timestamp"], row["item_id"], row[contract.SOURCE_FIELD]))
  if not events:
    return
  user = user_rows[0] if user_rows else {}
  eval_positions = _eval_positions(user_id, events, settings.eval_fraction, settings.eval_split)
  training = [i for i in range(len(events)) if i not in eval_positions]
  folds = _training_folds(user_id, events, training, settings.folds, settings.history_scope)
  histories = (_earlier_positions(events) if settings.history_scope == HISTORY_EARLIER
               else _other_training_positions(len(events), training))
  for position, (row, (history, history_length)) in enumerate(zip(events, histories)):
    fields = {
        F.USER_ID: user_id,
        F.ITEM_ID: row["item_id"],
        F.EVENT: row["event"],
        F.RATING: row["rating"],
        F.TIMESTAMP: row["timestamp"],
        F.QUERY: row["query"],
        F.SESSION_ID: row["session_id"],
        F.HISTORY: [events[i]["item_id"] for i in history],
        F.HISTORY_FOLDS: [folds.get(i, F.NO_FOLD) for i in history],
        F.FOLD: folds.get(position, F.NO_FOLD),
        F.USER_HISTORY_LENGTH: history_length,
        F.ACTIVITY_SEGMENT: F.activity_segment(history_length),
        F.AGE: user.get("age"),
        F.GENDER: user.get("gender"),
        F.OCCUPATION: user.get("occupation"),
        "split": EVAL if position in eval_positions else TRAIN,
        contract.SOURCE_FIELD: row[contract.SOURCE_FIELD],
    }
    yield row["item_id"], fields


def attach_item(item_id: str, grouped: Mapping[str, Iterable[Dict[str, Any]]]
                ) -> Iterator[Dict[str, Any]]:
  """Adds the catalog's item features to every interaction with that item.

  The interactions are streamed, never listed: a popular item's group can be large.
  """
  item_rows = list(grouped[contract.ITEMS])
  if len(item_rows) > 1:
    raise _duplicate_error(contract.ITEMS, item_id, item_rows)
  for fields in grouped["interactions"]:
    if not item_rows:
      raise contract.ContractError(
          f"interactions row {fields[contract.SOURCE_FIELD]}: item_id {item_id!r} is not in the "
          "item catalog (items/)")
    item = item_rows[0]
    yield dict(fields, **{F.TITLE: item["title"], F.DESCRIPTION: item["description"],
                          F.CATEGORIES: item["categories"], F.YEAR: item["year"],
                          F.IMAGE_URI: item["image_uri"]})


def to_example(fields: Mapping[str, Any]) -> bytes:
  """Serializes one joined row; bookkeeping fields (split, source) stay out of the example, and
  a rating is always a float feature (an integer rating would otherwise become an int64)."""
  return encode_example({
      name: float(value) if name == F.RATING and value is not None else value
      for name, value in fields.items() if name not in ("split", contract.SOURCE_FIELD)},
      int_lists=(F.HISTORY_FOLDS,))


@dataclasses.dataclass(frozen=True)
class SplitSettings:
  """How examples are split and what their histories hold. A history scope comes with its eval
  split: the user's earlier items with the latest interactions as eval (a sequence), the user's
  other training items with a random holdout (order means nothing); a mismatched pair would
  evaluate on what the model was never trained for, so it is refused."""
  eval_fraction: float = 0.1
  history_scope: str = F.HISTORY_ALL_TRAINING
  eval_split: str = ""  # "" = the one that pairs with history_scope
  folds: int = 0        # training folds held out in turn for the ranker's lists (0 = none)

  def __post_init__(self):
    if self.history_scope not in HISTORY_SCOPES:
      raise ValueError(f"history_scope must be one of {HISTORY_SCOPES}, "
                       f"got {self.history_scope!r}")
    paired = F.PAIRED_EVAL_SPLIT[self.history_scope]
    if not self.eval_split:
      object.__setattr__(self, "eval_split", paired)
    if self.eval_split != paired:
      raise ValueError(f"eval_split {self.eval_split!r} does not pair with history_scope "
                       f"{self.history_scope!r}: use {paired!r} (pairs: "
                       f"{F.PAIRED_EVAL_SPLIT})")
    if not 0.0 < self.eval_fraction < 1.0:
      raise ValueError(f"eval_fraction must be within (0, 1), got {self.eval_fraction}")
    if self.folds < 0:
      raise ValueError(f"folds must be >= 0, got {self.folds}")


class JoinInteractions(beam.PTransform):
  """Raw tables under a data root -> {split name: serialized tf.Examples}."""

  def __init__(self, data_root: str, settings: SplitSettings = SplitSettings()):
    super().__init__()
    self._data_root = data_root
    self._settings = settings

  def expand(self, pbegin: beam.pvalue.PBegin) -> Dict[str, beam.PCollection]:
    tables = {table: (pbegin | f"Read[{table}]" >> ReadTable(self._data_root, table))
              for table in contract.TABLES}
    by_user = ({
        contract.INTERACTIONS: tables[contract.INTERACTIONS] | "KeyByUser" >> beam.Map(
            lambda row: (row["user_id"], row)),
        contract.USERS: tables[contract.USERS] | "KeyUsers" >> beam.Map(
            lambda row: (row["user_id"], row)),
    } | "GroupByUser" >> beam.CoGroupByKey())
    settings = self._settings
    rows = by_user | "Timeline" >> beam.FlatMap(
        lambda keyed: user_timeline(keyed[0], keyed[1], settings))
    joined = ({
        "interactions": rows,
        contract.ITEMS: tables[contract.ITEMS] | "KeyItems" >> beam.Map(
            lambda row: (row["item_id"], row)),
    } | "GroupByItem" >> beam.CoGroupByKey()
              | "AttachItem" >> beam.FlatMapTuple(attach_item))
    parts = joined | "Split" >> beam.Partition(
        lambda fields, _: SPLITS.index(fields["split"]), len(SPLITS))
    return {split: parts[i] | f"ToExample[{split}]" >> beam.Map(to_example)
            for i, split in enumerate(SPLITS)}


def _custom_settings(exec_properties: Mapping[str, Any]) -> Dict[str, Any]:
  config = example_gen_pb2.CustomConfig()
  raw = exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY)
  if not raw:
    return {}
  proto_utils.json_to_proto(raw, config)
  settings = struct_pb2.Struct()
  config.custom_config.Unpack(settings)
  return json_format.MessageToDict(settings)


class Executor(base_example_gen_executor.BaseExampleGenExecutor):
  """Overrides the split step itself: the split is per user (SplitSettings), not by hash."""

  def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
    raise NotImplementedError("InteractionExampleGen builds all splits in GenerateExamplesByBeam")

  def GenerateExamplesByBeam(self, pipeline: beam.Pipeline, exec_properties: Dict[str, Any]
                             ) -> Dict[str, beam.PCollection]:
    settings = _custom_settings(exec_properties)
    data_root = exec_properties[standard_component_specs.INPUT_BASE_KEY]
    return pipeline | "JoinInteractions" >> JoinInteractions(data_root, SplitSettings(
        eval_fraction=float(settings["eval_fraction"]), history_scope=settings["history_scope"],
        eval_split=settings["eval_split"], folds=int(settings["folds"])))


def interaction_example_gen(data_root: str, settings: SplitSettings) -> FileBasedExampleGen:
  """The component: every file under the data root's table folders is one input span."""
  packed_settings = struct_pb2.Struct()
  packed_settings.update(dataclasses.asdict(settings))
  packed = any_pb2.Any()
  packed.Pack(packed_settings)
  return FileBasedExampleGen(
      input_base=data_root,
      input_config=example_gen_pb2.Input(splits=[
          example_gen_pb2.Input.Split(name="tables", pattern="*/*")]),
      # Names only: the executor assigns splits per user, not by these hash buckets.
      output_config=example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(splits=[
          example_gen_pb2.SplitConfig.Split(name=split, hash_buckets=1) for split in SPLITS])),
      custom_config=example_gen_pb2.CustomConfig(custom_config=packed),
      custom_executor_spec=executor_spec.BeamExecutorSpec(Executor),
  ).with_id("InteractionExampleGen")
