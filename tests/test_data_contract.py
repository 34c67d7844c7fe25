"""Tests for the raw data contract readers, the Beam source and the MovieLens-100K converter."""
from __future__ import annotations

import csv
import json
import os
from typing import Any, Dict, List

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.util import assert_that, equal_to, is_empty

from pipeline.data import contract, movielens, parsing
from pipeline.data.beam_io import ReadTable
from pipeline.data.contract import ContractError
from pipeline.data.parsing import list_table_files, parse_row, read_file_rows


def _without_source(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
  return [{k: v for k, v in row.items() if k != contract.SOURCE_FIELD} for row in rows]


def _write_csv(path: str, header: List[str], rows: List[List[Any]]) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)
  return path


def _write_jsonl(path: str, rows: List[Dict[str, Any]]) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    for row in rows:
      f.write(json.dumps(row) + "\n\n")  # Blank lines in between must be skipped.
  return path


def _write_parquet(path: str, columns: Dict[str, List[Any]]) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  pq.write_table(pa.table(columns), path, row_group_size=2)  # Several batches to iterate.
  return path


# --- MovieLens converter on the real shipped data -------------------------------------------


@pytest.fixture(scope="module")
def movielens_root(tmp_path_factory: pytest.TempPathFactory) -> str:
  root = str(tmp_path_factory.mktemp("ml100k"))
  counts = movielens.convert_movielens_100k(root)
  assert counts == {"interactions": 100000, "items": 1682, "users": 943}
  return root


def _raw_inter_lines() -> List[List[str]]:
  with open(os.path.join(movielens.movielens_100k_dir(), "ml-100k.inter"), encoding="utf-8") as f:
    f.readline()
    return [line.rstrip("\n").split("\t") for line in f if line.strip()]


def test_movielens_full_conversion_reads_back(movielens_root: str) -> None:
  interactions = [row for path in list_table_files(movielens_root, "interactions")
                  for row in read_file_rows(path, "interactions")]
  items = {row["item_id"]: row for row in read_file_rows(
      os.path.join(movielens_root, "items", "movies.csv"), "items")}
  users = {row["user_id"]: row for row in read_file_rows(
      os.path.join(movielens_root, "users", "users.csv"), "users")}
  assert (len(interactions), len(items), len(users)) == (100000, 1682, 943)

  raw = _raw_inter_lines()
  assert raw[0] == ["196", "242", "3", "881250949"]
  first = interactions[0]
  assert (first["user_id"], first["item_id"], first["rating"], first["timestamp"]) == (
      "196", "242", 3.0, 881250949)
  assert (first["event"], first["query"], first["session_id"]) == ("rating", None, None)
  assert first[contract.SOURCE_FIELD].endswith("ratings.csv:2")
  # Every row matches the raw file in order, not just the first one.
  assert [(r["user_id"], r["item_id"], r["rating"], r["timestamp"]) for r in interactions] == [
      (u, i, float(r), int(float(t))) for u, i, r, t in raw]

  toy_story = items["1"]
  assert toy_story["title"] == "Toy Story"
  assert toy_story["categories"] == ["Animation", "Children's", "Comedy"]
  assert toy_story["year"] == 1995
  assert items["12"]["title"] == "Usual Suspects, The"  # Comma survives the CSV round trip.
  assert items["1412"]["year"] is None  # Raw release year is "V".
  assert items["267"]["categories"] == []  # Only the "unknown" pseudo-genre.
  assert users["1"] == {"user_id": "1", "age": 24, "gender": "M", "occupation": "technician",
                        contract.SOURCE_FIELD: users["1"][contract.SOURCE_FIELD]}


def test_movielens_max_users_slice(tmp_path) -> None:
  counts = movielens.convert_movielens_100k(str(tmp_path), max_users=5)
  expected_interactions = sum(1 for u, _, _, _ in _raw_inter_lines() if 1 <= int(u) <= 5)
  assert counts == {"interactions": expected_interactions, "items": 1682, "users": 5}
  users = list(read_file_rows(str(tmp_path / "users" / "users.csv"), "users"))
  assert sorted(int(r["user_id"]) for r in users) == [1, 2, 3, 4, 5]
  interactions = list(
      read_file_rows(str(tmp_path / "interactions" / "ratings.csv"), "interactions"))
  assert len(interactions) == expected_interactions
  assert {r["user_id"] for r in interactions} == {"1", "2", "3", "4", "5"}


