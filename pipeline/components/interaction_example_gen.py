"""An ExampleGen that joins interactions with the catalog and the user table in Beam.

TFX's built-in ExampleGens read one table and split by hash; retrieval needs a join, each
example's recent history, and a split by time (the last interactions of every user are the eval
split), so that no future leaks into training. This is a `FileBasedExampleGen` with a custom
executor: the stock driver still fingerprints every file under the data root, so an unchanged
data root is a cache hit and a changed one is a new span of examples.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Tuple

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
from pipeline.data.examples import EVAL, SPLITS, TRAIN, encode_example
from transform import features as F
from transform.features import HISTORY_EARLIER, HISTORY_SCOPES


def _eval_count(n_positive: int, eval_fraction: float) -> int:
  """How many of a user's latest interactions go to eval; users with one interaction train only."""
  if n_positive < 2:
    return 0
  return min(n_positive - 1, max(1, int(math.floor(n_positive * eval_fraction + 0.5))))


def _duplicate_error(table: str, key: str, rows: List[Mapping[str, Any]]) -> contract.ContractError:
  sources = ", ".join(row[contract.SOURCE_FIELD] for row in rows)
  return contract.ContractError(
      f"{table}: duplicate {table[:-1]} id {key!r} in rows {sources}; ids must be unique")


def _earlier_items(events: List[Dict[str, Any]]) -> Iterator[Tuple[List[str], int]]:
  """Per event: (the items of strictly earlier timestamps, most recent HISTORY_LENGTH first;
  how many there are).

  Events in the same second are simultaneous (bulk ratings are), so none is another's history.
  """
  earlier: List[str] = []
  same_second: List[str] = []
  for position, row in enumerate(events):
    if same_second and row["timestamp"] != events[position - 1]["timestamp"]:
      earlier.extend(same_second)
      same_second = []
    same_second.append(row["item_id"])
    yield earlier[-F.HISTORY_LENGTH:][::-1], len(earlier)


def _other_training_items(events: List[Dict[str, Any]], first_eval: int
                          ) -> Iterator[Tuple[List[str], int]]:
  """Per event: (the user's training-split items other than its own, most recent
  HISTORY_LENGTH first; how many there are)."""
  training = [row["item_id"] for row in events[:first_eval]]
  latest = training[-F.HISTORY_LENGTH:][::-1]
  # Only an example among the latest HISTORY_LENGTH + 1 has its own item to leave out.
  start = max(0, first_eval - F.HISTORY_LENGTH - 1)
  for position in range(len(events)):
    if position < start or position >= first_eval:
      yield latest, len(training) - (position < first_eval)
      continue
    others = [item for i, item in enumerate(training[start:], start) if i != position]
    yield others[-F.HISTORY_LENGTH:][::-1], len(training) - 1


