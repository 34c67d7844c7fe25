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
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

import pyarrow.parquet as pq
import tensorflow as tf

from pipeline.data import contract
from pipeline.data.contract import ContractError

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


def parse_row(table: str, raw: Mapping[str, Any], source: str) -> Dict[str, Any]:
  """Coerces one raw row to the contract's types; `source` ("file:line") goes into errors."""
  row: Dict[str, Any] = {}
  for column in _columns(table):
    value = raw.get(column.name)
    if _is_empty(value):
      if column.required:
        raise ContractError(
            f"{table} file {source}: required column '{column.name}' is missing or empty")
      row[column.name] = [] if column.kind == "str_list" else None
      continue
    try:
      row[column.name] = _CONVERTERS[column.kind](value)
    except (ValueError, TypeError, OverflowError):
      raise ContractError(
          f"{table} file {source}: column '{column.name}' value {value!r} is not "
          f"{_KIND_DESCRIPTIONS[column.kind]}") from None
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


def _read_csv(path: str, table: str) -> Iterator[Dict[str, Any]]:
  with tf.io.gfile.GFile(path, "r") as f:
    reader = csv.DictReader(f)
    # Spreadsheet exports add a BOM and stray spaces to header names.
    reader.fieldnames = [
        name.strip().lstrip("\ufeff").strip() for name in (reader.fieldnames or [])]
    _check_columns(table, path, reader.fieldnames)
    for raw in reader:
      yield parse_row(table, raw, f"{path}:{reader.line_num}")


def _read_jsonl(path: str, table: str) -> Iterator[Dict[str, Any]]:
  with tf.io.gfile.GFile(path, "r") as f:
    for line_number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      source = f"{path}:{line_number}"
      try:
        raw = json.loads(line)
      except json.JSONDecodeError as e:
        raise ContractError(f"{table} file {source}: not valid JSON ({e.msg})") from None
      if not isinstance(raw, dict):
        raise ContractError(f"{table} file {source}: expected a JSON object, got {raw!r}")
      # No header to check up front; parse_row names the missing required column per row.
      yield parse_row(table, raw, source)


def _read_parquet(path: str, table: str) -> Iterator[Dict[str, Any]]:
  with tf.io.gfile.GFile(path, "rb") as f:
    parquet_file = pq.ParquetFile(_RandomAccessGFile(f))
    _check_columns(table, path, parquet_file.schema_arrow.names)
    row_index = 0
    for batch in parquet_file.iter_batches():
      for raw in batch.to_pylist():
        yield parse_row(table, raw, f"{path}:{row_index}")
        row_index += 1


_READERS = {".csv": _read_csv, ".jsonl": _read_jsonl, ".parquet": _read_parquet}


def _extension(path: str) -> str:
  return os.path.splitext(path)[1].lower()


def read_file_rows(path: str, table: str) -> Iterator[Dict[str, Any]]:
  """Streams one file's rows, parsed; the format follows the extension."""
  reader = _READERS.get(_extension(path))
  if reader is None:
    raise ContractError(
        f"{table} file {path}: unsupported format; accepted formats: "
        f"{', '.join(contract.FILE_FORMATS)}")
  return reader(path, table)


def list_table_files(data_root: str, table: str) -> List[str]:
  """The table's data files, sorted so runs are reproducible; other files are ignored."""
  _columns(table)
  folder = f"{data_root.rstrip('/')}/{table}"
  files = sorted(
      path for path in tf.io.gfile.glob(f"{folder}/*") if _extension(path) in contract.FILE_FORMATS)
  if not files and table not in contract.OPTIONAL_TABLES:
    raise ContractError(
        f"required table '{table}' has no data files in {folder}/; put one or more "
        f"{', '.join(contract.FILE_FORMATS)} files there")
  return files


def read_table(data_root: str, table: str) -> Iterator[Dict[str, Any]]:
  """Every row of one table, file by file, streamed (for Python-side readers: serving's stores,
  the bandit's log reader, benchmarks; Beam components read with `beam_io.ReadTable`)."""
  for path in list_table_files(data_root, table):
    yield from read_file_rows(path, table)