# --- Formats ---------------------------------------------------------------------------------

_ITEM_ROWS = [
    {"item_id": "7", "title": 'Say "Hi", World', "description": "", "categories": ["A", "B"],
     "year": 1995, "image_uri": ""},
    {"item_id": "8", "title": "Plain", "description": "d", "categories": [], "year": None,
     "image_uri": "gs://b/8.png"},
    {"item_id": "9", "title": "Third", "description": None, "categories": ["C"], "year": 2001,
     "image_uri": None},
]


def test_csv_jsonl_parquet_read_back_identically(tmp_path) -> None:
  header = ["item_id", "title", "description", "categories", "year", "image_uri", "extra"]
  csv_path = _write_csv(str(tmp_path / "items.csv"), header, [
      ["7", 'Say "Hi", World', "", "A| B|", "1995", "", "ignored"],
      [" 8 ", "Plain", "d", "", "", "gs://b/8.png", "x"],
      ["9", "Third", "", "C", "2001.0", "", ""],
  ])
  # JSON and Parquet exports often carry numeric ids and float years; they must normalize.
  jsonl_path = _write_jsonl(str(tmp_path / "items.jsonl"), [
      {"item_id": 7, "title": 'Say "Hi", World', "categories": ["A", "B"], "year": 1995},
      {"item_id": "8", "title": "Plain", "description": "d", "categories": "", "year": None,
       "image_uri": "gs://b/8.png"},
      {"item_id": 9.0, "title": "Third", "categories": "C", "year": "2001"},
  ])
  parquet_path = _write_parquet(str(tmp_path / "items.parquet"), {
      "item_id": [7.0, 8.0, 9.0],
      "title": ['Say "Hi", World', "Plain", "Third"],
      "description": [None, "d", None],
      "categories": [["A", "B"], [], ["C"]],
      "year": [1995.0, float("nan"), 2001.0],
      "image_uri": [None, "gs://b/8.png", None],
  })
  expected = [{k: (None if v == "" else v) for k, v in row.items()} for row in _ITEM_ROWS]
  for path in (csv_path, jsonl_path, parquet_path):
    assert _without_source(list(read_file_rows(path, "items"))) == expected, path

  sources = [r[contract.SOURCE_FIELD] for r in read_file_rows(jsonl_path, "items")]
  assert sources == [f"{jsonl_path}:1", f"{jsonl_path}:3", f"{jsonl_path}:5"]
  sources = [r[contract.SOURCE_FIELD] for r in read_file_rows(parquet_path, "items")]
  # Parquet rows count from 1, as CSV and JSONL lines do.
  assert sources == [f"{parquet_path}:1", f"{parquet_path}:2", f"{parquet_path}:3"]


@pytest.mark.parametrize("value,expected", [
    ("2024-01-02T03:04:05Z", 1704164645),
    ("2024-01-02T03:04:05+02:00", 1704157445),
    ("2024-01-02T03:04:05", 1704164645),  # Naive means UTC.
    ("2024-01-02 03:04:05.750Z", 1704164645),
    ("1704164645", 1704164645),
    ("1704164645.9", 1704164645),
    (1704164645.0, 1704164645),
])
def test_timestamp_parsing(value: Any, expected: int) -> None:
  row = parse_row("interactions", {"user_id": 1, "item_id": "i", "event": "view",
                                   "timestamp": value}, "x.csv:2")
  assert row["timestamp"] == expected


def test_parse_row_fills_optional_columns_and_ignores_unknown() -> None:
  row = parse_row("interactions", {"user_id": "196.0", "item_id": " 242 ", "event": "click",
                                   "timestamp": 5, "rating": "4.5", "session_id": "",
                                   "not_in_contract": 1}, "x.csv:2")
  assert row == {"user_id": "196.0", "item_id": "242", "event": "click", "timestamp": 5,
                 "rating": 4.5, "query": None, "session_id": None, "request_id": None,
                 "position": None, "propensity": None, "variant": None,
                 contract.SOURCE_FIELD: "x.csv:2"}


