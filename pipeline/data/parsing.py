"""Reads and coerces raw contract files (CSV, JSONL, Parquet) into typed row dicts.

Pure Python so the same code serves Beam readers, converters, tests and the serving feedback
log. Every error names the file and line, the column and the bad value, because the person
fixing it is looking at their own export, not at this code.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from datetime import datetime, timezone
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import pyarrow.parquet as pq
import tensorflow as tf

from pipeline.data import contract
from pipeline.data.contract import ContractError
from pipeline.data.spans import SpanWindow, table_files, table_spans

_KIND_DESCRIPTIONS = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "timestamp": "unix seconds or ISO-8601",
    "str_list": f"a list or a '{contract.LIST_SEPARATOR}'-joined string",
}


def _columns(table: str) -> Sequence[contract.Column]:
  try:
    return contract.COLUMNS_BY_TABLE[table]
  except KeyError:
    raise ContractError(
        f"unknown table {table!r}; the contract has {list(contract.TABLES)}") from None


def _is_empty(value: Any) -> bool:
  """None, blank strings and NaN (how Parquet/pandas exports spell null) all mean 'absent'."""
  if value is None:
    return True
  if isinstance(value, str):
    return not value.strip()
  if isinstance(value, float):
    return math.isnan(value)
  if isinstance(value, (list, tuple)):
    return not value
  return False


def _to_str(value: Any) -> str:
  # Ids exported from Parquet/JSON often arrive as 196 or 196.0; they must join with "196".
  if isinstance(value, str):
    return value.strip()
  if isinstance(value, bool):
    raise ValueError(value)
  if isinstance(value, int):
    return str(value)
  if isinstance(value, float):
    return str(int(value)) if value.is_integer() else repr(value)
  raise ValueError(value)


def _to_int(value: Any) -> int:
  if isinstance(value, bool):
    raise ValueError(value)
  if isinstance(value, int):
    return value
  if isinstance(value, str):
    text = value.strip()
    try:
      return int(text)
    except ValueError:
      value = float(text)
  if isinstance(value, float) and value.is_integer():
    return int(value)
  raise ValueError(value)


def _to_float(value: Any) -> float:
  if isinstance(value, bool):
    raise ValueError(value)
  result = float(value.strip() if isinstance(value, str) else value)
  if not math.isfinite(result):
    raise ValueError(value)
  return result


def _to_timestamp(value: Any) -> int:
  if isinstance(value, datetime):  # Parquet timestamp columns come back as datetimes.
    moment = value
  elif isinstance(value, str):
    text = value.strip()
    try:
      return int(_to_float(text))
    except ValueError:
      moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
  else:
    return int(_to_float(value))
  if moment.tzinfo is None:
    moment = moment.replace(tzinfo=timezone.utc)
  return int(moment.timestamp())


def _to_str_list(value: Any) -> List[str]:
  parts = value.split(contract.LIST_SEPARATOR) if isinstance(value, str) else list(value)
  return [text for text in (_to_str(part) for part in parts if not _is_empty(part)) if text]


_CONVERTERS = {
    "str": _to_str,
    "int": _to_int,
    "float": _to_float,
    "timestamp": _to_timestamp,
    "str_list": _to_str_list,
}


# A CSV field may be this long (characters); Python's csv module stops at 128 KiB by default.
MAX_FIELD_CHARS = 16 * 1024 * 1024
# A quoted CSV field may span this many physical lines; more means a closing quote is missing.
MAX_QUOTED_LINES = 1000
# Bad values are quoted in messages up to this many characters.
_SNIPPET = 80


class RowError(ContractError):
  """One bad row: the message names the file, line (Parquet: row), column and value.

  `kind` groups rows with the same problem (the ExampleGen counts and reports them per kind);
  `skippable` is False for problems that `--invalid_rows skip` must not drop silently (an
  unreadable file, a duplicate id).
  """

  def __init__(self, message: str, table: str, source: str, kind: str, skippable: bool = True):
    super().__init__(message)
    self.table, self.source, self.kind, self.skippable = table, source, kind, skippable

  def __reduce__(self):
    return (RowError, (str(self), self.table, self.source, self.kind, self.skippable))


def snippet(value: Any) -> str:
  """repr(value), cut to a readable length (a 1 MB field must not flood the message)."""
  text = repr(value)
  if len(text) <= _SNIPPET:
    return text
  length = f"{len(value)} characters" if isinstance(value, (str, bytes)) else "long"
  return f"{text[:_SNIPPET]}... ({length})"


def _iso(timestamp: float) -> str:
  return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_row(table: str, raw: Mapping[str, Any], source: str,
              max_timestamp: Optional[float] = None) -> Dict[str, Any]:
  """Coerces one raw row to the contract's types; `source` ("file:line") goes into errors.

  Raises RowError. A timestamp later than `max_timestamp` (the run's clock plus the allowed
  clock skew) is invalid: it would silently become the newest, so eval, data.
  """
  row: Dict[str, Any] = {}
  for column in _columns(table):
    value = raw.get(column.name)
    if _is_empty(value):
      if column.required:
        raise RowError(
            f"{table} file {source}: required column '{column.name}' is missing or empty",
            table, source, f"{table}: required column '{column.name}' missing or empty")
      row[column.name] = [] if column.kind == "str_list" else None
      continue
    try:
      row[column.name] = _CONVERTERS[column.kind](value)
    except (ValueError, TypeError, OverflowError):
      raise RowError(
          f"{table} file {source}: column '{column.name}' value {snippet(value)} is not "
          f"{_KIND_DESCRIPTIONS[column.kind]}", table, source,
          f"{table}: column '{column.name}' not {_KIND_DESCRIPTIONS[column.kind]}") from None
    if (column.kind == "timestamp" and max_timestamp is not None
        and row[column.name] > max_timestamp):
      raise RowError(
          f"{table} file {source}: column '{column.name}' value {snippet(value)} "
          f"({_iso(row[column.name])}) is in the future: later than {_iso(max_timestamp)}, the "
          "run's clock plus the allowed clock skew (--max_clock_skew_s)", table, source,
          f"{table}: column '{column.name}' in the future")
  row[contract.SOURCE_FIELD] = source
  return row


def _check_columns(table: str, path: str, names: Sequence[Optional[str]]) -> None:
  """Fails before the first row, so a wrong export is reported once, not once per row."""
  present = set(names)
  missing = [c.name for c in _columns(table) if c.required and c.name not in present]
  if missing:
    raise ContractError(
        f"{table} file {path}: missing required column(s) {', '.join(repr(m) for m in missing)}; "
        f"found {[n for n in names if n]}")


class _RandomAccessGFile(io.RawIOBase):
  """Adapts a GFile to the io protocol pyarrow needs (`closed`, `readinto`), which GFile lacks."""

  def __init__(self, gfile: tf.io.gfile.GFile):
    super().__init__()
    self._gfile = gfile

  def readable(self) -> bool:
    return True

  def seekable(self) -> bool:
    return True

  def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
    self._gfile.seek(offset, whence)
    return self._gfile.tell()

  def tell(self) -> int:
    return self._gfile.tell()

  def readinto(self, buffer: Any) -> int:
    data = self._gfile.read(len(buffer))
    buffer[:len(data)] = data
    return len(data)


class _RunawayQuote(Exception):
  """A quoted CSV field has run on for MAX_QUOTED_LINES lines."""


class _PhysicalLines:
  """The lines of a binary file, decoded one by one, for csv.reader.

  Bytes that are not UTF-8 do not abort the read (as a text-mode file's UnicodeDecodeError
  would, with no file or line): they are kept as surrogates (`surrogateescape`), so the row they
  are in can be named and its column found. `record` holds the lines of the record being read
  (csv.reader reads no further than the end of a record).
  """

  def __init__(self, gfile: tf.io.gfile.GFile):
    self._gfile = gfile
    self.number = 0
    self.record: List[str] = []
    self.record_not_utf8 = False

  def __iter__(self) -> "_PhysicalLines":
    return self

  def __next__(self) -> str:
    if len(self.record) >= MAX_QUOTED_LINES:
      raise _RunawayQuote()
    data = self._gfile.readline()
    if not data:
      raise StopIteration
    self.number += 1
    try:
      text = data.decode("utf-8")
    except UnicodeDecodeError:
      text = data.decode("utf-8", "surrogateescape")
      self.record_not_utf8 = True
    self.record.append(text)
    return text


def _is_utf8(text: str) -> bool:
  try:
    text.encode("utf-8")
    return True
  except UnicodeEncodeError:
    return False


def _not_utf8(field: str) -> str:
  """What a field that is not UTF-8 holds: its bytes, and how they read as Latin-1."""
  data = field.encode("utf-8", "surrogateescape")
  return (f"is not UTF-8 text: {snippet(data)} (read as Latin-1: {snippet(data.decode('latin-1'))}"
          "); save the file as UTF-8")


def _field_spans(text: str) -> Tuple[List[Tuple[int, bool]], bool]:
  """A CSV record's raw text, field by field: ([(length, whether a newline is inside its
  quotes)], whether a quote is still open at the end)."""
  spans: List[Tuple[int, bool]] = []
  length, quoted, newline, at_start, closed = 0, False, False, True, False
  for char in text:
    if quoted:
      if char == '"':
        quoted, closed = False, True
        continue
      newline = newline or char in "\r\n"
      length += 1
      continue
    if char == '"' and (at_start or closed):  # Opens the field's quotes, or is an escaped "".
      if closed:
        length += 1
      quoted, at_start, closed = True, False, False
      continue
    closed = False
    if char == ",":
      spans.append((length, newline))
      length, newline, at_start = 0, False, True
      continue
    if char in "\r\n":
      continue
    length += 1
    at_start = False
  spans.append((length, newline))
  return spans, quoted


def _swallows_rows(fields: Sequence[str], width: int) -> bool:
  """Whether a multi-line field holds whole lines that are rows of the file's width (a quote
  left open takes in the rows after it until the next stray quote)."""
  for field in fields:
    inner = field.splitlines()[1:-1]
    if any(len(next(csv.reader([line]), [])) == width for line in inner if line.strip()):
      return True
  return False


def _column_name(names: Sequence[str], index: int) -> str:
  if index < len(names):
    return f"'{names[index]}'"
  return f"#{index + 1} (the header has {len(names)} columns)"


def _quoted_column(names: Sequence[str], text: str) -> str:
  """The column whose quoted field spans lines (the first such), for unbalanced-quote errors."""
  spans, _ = _field_spans(text)
  index = next((i for i, (_, newline) in enumerate(spans) if newline), len(spans) - 1)
  return _column_name(names, index)


def _read_csv(path: str, table: str, max_timestamp: Optional[float] = None
              ) -> Iterator[Union[Dict[str, Any], RowError]]:
  csv.field_size_limit(MAX_FIELD_CHARS)
  with tf.io.gfile.GFile(path, "rb") as f:
    lines = _PhysicalLines(f)
    reader = csv.reader(lines)
    try:
      header = next(reader, [])
    except (csv.Error, _RunawayQuote) as e:
      raise ContractError(f"{table} file {path}:1: cannot read the CSV header ({e}); is this a "
                          "CSV file?") from None
    if not _is_utf8("".join(header)):
      raise ContractError(f"{table} file {path}:1: the header {_not_utf8(''.join(header))}; is "
                          "this a CSV file?")
    # Spreadsheet exports add a BOM and stray spaces to header names.
    names = [name.strip().lstrip("\ufeff").strip() for name in header]
    if not all(name.isprintable() for name in names):
      raise ContractError(f"{table} file {path}:1: the header {snippet(','.join(names))} is not "
                          "text; is this a CSV file?")
    _check_columns(table, path, names)
    while True:
      first = lines.number + 1
      lines.record, lines.record_not_utf8 = [], False
      source = f"{path}:{first}"
      try:
        fields = next(reader)
      except StopIteration:
        return
      except csv.Error as e:
        text = "".join(lines.record)
        if "field larger than field limit" in str(e):
          longest = max(enumerate(_field_spans(text)[0]), key=lambda item: item[1][0])[0]
          yield RowError(
              f"{table} file {source}: column {_column_name(names, longest)} holds a field "
              f"longer than {MAX_FIELD_CHARS} characters (the limit of a CSV field)", table,
              source, f"{table}: field longer than {MAX_FIELD_CHARS} characters")
        else:
          yield RowError(f"{table} file {source}: not readable as CSV ({e})", table, source,
                         f"{table}: not readable as CSV")
        continue
      except _RunawayQuote:
        raise ContractError(
            f"{table} file {source}: column {_quoted_column(names, ''.join(lines.record))}: a "
            f"quoted field opened on line {first} is still open {MAX_QUOTED_LINES} lines later; "
            "a closing quote is probably missing") from None
      if not fields:  # A blank line.
        continue
      last = lines.number
      text = "".join(lines.record) if last > first else lines.record[0]
      quote_error = None
      if last > first:
        column = _quoted_column(names, text)
        if _field_spans(text)[1]:  # Still open: csv.reader ran to the end of the file.
          quote_error = (f"{table} file {source}: column {column}: a quoted field opened on line "
                         f"{first} is never closed (it runs to the end of the file, line {last})")
        elif len(fields) != len(names) or _swallows_rows(fields, len(names)):
          quote_error = (f"{table} file {source}: column {column}: a quoted field opened on line "
                         f"{first} runs to line {last}, taking in what look like rows"
                         + (f" (the row has {len(fields)} fields, the header {len(names)})"
                            if len(fields) != len(names) else "")
                         + "; a closing quote is probably missing")
      if quote_error:
        yield RowError(quote_error, table, source, f"{table}: unbalanced quote")
        continue
      bad = (next((i for i, field in enumerate(fields) if not _is_utf8(field)), None)
             if lines.record_not_utf8 else None)
      if bad is not None:
        yield RowError(f"{table} file {source}: column {_column_name(names, bad)} "
                       f"{_not_utf8(fields[bad])}", table, source, f"{table}: not UTF-8")
        continue
      try:
        yield parse_row(table, dict(zip(names, fields)), source, max_timestamp)
      except RowError as e:
        if last > first:  # A multi-line row that fails: most likely a quote left open.
          e = RowError(f"{e} (a quoted field, column {_quoted_column(names, text)}, opened on "
                       f"line {first} runs to line {last}: is a closing quote missing?)",
                       e.table, e.source, e.kind)
        yield e


def _read_jsonl(path: str, table: str, max_timestamp: Optional[float] = None
                ) -> Iterator[Union[Dict[str, Any], RowError]]:
  with tf.io.gfile.GFile(path, "rb") as f:
    line_number = 0
    while True:
      data = f.readline()
      if not data:
        return
      line_number += 1
      source = f"{path}:{line_number}"
      try:
        line = data.decode("utf-8")
      except UnicodeDecodeError as e:
        yield RowError(
            f"{table} file {source}: column {e.start + 1} (byte) "
            f"{_not_utf8(data[e.start:e.end + 20].decode('utf-8', 'surrogateescape'))}",
            table, source, f"{table}: not UTF-8")
        continue
      if not line.strip():
        continue
      try:
        raw = json.loads(line)
      except json.JSONDecodeError as e:
        yield RowError(
            f"{table} file {source}: column {e.colno}: not valid JSON: {e.msg} (at "
            f"{snippet(line[max(0, e.pos - 20):e.pos + 20])}; the line: {snippet(line.rstrip())})",
            table, source, f"{table}: not valid JSON")
        continue
      if not isinstance(raw, dict):
        yield RowError(f"{table} file {source}: expected a JSON object, got {snippet(raw)}",
                       table, source, f"{table}: not a JSON object")
        continue
      # No header to check up front; parse_row names the missing required column per row.
      try:
        yield parse_row(table, raw, source, max_timestamp)
      except RowError as e:
        yield e


def _read_parquet(path: str, table: str, max_timestamp: Optional[float] = None
                  ) -> Iterator[Union[Dict[str, Any], RowError]]:
  with tf.io.gfile.GFile(path, "rb") as f:
    parquet_file = pq.ParquetFile(_RandomAccessGFile(f))
    _check_columns(table, path, parquet_file.schema_arrow.names)
    row_number = 0  # Rows count from 1, as CSV and JSONL lines do: "file.parquet:1" is the first.
    for batch in parquet_file.iter_batches():
      for raw in batch.to_pylist():
        row_number += 1
        try:
          yield parse_row(table, raw, f"{path}:{row_number}", max_timestamp)
        except RowError as e:
          yield e


_READERS = {".csv": _read_csv, ".jsonl": _read_jsonl, ".parquet": _read_parquet}


def _extension(path: str) -> str:
  return os.path.splitext(path)[1].lower()


def iter_file_rows(path: str, table: str, max_timestamp: Optional[float] = None
                   ) -> Iterator[Union[Dict[str, Any], RowError]]:
  """One file's rows, parsed and streamed; a bad row comes as its RowError instead of a row, so
  a caller can collect every bad row in one pass. A file that cannot be read at all (a header
  without a required column, not CSV, a quote never closed) raises ContractError."""
  reader = _READERS.get(_extension(path))
  if reader is None:
    raise ContractError(
        f"{table} file {path}: unsupported format; accepted formats: "
        f"{', '.join(contract.FILE_FORMATS)}")
  return reader(path, table, max_timestamp)


def _raise_first(rows: Iterator[Union[Dict[str, Any], RowError]]) -> Iterator[Dict[str, Any]]:
  for row in rows:
    if isinstance(row, RowError):
      raise row
    yield row


def read_file_rows(path: str, table: str, max_timestamp: Optional[float] = None
                   ) -> Iterator[Dict[str, Any]]:
  """Streams one file's rows, parsed; the format follows the extension; the first bad row
  raises its RowError (a ContractError). Rows are named "file:N": N is the line for CSV (the
  header is line 1) and JSONL, the row for Parquet (the first is 1)."""
  return _raise_first(iter_file_rows(path, table, max_timestamp))


def list_table_files(data_root: str, table: str,
                     window: SpanWindow = SpanWindow()) -> List[str]:
  """The table's data files (flat, or the window's span folders, see spans.py), sorted so runs
  are reproducible; other files are ignored."""
  _columns(table)
  files = table_files(data_root, table, window)
  if not files and table not in contract.OPTIONAL_TABLES:
    folder = f"{data_root.rstrip('/')}/{table}"
    raise ContractError(
        f"required table '{table}' has no data files in {folder}/"
        + (" (in the span window)" if table_spans(data_root, table) else "")
        + f"; put one or more {', '.join(contract.FILE_FORMATS)} files there")
  return files


def read_table(data_root: str, table: str, window: SpanWindow = SpanWindow()
               ) -> Iterator[Dict[str, Any]]:
  """Every row of one table, file by file, streamed (for Python-side readers: serving's stores,
  the bandit's log reader, benchmarks; Beam components read with `beam_io.ReadTable`)."""
  for path in list_table_files(data_root, table, window):
    yield from read_file_rows(path, table)
