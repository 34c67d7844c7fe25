"""Beam source for one contract table: its files under `<data_root>/<table>/` (flat, or the
span window's folders), parsed."""
from __future__ import annotations

from typing import Any, Dict, Iterator, Optional

import apache_beam as beam

from pipeline.data import parsing
from pipeline.data.contract import ContractError
from pipeline.data.spans import SpanWindow

# The tag of ReadTable's second output (with `invalid_rows=True`): one record per bad row.
INVALID = "invalid"


def invalid_record(error: parsing.RowError) -> Dict[str, Any]:
  """A bad row as plain data (for Beam): what is wrong, where, and whether skipping may drop it."""
  path, _, line = error.source.rpartition(":")
  return {"kind": error.kind, "path": path or error.source,
          "line": int(line) if line.isdigit() else 0, "message": str(error),
          "skippable": error.skippable}


def _parse_file(path: str, table: str, max_timestamp: Optional[float]) -> Iterator[Any]:
  """Rows to the main output; each bad row, and a file that cannot be read at all, to INVALID."""
  try:
    for row in parsing.iter_file_rows(path, table, max_timestamp):
      if isinstance(row, parsing.RowError):
        yield beam.pvalue.TaggedOutput(INVALID, invalid_record(row))
      else:
        yield row
  except ContractError as e:
    yield beam.pvalue.TaggedOutput(INVALID, invalid_record(parsing.RowError(
        str(e), table, path, f"{table}: file not readable", skippable=False)))


class ReadTable(beam.PTransform):
  """Reads a table's files in parallel, one file per element, rows streamed (never whole files).

  Files are listed at construction so a missing required table fails while the pipeline is
  being built, not minutes later on a worker. By default the first bad row fails the pipeline
  (its ContractError names file, line and column); with `invalid_rows=True` the transform
  returns {"rows": ..., INVALID: ...} and every bad row becomes a record (`invalid_record`), so a
  caller can report them all. `max_timestamp`: later timestamps are bad rows (see parse_row).
  `window`: which span folders of a partitioned table are read (pipeline/data/spans.py).
  """

  def __init__(self, data_root: str, table: str, max_timestamp: Optional[float] = None,
               invalid_rows: bool = False, window: SpanWindow = SpanWindow()):
    super().__init__()
    self._table = table
    self._files = parsing.list_table_files(data_root, table, window)
    self._max_timestamp = max_timestamp
    self._invalid_rows = invalid_rows

  def default_label(self) -> str:
    # Distinct per table, so several ReadTable in one pipeline don't need explicit labels.
    return f"ReadTable[{self._table}]"

  def expand(self, pbegin: beam.pvalue.PBegin) -> Any:
    table = self._table
    if not self._files:  # Only an optional table gets here; list_table_files rejects the rest.
      rows = pbegin | f"NoFiles[{table}]" >> beam.Create([])
      if self._invalid_rows:
        return {"rows": rows, INVALID: pbegin | f"NoInvalid[{table}]" >> beam.Create([])}
      return rows
    files = (
        pbegin
        | f"ListFiles[{table}]" >> beam.Create(self._files)
        # Spreads files over workers; without it a runner may fuse all reads onto one.
        | f"SpreadFiles[{table}]" >> beam.Reshuffle())
    if not self._invalid_rows:
      return files | f"ParseRows[{table}]" >> beam.FlatMap(
          parsing.read_file_rows, table, self._max_timestamp)
    parsed = files | f"ParseRows[{table}]" >> beam.FlatMap(
        _parse_file, table, self._max_timestamp).with_outputs(INVALID, main="rows")
    return {"rows": parsed.rows, INVALID: parsed[INVALID]}