# --- Errors ----------------------------------------------------------------------------------


def test_csv_missing_required_column_names_file_and_column(tmp_path) -> None:
  path = _write_csv(str(tmp_path / "interactions" / "a.csv"),
                    ["user_id", "item_id", "event"], [["1", "2", "view"]])
  with pytest.raises(ContractError) as error:
    list(read_file_rows(path, "interactions"))
  assert path in str(error.value)
  assert "timestamp" in str(error.value)


def test_unparseable_timestamp_names_line_column_and_value(tmp_path) -> None:
  path = _write_csv(str(tmp_path / "file.csv"), ["user_id", "item_id", "event", "timestamp"],
                    [["1", "2", "view", "881250949"], ["1", "3", "view", "yesterday"]])
  rows = read_file_rows(path, "interactions")
  assert next(rows)["timestamp"] == 881250949
  with pytest.raises(ContractError) as error:
    next(rows)
  message = str(error.value)
  assert "file.csv:3" in message and "'timestamp'" in message and "yesterday" in message


@pytest.mark.parametrize("raw,column,fragment", [
    ({"user_id": "1", "item_id": "2", "event": "view", "timestamp": ""}, "timestamp", "missing"),
    ({"user_id": "1", "item_id": "2", "timestamp": 1}, "event", "missing"),
    ({"user_id": "1", "item_id": "2", "event": "view", "timestamp": 1, "rating": "good"},
     "rating", "'good'"),
])
def test_bad_interaction_values(raw: Dict[str, Any], column: str, fragment: str) -> None:
  with pytest.raises(ContractError) as error:
    parse_row("interactions", raw, "/d/interactions/a.jsonl:4")
  message = str(error.value)
  assert "/d/interactions/a.jsonl:4" in message and f"'{column}'" in message and fragment in message


@pytest.mark.parametrize("year", ["abc", "1995.5", True])
def test_bad_int_rejected(year: Any) -> None:
  with pytest.raises(ContractError, match="'year'"):
    parse_row("items", {"item_id": "1", "title": "t", "year": year}, "m.csv:2")


def test_jsonl_row_missing_required_column_names_line(tmp_path) -> None:
  path = _write_jsonl(str(tmp_path / "u.jsonl"), [{"user_id": "1"}, {"age": 3}])
  with pytest.raises(ContractError, match=r"u\.jsonl:3: required column 'user_id'"):
    list(read_file_rows(path, "users"))


def test_unknown_extension_lists_formats(tmp_path) -> None:
  with pytest.raises(ContractError) as error:
    read_file_rows(str(tmp_path / "rows.tsv"), "items")
  assert "rows.tsv" in str(error.value)
  assert all(fmt in str(error.value) for fmt in contract.FILE_FORMATS)


def test_list_table_files(tmp_path) -> None:
  root = str(tmp_path)
  with pytest.raises(ContractError) as error:
    list_table_files(root, "interactions")
  assert os.path.join(root, "interactions") in str(error.value)
  assert list_table_files(root, "users") == []  # Optional table.

  folder = tmp_path / "items"
  folder.mkdir()
  for name in ("b.parquet", "a.csv", "README", "notes.txt", "c.jsonl"):
    (folder / name).write_text("")
  assert list_table_files(root, "items") == [
      str(folder / name) for name in ("a.csv", "b.parquet", "c.jsonl")]

  (tmp_path / "interactions").mkdir()
  (tmp_path / "interactions" / "README.md").write_text("no data")
  with pytest.raises(ContractError, match="interactions"):
    list_table_files(root, "interactions")


# --- Beam ------------------------------------------------------------------------------------


