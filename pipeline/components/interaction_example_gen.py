"""An ExampleGen that joins interactions with the catalog and the user table in Beam.

TFX's built-in ExampleGens read one table and split by hash; retrieval needs a join, each
example's history, and a split per user that matches how the history is read (`SplitSettings`):
for sequences the last interactions of every user are the eval split, so no future leaks into
training; for logs whose order means nothing a random share of each user's interactions, as the
public protocols split. Training interactions also get a fold, which the ranker's training
lists hold out in turn. This is a `FileBasedExampleGen` with a custom executor and driver: the
driver fingerprints exactly the files read (the span window's, pipeline/data/spans.py), so the
same files are a cache hit and a new or late span, or a closed feedback file, is new examples.
"""
from __future__ import annotations

import dataclasses
import heapq
import json
import math
import os
import time
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Set, Tuple, Union

import apache_beam as beam
import tensorflow as tf
from absl import logging
from google.protobuf import any_pb2, json_format, struct_pb2
from tfx.components import FileBasedExampleGen
from tfx.components.example_gen import base_example_gen_executor, driver
from tfx.components.example_gen import utils as example_gen_utils
from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.orchestration import data_types
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ExecutionParameter
from tfx.utils import proto_utils

from pipeline.data import contract, spans
from pipeline.data.beam_io import INVALID, ReadTable
from pipeline.data.examples import EVAL, SPLITS, TRAIN, encode_example, stable_hash
from pipeline.data.spans import SpanWindow
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


def _duplicate_record(table: str, key: str, rows: List[Mapping[str, Any]]) -> Dict[str, Any]:
  """A bad-row record (see beam_io.invalid_record) for an id that several rows have; never
  skipped: which row is the right one is for a person to say."""
  def where(source: str) -> Tuple[str, int]:
    path, _, line = source.rpartition(":")
    return path, int(line) if line.isdigit() else 0
  sources = sorted((row[contract.SOURCE_FIELD] for row in rows), key=where)
  shown = ", ".join(sources[:MAX_EXAMPLES_PER_KIND]) + (
      f" and {len(sources) - MAX_EXAMPLES_PER_KIND} more" if len(sources) > MAX_EXAMPLES_PER_KIND
      else "")
  path, line = where(sources[0])
  return {"kind": f"{table}: duplicate {table[:-1]} id", "path": path, "line": line,
          "skippable": False,
          "message": f"{table}: duplicate {table[:-1]} id {key!r} in rows {shown}; ids must be "
                     "unique"}


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


def _compared_span(source: str, compared_spans: Set[str]) -> Optional[str]:
  span = spans.span_of(source)
  return span if span in compared_spans else None


def user_timeline(user_id: str, grouped: Mapping[str, Iterable[Dict[str, Any]]],
                  settings: "SplitSettings", compared_spans: Set[str] = frozenset()
                  ) -> Iterator[Any]:
  """Orders one user's positive interactions by time and emits (item_id, example fields).
  `compared_spans`: the spans whose rows carry their span (the drift check's).

  Each example carries the user's history (see HISTORY_SCOPES; the most recent
  HISTORY_LENGTH items, most recent first), the folds of those history items, its own fold
  (training events) and its split (`eval_fraction` of the user's interactions are eval: the
  latest, or a random subset, see EVAL_SPLITS). A duplicate user id goes to the INVALID
  output.
  """
  user_rows = list(grouped[contract.USERS])
  if len(user_rows) > 1:  # Reported; the first row stands in so that the pass goes on.
    yield beam.pvalue.TaggedOutput(INVALID, _duplicate_record(contract.USERS, user_id, user_rows))
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
        F.SPAN: _compared_span(row[contract.SOURCE_FIELD], compared_spans),
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
                ) -> Iterator[Any]:
  """Adds the catalog's item features to every interaction with that item.

  The interactions are streamed, never listed: a popular item's group can be large. A duplicate
  catalog id and an interaction whose item is not in the catalog go to the INVALID output.
  """
  item_rows = list(grouped[contract.ITEMS])
  if len(item_rows) > 1:  # Reported; the first row stands in so that the pass goes on.
    yield beam.pvalue.TaggedOutput(INVALID, _duplicate_record(contract.ITEMS, item_id, item_rows))
  for fields in grouped["interactions"]:
    if not item_rows:
      source = fields[contract.SOURCE_FIELD]
      path, _, line = source.rpartition(":")
      yield beam.pvalue.TaggedOutput(INVALID, {
          "kind": "interactions: item_id not in the item catalog", "path": path,
          "line": int(line) if line.isdigit() else 0, "skippable": True,
          "message": f"interactions row {source}: item_id {item_id!r} is not in the item "
                     "catalog (items/)"})
      continue
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


