"""The raw data contract: the tables and columns a user's own logs come in.

A data root holds one folder per table; each folder holds any number of CSV, JSONL or Parquet
files (mixed formats are fine). The pipeline reads every file under a table's folder:

    <data_root>/interactions/*.csv|*.jsonl|*.parquet   required
    <data_root>/items/*.csv|*.jsonl|*.parquet          required (the item catalog)
    <data_root>/users/*.csv|*.jsonl|*.parquet          optional

This module is the one place that names the raw tables and columns; readers, converters, the
ExampleGen and the serving feedback log all refer to it.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Tuple

INTERACTIONS = "interactions"
ITEMS = "items"
USERS = "users"
TABLES: Tuple[str, ...] = (INTERACTIONS, ITEMS, USERS)
OPTIONAL_TABLES: Tuple[str, ...] = (USERS,)

FILE_FORMATS: Tuple[str, ...] = (".csv", ".jsonl", ".parquet")

# Event types a log may carry. Retrieval learns from the positive ones; an `impression` is a
# shown-but-not-clicked record written by the serving feedback log. Any other value is kept in the
# examples so that validation (TFDV, against the schema's domain) reports it.
CLICK = "click"
IMPRESSION = "impression"
POSITIVE_EVENT_TYPES: Tuple[str, ...] = ("view", CLICK, "add_to_cart", "purchase", "rating")
NEGATIVE_EVENT_TYPES: Tuple[str, ...] = (IMPRESSION,)
EVENT_TYPES: Tuple[str, ...] = POSITIVE_EVENT_TYPES + NEGATIVE_EVENT_TYPES

# The curated schema the pipeline validates examples against by default (value ranges, event
# domain, required features, the default rating scale: 0.5-5, MovieLens' half stars); a run's
# configured scale (--rating_scale) replaces its rating domain (pipeline/data/rating_scale.py).
CURATED_SCHEMA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "schema", "retrieval_schema.pbtxt")

# The flag that sets the rating scale (pipeline/data/rating_scale.py), named in errors.
RATING_SCALE_FLAG = "--rating_scale MIN,MAX"


def parse_scale(text: str) -> Tuple[float, float]:
  """'0.5,5' -> (0.5, 5.0); refuses anything but two finite numbers, the first below the second."""
  parts = [part.strip() for part in str(text).split(",")]
  try:
    low, high = (float(part) for part in parts)
  except ValueError:
    raise ValueError(f"rating scale must be MIN,MAX (two numbers, e.g. 0.5,5), got {text!r}"
                     ) from None
  if not (math.isfinite(low) and math.isfinite(high) and low < high):
    raise ValueError(f"rating scale must be two finite numbers with MIN < MAX, got {text!r}")
  return low, high


def format_scale(scale: Tuple[float, float]) -> str:
  return f"[{scale[0]:g}, {scale[1]:g}]"


# In CSV files a list-valued column (categories) is one string joined with this separator.
LIST_SEPARATOR = "|"


@dataclasses.dataclass(frozen=True)
class Column:
  """One raw column: its name, its Python type after parsing, and whether a row must have it."""
  name: str
  kind: str  # "str", "int", "float", "timestamp" (unix seconds or ISO-8601) or "str_list"
  required: bool


# The rating column (also the raw feature's name: raw names are the contract's column names).
RATING_COLUMN = "rating"

INTERACTION_COLUMNS: Tuple[Column, ...] = (
    Column("user_id", "str", True),
    Column("item_id", "str", True),
    Column("event", "str", True),
    Column("timestamp", "timestamp", True),
    Column(RATING_COLUMN, "float", False),
    Column("query", "str", False),
    Column("session_id", "str", False),
    # Written by the serving feedback log for every shown item, so that later runs can judge
    # any new policy off-policy: which request showed it, where, with what probability, and
    # under which A/B variant.
    Column("request_id", "str", False),
    Column("position", "int", False),
    Column("propensity", "float", False),
    Column("variant", "str", False),
)

ITEM_COLUMNS: Tuple[Column, ...] = (
    Column("item_id", "str", True),
    Column("title", "str", True),
    Column("description", "str", False),
    Column("categories", "str_list", False),
    Column("year", "int", False),
    Column("image_uri", "str", False),
)

USER_COLUMNS: Tuple[Column, ...] = (
    Column("user_id", "str", True),
    Column("age", "int", False),
    Column("gender", "str", False),
    Column("occupation", "str", False),
)

COLUMNS_BY_TABLE = {
    INTERACTIONS: INTERACTION_COLUMNS,
    ITEMS: ITEM_COLUMNS,
    USERS: USER_COLUMNS,
}

# Every parsed row also carries where it came from, so errors can name the file and line.
SOURCE_FIELD = "_source"


class ContractError(ValueError):
  """Raw data that breaks the contract; the message names the file, row and column at fault."""