def user_timeline(user_id: str, grouped: Mapping[str, Iterable[Dict[str, Any]]], eval_fraction: float,
                  history_scope: str = HISTORY_EARLIER) -> Iterator[Tuple[str, Dict[str, Any]]]:
  """Orders one user's positive interactions by time and emits (item_id, example fields).

  Each example carries the user's history (see HISTORY_SCOPES; the most recent
  HISTORY_LENGTH items, most recent first) and the split: the latest `eval_fraction` of the
  user's interactions are eval.
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
  first_eval = len(events) - _eval_count(len(events), eval_fraction)
  histories = (_earlier_items(events) if history_scope == HISTORY_EARLIER
               else _other_training_items(events, first_eval))
  for position, (row, (history, history_length)) in enumerate(zip(events, histories)):
    fields = {
        F.USER_ID: user_id,
        F.ITEM_ID: row["item_id"],
        F.EVENT: row["event"],
        F.RATING: row["rating"],
        F.TIMESTAMP: row["timestamp"],
        F.QUERY: row["query"],
        F.SESSION_ID: row["session_id"],
        F.HISTORY: history,
        F.USER_HISTORY_LENGTH: history_length,
        F.ACTIVITY_SEGMENT: F.activity_segment(history_length),
        F.AGE: user.get("age"),
        F.GENDER: user.get("gender"),
        F.OCCUPATION: user.get("occupation"),
        "split": EVAL if position >= first_eval else TRAIN,
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
      for name, value in fields.items() if name not in ("split", contract.SOURCE_FIELD)})


class JoinInteractions(beam.PTransform):
  """Raw tables under a data root -> {split name: serialized tf.Examples}."""

  def __init__(self, data_root: str, eval_fraction: float, history_scope: str = HISTORY_EARLIER):
    super().__init__()
    if history_scope not in HISTORY_SCOPES:
      raise ValueError(f"history_scope must be one of {HISTORY_SCOPES}, got {history_scope!r}")
    self._data_root = data_root
    self._eval_fraction = eval_fraction
    self._history_scope = history_scope

  def expand(self, pbegin: beam.pvalue.PBegin) -> Dict[str, beam.PCollection]:
    tables = {table: (pbegin | f"Read[{table}]" >> ReadTable(self._data_root, table))
              for table in contract.TABLES}
    by_user = ({
        contract.INTERACTIONS: tables[contract.INTERACTIONS] | "KeyByUser" >> beam.Map(
            lambda row: (row["user_id"], row)),
        contract.USERS: tables[contract.USERS] | "KeyUsers" >> beam.Map(
            lambda row: (row["user_id"], row)),
    } | "GroupByUser" >> beam.CoGroupByKey())
    eval_fraction, history_scope = self._eval_fraction, self._history_scope
    rows = by_user | "Timeline" >> beam.FlatMap(
        lambda keyed: user_timeline(keyed[0], keyed[1], eval_fraction, history_scope))
    joined = ({
        "interactions": rows,
        contract.ITEMS: tables[contract.ITEMS] | "KeyItems" >> beam.Map(
            lambda row: (row["item_id"], row)),
    } | "GroupByItem" >> beam.CoGroupByKey()
              | "AttachItem" >> beam.FlatMapTuple(attach_item))
    parts = joined | "SplitByTime" >> beam.Partition(
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
  """Overrides the split step itself: the split is by time per user, not by hash."""

  def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
    raise NotImplementedError("InteractionExampleGen builds all splits in GenerateExamplesByBeam")

  def GenerateExamplesByBeam(self, pipeline: beam.Pipeline, exec_properties: Dict[str, Any]
                             ) -> Dict[str, beam.PCollection]:
    settings = _custom_settings(exec_properties)
    data_root = exec_properties[standard_component_specs.INPUT_BASE_KEY]
    return pipeline | "JoinInteractions" >> JoinInteractions(
        data_root, float(settings.get("eval_fraction", 0.1)),
        settings.get("history_scope", HISTORY_EARLIER))


def interaction_example_gen(data_root: str, eval_fraction: float = 0.1,
                            history_scope: str = HISTORY_EARLIER) -> FileBasedExampleGen:
  """The component: every file under the data root's table folders is one input span."""
  if history_scope not in HISTORY_SCOPES:
    raise ValueError(f"history_scope must be one of {HISTORY_SCOPES}, got {history_scope!r}")
  settings = struct_pb2.Struct()
  settings.update({"eval_fraction": eval_fraction, "history_scope": history_scope})
  packed = any_pb2.Any()
  packed.Pack(settings)
  return FileBasedExampleGen(
      input_base=data_root,
      input_config=example_gen_pb2.Input(splits=[
          example_gen_pb2.Input.Split(name="tables", pattern="*/*")]),
      # Names only: the executor assigns splits by time, not by these hash buckets.
      output_config=example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(splits=[
          example_gen_pb2.SplitConfig.Split(name=split, hash_buckets=1) for split in SPLITS])),
      custom_config=example_gen_pb2.CustomConfig(custom_config=packed),
      custom_executor_spec=executor_spec.BeamExecutorSpec(Executor),
  ).with_id("InteractionExampleGen")