HALT, SKIP = "halt", "skip"
INVALID_ROW_POLICIES = (HALT, SKIP)
# Bad rows quoted per kind in the report (all are counted).
MAX_EXAMPLES_PER_KIND = 20


@dataclasses.dataclass(frozen=True)
class RowPolicy:
  """What the ExampleGen does with bad rows. Every bad row of every kind is found in one pass
  and reported (counts per kind, the first MAX_EXAMPLES_PER_KIND of each by file and line);
  then `halt` stops the run, `skip` drops them, unless they are more than `max_invalid_share`
  of the rows read or of a kind never skipped (an unreadable file, a duplicate id).
  A timestamp more than `max_clock_skew_s` past the clock of the run is a bad row (None: no
  check)."""
  invalid_rows: str = HALT
  max_invalid_share: float = 0.01
  max_clock_skew_s: Optional[float] = 86400.0

  def __post_init__(self):
    if self.invalid_rows not in INVALID_ROW_POLICIES:
      raise ValueError(f"invalid_rows must be one of {INVALID_ROW_POLICIES}, "
                       f"got {self.invalid_rows!r}")
    if not 0.0 <= self.max_invalid_share <= 1.0:
      raise ValueError(f"max_invalid_share must be within [0, 1], got {self.max_invalid_share}")
    if self.max_clock_skew_s is not None and self.max_clock_skew_s < 0:
      raise ValueError(f"max_clock_skew_s must be >= 0, got {self.max_clock_skew_s}")


class SummarizeInvalid(beam.CombineFn):
  """Bad-row records -> {kind: {"count", "skippable", "examples": [(path, line, message)]}},
  the examples bounded to the first MAX_EXAMPLES_PER_KIND by file and line."""

  def create_accumulator(self) -> Dict[str, Dict[str, Any]]:
    return {}

  def add_input(self, summary, record):
    entry = summary.setdefault(record["kind"], {"count": 0, "skippable": True, "examples": []})
    entry["count"] += 1
    entry["skippable"] = entry["skippable"] and record["skippable"]
    entry["examples"].append((record["path"], record["line"], record["message"]))
    if len(entry["examples"]) > 2 * MAX_EXAMPLES_PER_KIND:
      entry["examples"] = heapq.nsmallest(MAX_EXAMPLES_PER_KIND, entry["examples"])
    return summary

  def merge_accumulators(self, summaries):
    merged: Dict[str, Dict[str, Any]] = {}
    for summary in summaries:
      for kind, entry in summary.items():
        into = merged.setdefault(kind, {"count": 0, "skippable": True, "examples": []})
        into["count"] += entry["count"]
        into["skippable"] = into["skippable"] and entry["skippable"]
        into["examples"] = heapq.nsmallest(MAX_EXAMPLES_PER_KIND,
                                           into["examples"] + entry["examples"])
    return merged

  def extract_output(self, summary):
    return {kind: dict(entry, examples=[list(e) for e in heapq.nsmallest(
        MAX_EXAMPLES_PER_KIND, entry["examples"])]) for kind, entry in sorted(summary.items())}


def describe_invalid(summary: Mapping[str, Mapping[str, Any]]) -> str:
  lines = []
  for kind, entry in summary.items():
    lines.append(f"  {kind}: {entry['count']} row(s)"
                 + ("" if entry["skippable"] else " (never skipped)"))
    lines.extend(f"    {message}" for _, _, message in entry["examples"])
    if entry["count"] > len(entry["examples"]):
      lines.append(f"    ... and {entry['count'] - len(entry['examples'])} more")
  return "\n".join(lines)