def test_read_table_in_beam_pipeline(tmp_path) -> None:
  root = str(tmp_path)
  _write_csv(os.path.join(root, "interactions", "a.csv"),
             ["user_id", "item_id", "event", "timestamp"],
             [["u1", "i1", "view", "10"], ["u2", "i2", "click", "2024-01-02T03:04:05Z"]])
  _write_jsonl(os.path.join(root, "interactions", "b.jsonl"),
               [{"user_id": "u3", "item_id": 3, "event": "purchase", "timestamp": 30}])
  _write_parquet(os.path.join(root, "items", "c.parquet"),
                 {"item_id": ["i1", "i2", "3"], "title": ["x", "y", "z"]})
  (tmp_path / "items" / "README").write_text("ignored")

  with beam.Pipeline() as pipeline:
    interactions = pipeline | ReadTable(root, "interactions")
    items = pipeline | ReadTable(root, "items")
    users = pipeline | ReadTable(root, "users")
    assert_that(
        interactions | "Key interactions" >> beam.Map(
            lambda r: (r["user_id"], r["item_id"], r["event"], r["timestamp"],
                       os.path.basename(r[contract.SOURCE_FIELD]))),
        equal_to([("u1", "i1", "view", 10, "a.csv:2"),
                  ("u2", "i2", "click", 1704164645, "a.csv:3"),
                  ("u3", "3", "purchase", 30, "b.jsonl:1")]),
        label="CheckInteractions")
    assert_that(items | "Key items" >> beam.Map(lambda r: (r["item_id"], r["title"], r["year"])),
                equal_to([("i1", "x", None), ("i2", "y", None), ("3", "z", None)]),
                label="CheckItems")
    assert_that(users, is_empty(), label="CheckUsers")


def test_read_table_fails_at_construction_without_required_table(tmp_path) -> None:
  with pytest.raises(ContractError, match="items"):
    ReadTable(str(tmp_path), "items")


# --- Errors that name file, line and column (issue 13) ----------------------------------------

_HEADER = b"user_id,item_id,event,timestamp,rating\n"


def _write_bytes(path: str, data: bytes) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(data)
  return path


def test_latin1_bytes_name_file_line_and_column(tmp_path) -> None:
  path = _write_bytes(str(tmp_path / "log.csv"),
                      _HEADER + b"1,2,view,10,4\n1,caf\xe9,view,11,3\n1,3,view,12,4\n")
  rows = read_file_rows(path, "interactions")
  assert next(rows)["item_id"] == "2"
  with pytest.raises(ContractError) as error:
    next(rows)
  message = str(error.value)
  assert f"{path}:3" in message and "'item_id'" in message and "not UTF-8" in message
  assert "café" in message and "while running" not in message
  # The bad row is one row: the rest of the file still reads.
  assert [r if isinstance(r, dict) else r.kind
          for r in parsing.iter_file_rows(path, "interactions")][2]["item_id"] == "3"