def check_invalid(summary: Mapping[str, Mapping[str, Any]], rows_read: int, policy: RowPolicy,
                  data_root: str, report_path: Optional[str] = None) -> Dict[str, Any]:
  """After the pass: writes the report, then raises one ContractError naming every kind of bad
  row (halt; skip with too many or unskippable ones), or logs what `skip` dropped."""
  invalid = sum(entry["count"] for entry in summary.values())
  share = invalid / max(rows_read, 1)
  report = {"policy": policy.invalid_rows, "rows_read": rows_read, "invalid_rows": invalid,
            "invalid_share": share, "max_invalid_share": policy.max_invalid_share,
            "kinds": summary}
  if report_path:
    tf.io.gfile.makedirs(os.path.dirname(report_path))
    with tf.io.gfile.GFile(report_path, "w") as f:
      json.dump(report, f, indent=2)
  if not invalid:
    return report
  unskippable = [kind for kind, entry in summary.items() if not entry["skippable"]]
  counted = f"{invalid} invalid row(s) of {rows_read} read ({share:.2%})"
  if policy.invalid_rows == SKIP and not unskippable and share <= policy.max_invalid_share:
    logging.warning("InteractionExampleGen: skipped %s under --invalid_rows skip:\n%s",
                    counted, describe_invalid(summary))
    return report
  if policy.invalid_rows == HALT:
    why = ("Fix them, or run with --invalid_rows skip to drop them (at most "
           f"--max_invalid_share {policy.max_invalid_share:g} of the rows).")
  elif unskippable:
    why = f"--invalid_rows skip never drops these: {', '.join(unskippable)}."
  else:
    why = (f"That is more than --max_invalid_share {policy.max_invalid_share:g} of the rows, so "
           "--invalid_rows skip does not drop them.")
  raise contract.ContractError(
      f"input data under {data_root} has {counted}; the run stops before validation and "
      f"training, and nothing is trained or pushed. {why}"
      + (f" Report: {report_path}." if report_path else "") + "\n" + describe_invalid(summary))


class JoinInteractions(beam.PTransform):
  """Raw tables under a data root -> {split name: serialized tf.Examples}.

  Bad rows of every kind (unparseable, a timestamp in the future, an unknown item, a duplicate
  id) are collected in the same pass; at the end `check_invalid` halts or, under `skip`, lets the
  examples without them through (see RowPolicy). `now`: the clock timestamps are checked
  against (default: the time the pipeline is built). `window`: the span folders read."""

  def __init__(self, data_root: str, settings: SplitSettings = SplitSettings(),
               policy: RowPolicy = RowPolicy(), report_path: Optional[str] = None,
               now: Optional[float] = None, window: SpanWindow = SpanWindow()):
    super().__init__()
    self._data_root = data_root
    self._window = window
    self._settings = settings
    self._policy = policy
    self._report_path = report_path
    self._max_timestamp = (None if policy.max_clock_skew_s is None
                           else (time.time() if now is None else now) + policy.max_clock_skew_s)

  def expand(self, pbegin: beam.pvalue.PBegin) -> Dict[str, beam.PCollection]:
    read = {table: (pbegin | f"Read[{table}]" >> ReadTable(
        self._data_root, table, self._max_timestamp, invalid_rows=True, window=self._window))
            for table in contract.TABLES}
    tables = {table: outputs["rows"] for table, outputs in read.items()}
    by_user = ({
        contract.INTERACTIONS: tables[contract.INTERACTIONS] | "KeyByUser" >> beam.Map(
            lambda row: (row["user_id"], row)),
        contract.USERS: tables[contract.USERS] | "KeyUsers" >> beam.Map(
            lambda row: (row["user_id"], row)),
    } | "GroupByUser" >> beam.CoGroupByKey())
    settings = self._settings
    # Only the two newest spans carry their span: statistics are sliced by it (drift.py), and
    # a slice per span of a long window would multiply their cost.
    compared = {name[len(spans.SPAN_PREFIX):] for name in spans.window_spans(
        self._data_root, contract.INTERACTIONS, self._window)[-2:]}
    timeline = by_user | "Timeline" >> beam.FlatMap(
        lambda keyed: user_timeline(keyed[0], keyed[1], settings, compared)).with_outputs(
            INVALID, main="rows")
    attached = ({
        "interactions": timeline.rows,
        contract.ITEMS: tables[contract.ITEMS] | "KeyItems" >> beam.Map(
            lambda row: (row["item_id"], row)),
    } | "GroupByItem" >> beam.CoGroupByKey()
                | "AttachItem" >> beam.FlatMapTuple(attach_item).with_outputs(
                    INVALID, main="rows"))
    invalid = ([outputs[INVALID] for outputs in read.values()]
               + [timeline[INVALID], attached[INVALID]]) | "AllInvalid" >> beam.Flatten()
    parse_invalid = [outputs[INVALID] for outputs in read.values()]
    rows_read = ((list(tables.values()) + parse_invalid) | "AllRead" >> beam.Flatten()
                 | "One" >> beam.Map(lambda _: 1)
                 | "CountRead" >> beam.CombineGlobally(sum))
    policy, data_root, report_path = self._policy, self._data_root, self._report_path
    _ = (invalid | "SummarizeInvalid" >> beam.CombineGlobally(SummarizeInvalid())
         | "CheckInvalid" >> beam.Map(
             lambda summary, read_count: check_invalid(summary, read_count, policy, data_root,
                                                       report_path),
             read_count=beam.pvalue.AsSingleton(rows_read)))
    # The item join leaves the examples grouped by item, and a trainer's bounded shuffle buffer
    # then sees a narrow band of the catalog per batch once the log outgrows the buffer
    # (measured: at 1M rows the two-tower model fell below popularity). Grouped back by user,
    # any window of the output spans the catalog, as a user's items do.
    parts = (attached.rows
             | "KeyExampleByUser" >> beam.Map(
                 lambda fields: (fields[F.USER_ID], (SPLITS.index(fields["split"]),
                                                     to_example(fields))))
             | "RegroupByUser" >> beam.GroupByKey()
             | "Ungroup" >> beam.FlatMap(lambda keyed: keyed[1])
             | "Split" >> beam.Partition(lambda pair, _: pair[0], len(SPLITS)))
    return {split: parts[i] | f"Serialized[{split}]" >> beam.Map(lambda pair: pair[1])
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


def invalid_rows_report_path(examples_uri: str) -> str:
  """Beside the Examples artifact, not inside it: TFX deletes a failed execution's outputs, and
  a halted run's report is the file its user opens next. `<node>/invalid_rows/<execution>.json`."""
  node_dir = os.path.dirname(os.path.dirname(examples_uri.rstrip("/")))
  return os.path.join(node_dir, "invalid_rows", os.path.basename(examples_uri.rstrip("/"))
                      + ".json")


# The files the run read, per table, and the spans of the window (in the Examples artifact).
INPUT_FILES = "input_files.json"
_POLICY_FIELDS = tuple(field.name for field in dataclasses.fields(RowPolicy))
# The window's exec properties: plain values here, pipeline parameters on Kubeflow (set per
# run or per recurring run); an age below 0 is no limit (a parameter cannot be None).
SPAN_WINDOW, MAX_SPAN_AGE_DAYS = "span_window", "max_span_age_days"
NO_AGE_LIMIT = -1.0


def _window(exec_properties: Mapping[str, Any]) -> SpanWindow:
  age = exec_properties.get(MAX_SPAN_AGE_DAYS)
  return SpanWindow(spans=int(exec_properties.get(SPAN_WINDOW) or 0),
                    max_age_days=None if age is None or float(age) < 0 else float(age))


class WindowDriver(driver.FileBasedDriver):
  """Fingerprints exactly the files the executor will read (the span window's, data files
  only), so a file the readers skip (an open feedback log) or a span outside the window never
  makes a new run, and a late span inside it does; the Examples' `span` is the newest
  interaction span (YYYYMMDD; 0 for flat tables)."""

  def resolve_exec_properties(self, exec_properties, pipeline_info, component_info):
    del pipeline_info, component_info
    window = _window(exec_properties)
    read = spans.snapshot(exec_properties[standard_component_specs.INPUT_BASE_KEY], window)
    logging.info("InteractionExampleGen: %s", read.describe())
    exec_properties[example_gen_utils.SPAN_PROPERTY_NAME] = read.latest_span
    exec_properties[example_gen_utils.VERSION_PROPERTY_NAME] = None
    exec_properties[example_gen_utils.FINGERPRINT_PROPERTY_NAME] = read.fingerprint
    return exec_properties


class Executor(base_example_gen_executor.BaseExampleGenExecutor):
  """Overrides the split step itself: the split is per user (SplitSettings), not by hash."""

  def Do(self, input_dict, output_dict, exec_properties) -> None:
    examples = output_dict[standard_component_specs.EXAMPLES_KEY][0]
    self._report_path = invalid_rows_report_path(examples.uri)
    read = spans.snapshot(exec_properties[standard_component_specs.INPUT_BASE_KEY],
                          _window(exec_properties))
    super().Do(input_dict, output_dict, exec_properties)
    with tf.io.gfile.GFile(os.path.join(examples.uri, INPUT_FILES), "w") as f:
      json.dump({"spans": read.spans, "files": read.files, "fingerprint": read.fingerprint},
                f, indent=2)
    examples.set_int_custom_property("files_read",
                                     sum(len(paths) for paths in read.files.values()))
    examples.set_string_custom_property("spans_read", read.describe())
    if tf.io.gfile.exists(self._report_path):  # The bad rows skipped, on the artifact.
      with tf.io.gfile.GFile(self._report_path) as f:
        examples.set_int_custom_property("invalid_rows_skipped", json.load(f)["invalid_rows"])

  def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
    raise NotImplementedError("InteractionExampleGen builds all splits in GenerateExamplesByBeam")

  def GenerateExamplesByBeam(self, pipeline: beam.Pipeline, exec_properties: Dict[str, Any]
                             ) -> Dict[str, beam.PCollection]:
    settings = _custom_settings(exec_properties)
    data_root = exec_properties[standard_component_specs.INPUT_BASE_KEY]
    policy = RowPolicy(**{k: settings[k] for k in _POLICY_FIELDS if k in settings})
    return pipeline | "JoinInteractions" >> JoinInteractions(data_root, SplitSettings(
        eval_fraction=float(settings["eval_fraction"]), history_scope=settings["history_scope"],
        eval_split=settings["eval_split"], folds=int(settings["folds"])), policy,
        report_path=getattr(self, "_report_path", None), window=_window(exec_properties))


class InteractionExampleGenSpec(standard_component_specs.FileBasedExampleGenSpec):
  """TFX's ExampleGen spec and the span window."""
  PARAMETERS = {**standard_component_specs.FileBasedExampleGenSpec.PARAMETERS,
                SPAN_WINDOW: ExecutionParameter(type=int, optional=True),
                MAX_SPAN_AGE_DAYS: ExecutionParameter(type=float, optional=True)}


class InteractionExampleGen(FileBasedExampleGen):
  """TFX's file-based ExampleGen, with the span window's driver and the window as two exec
  properties more. It stays a FileBasedExampleGen, so that Kubeflow V2 gives it TFX's own
  file-based driver (the fingerprint before the cache check); its spec is built here, since
  FileBasedExampleGen's constructor builds TFX's spec, which has no window."""
  SPEC_CLASS = InteractionExampleGenSpec
  DRIVER_CLASS = WindowDriver

  def __init__(self, input_base: str, input_config: example_gen_pb2.Input,
               output_config: example_gen_pb2.Output,
               custom_config: example_gen_pb2.CustomConfig,
               span_window: Union[int, data_types.RuntimeParameter],
               max_span_age_days: Union[float, data_types.RuntimeParameter],
               custom_executor_spec: executor_spec.ExecutorSpec):
    base_beam_component.BaseBeamComponent.__init__(self, spec=InteractionExampleGenSpec(
        input_base=input_base, input_config=input_config, output_config=output_config,
        custom_config=custom_config, output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
        output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP,
        span_window=span_window, max_span_age_days=max_span_age_days,
        examples=types.Channel(type=standard_artifacts.Examples)),
        custom_executor_spec=custom_executor_spec)


def window_parameters(window: SpanWindow, runtime: bool
                      ) -> Dict[str, Union[int, float, data_types.RuntimeParameter]]:
  """The window's exec properties; `runtime`: as pipeline parameters (Kubeflow) whose
  defaults are the window's."""
  values = {SPAN_WINDOW: int(window.spans),
            MAX_SPAN_AGE_DAYS: NO_AGE_LIMIT if window.max_age_days is None
            else float(window.max_age_days)}
  if not runtime:
    return values
  return {name: data_types.RuntimeParameter(name=name, ptype=type(value), default=value)
          for name, value in values.items()}


def interaction_example_gen(data_root: str, settings: SplitSettings,
                            policy: RowPolicy = RowPolicy(),
                            window: SpanWindow = SpanWindow(),
                            runtime_window: bool = False) -> InteractionExampleGen:
  """The component: the data root's table files (flat, or the window's span folders) are one
  input; its fingerprint and span come from WindowDriver. `runtime_window`: the window's
  span count and age are pipeline parameters (Kubeflow), the given window their defaults."""
  packed_settings = struct_pb2.Struct()
  packed_settings.update(dict(dataclasses.asdict(settings), **dataclasses.asdict(policy)))
  packed = any_pb2.Any()
  packed.Pack(packed_settings)
  return InteractionExampleGen(
      input_base=data_root,
      input_config=example_gen_pb2.Input(splits=[
          example_gen_pb2.Input.Split(name="tables", pattern="*/*")]),
      # Names only: the executor assigns splits per user, not by these hash buckets.
      output_config=example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(splits=[
          example_gen_pb2.SplitConfig.Split(name=split, hash_buckets=1) for split in SPLITS])),
      custom_config=example_gen_pb2.CustomConfig(custom_config=packed),
      **window_parameters(window, runtime_window),
      custom_executor_spec=executor_spec.BeamExecutorSpec(Executor),
  ).with_id("InteractionExampleGen")