def test_binary_file_named_as_not_csv(tmp_path) -> None:
  path = _write_bytes(str(tmp_path / "photo.csv"), b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
  with pytest.raises(ContractError, match=r"photo\.csv:1: the header .* is this a CSV file"):
    list(read_file_rows(path, "interactions"))


def test_large_field_is_read_and_an_oversized_one_is_named(tmp_path, monkeypatch) -> None:
  big = "x" * (1 << 20)  # 1 MB: past Python's default limit of 128 KiB, within ours.
  path = _write_bytes(str(tmp_path / "log.csv"),
                      _HEADER + f"1,2,view,10,4\n1,{big},view,11,3\n1,3,view,12,4\n".encode())
  assert [r["item_id"] for r in read_file_rows(path, "interactions")] == ["2", big, "3"]
  monkeypatch.setattr(parsing, "MAX_FIELD_CHARS", 1000)
  results = list(parsing.iter_file_rows(path, "interactions"))
  assert [r["item_id"] for r in results if isinstance(r, dict)] == ["2", "3"]
  (error,) = [r for r in results if isinstance(r, parsing.RowError)]
  assert f"{path}:3" in str(error) and "column 'item_id'" in str(error)
  assert "longer than 1000 characters" in str(error) and len(str(error)) < 1000


def test_unbalanced_quote_names_the_line_and_column_it_opened(tmp_path) -> None:
  lines = ['1,2,view,10,4', '1,"oops,view,11,3', '1,3,view,12,4', '1,4,view,13,4', '1,"5,view,14,4',
           '1,6,view,15,4']
  path = _write_bytes(str(tmp_path / "log.csv"), _HEADER + "\n".join(lines).encode() + b"\n")
  results = list(parsing.iter_file_rows(path, "interactions"))
  assert [r["item_id"] for r in results if isinstance(r, dict)] == ["2", "6"]
  (error,) = [r for r in results if isinstance(r, parsing.RowError)]
  assert f"{path}:3: column 'item_id'" in str(error)
  assert "opened on line 3 runs to line 6" in str(error) and "closing quote" in str(error)
  # A quote never closed runs to the end of the file: named where it opened.
  path = _write_bytes(str(tmp_path / "eof.csv"), _HEADER + b'1,2,view,10,4\n1,"2,view,11,3\n'
                      b"1,3,view,12,4\n")
  with pytest.raises(ContractError, match=r"eof\.csv:3: column 'item_id': a quoted field opened "
                                          r"on line 3 is never closed"):
    list(read_file_rows(path, "interactions"))
  # A quoted field with a newline inside is still fine.
  path = _write_bytes(str(tmp_path / "ok.csv"), _HEADER + b'1,"a\nb",view,10,4\n1,3,view,12,4\n')
  assert [(r["item_id"], r[contract.SOURCE_FIELD]) for r in read_file_rows(path, "interactions")
          ] == [("a\nb", f"{path}:2"), ("3", f"{path}:4")]


def test_jsonl_error_names_line_column_and_the_whole_reason(tmp_path) -> None:
  path = _write_bytes(str(tmp_path / "log.jsonl"),
                      b'{"user_id": "1", "item_id": "2", "event": "view", "timestamp": 1}\n'
                      b'{"user_id": "1", "item_id" "2", "event": "view", "timestamp": 1}\n')
  with pytest.raises(ContractError) as error:
    list(read_file_rows(path, "interactions"))
  message = str(error.value)
  assert f"{path}:2: column 28: not valid JSON: Expecting ':' delimiter" in message
  assert '"item_id" "2"' in message


def test_timestamp_in_the_future_is_a_bad_row() -> None:
  raw = {"user_id": "1", "item_id": "2", "event": "view", "timestamp": "2030-01-01T00:00:00Z"}
  assert parse_row("interactions", raw, "x.csv:2")["timestamp"] == 1893456000  # no check asked
  with pytest.raises(parsing.RowError) as error:
    parse_row("interactions", raw, "x.csv:2", max_timestamp=1893456000 - 1)
  assert "x.csv:2: column 'timestamp'" in str(error.value) and "future" in str(error.value)
  assert "--max_clock_skew_s" in str(error.value)


# --- Rating scale (issue 13) -------------------------------------------------------------------


def test_curated_schema_takes_half_stars_and_a_configured_scale_is_written(tmp_path) -> None:
  from pipeline.components.validation_gate import describe
  from pipeline.data import rating_scale
  assert rating_scale.schema_rating_scale(contract.CURATED_SCHEMA) == (0.5, 5.0)
  assert rating_scale.schema_with_rating_scale(
      contract.CURATED_SCHEMA, (0.5, 5.0), str(tmp_path)) == contract.CURATED_SCHEMA
  derived = rating_scale.schema_with_rating_scale(contract.CURATED_SCHEMA, (0.0, 10.0),
                                                  str(tmp_path))
  assert derived != contract.CURATED_SCHEMA and rating_scale.schema_rating_scale(derived) == (
      0.0, 10.0)
  assert contract.parse_scale(" 1, 5 ") == (1.0, 5.0)
  for bad in ("5,1", "1", "a,b", "1,inf"):
    with pytest.raises(ValueError, match="rating scale"):
      contract.parse_scale(bad)
  found = {"eval": [{"feature": "rating", "short": "Out-of-range values",
                     "description": "Unexpectedly small value: 0.25."}]}
  data = _write_bytes(str(tmp_path / "data" / "interactions" / "a.csv"),
                      _HEADER + b"1,2,view,10,0.5\n1,3,view,11,0.25\n1,4,view,12,\n1,5,view,13,9\n")
  message = describe(found, str(tmp_path / "data"), "[0.5, 5]")
  assert "the configured rating scale is [0.5, 5]" in message and "--rating_scale" in message
  # The rows outside the scale, by file and line (TFDV names only the feature).
  assert f"{data}:3: column 'rating' value 0.25" in message
  assert f"{data}:5: column 'rating' value 9" in message and f"{data}:2" not in message
