"""The content embeddings' format: one tf.Example per catalog item, and where they lie in the
artifact, named once for the writer (`ContentEmbedder`) and its readers (the fusion tower, tests).

Each example also carries the item's catalog fields (title, description, categories, year): the
retrieval trainer places items nobody has interacted with yet by them and by their vectors,
without reading the catalog a second time.

A modality an item lacks is a zero vector with its flag False: the vectors stay fixed-length (a
reader can parse them with FixedLenFeature), and the flag, never the zeros, says whether there
is content.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Iterator, List, Mapping

import numpy as np
import tensorflow as tf

from pipeline.data.examples import decode_example, encode_example, first

ITEM_ID = "item_id"
TEXT_EMBEDDING = "text_embedding"
IMAGE_EMBEDDING = "image_embedding"
HAS_TEXT = "has_text"
HAS_IMAGE = "has_image"
# The catalog columns an example carries (the raw data contract's names).
CATALOG_FIELDS = ("title", "description", "categories", "year")
# Under the artifact's uri: the examples (sharded, gzip) and the run's report.
EMBEDDINGS_DIR = "embeddings"
REPORT_FILE = "content_report.json"


@dataclasses.dataclass
class ItemContent:
  """One item's vectors: text [384] unit length, image [1280]; zeros where the flag is False."""
  item_id: str
  text_embedding: np.ndarray
  image_embedding: np.ndarray
  has_text: bool
  has_image: bool
  # The catalog row's CATALOG_FIELDS (absent ones left out).
  catalog: Dict[str, Any] = dataclasses.field(default_factory=dict)


def catalog_fields(row: Mapping[str, Any]) -> Dict[str, Any]:
  """The CATALOG_FIELDS a catalog row has (None and "" are absent)."""
  return {name: row[name] for name in CATALOG_FIELDS if row.get(name) not in (None, "")}


def to_example(item: ItemContent) -> bytes:
  return encode_example({
      ITEM_ID: item.item_id, TEXT_EMBEDDING: item.text_embedding.astype(float).tolist(),
      IMAGE_EMBEDDING: item.image_embedding.astype(float).tolist(),
      HAS_TEXT: int(item.has_text), HAS_IMAGE: int(item.has_image), **item.catalog})


def _catalog_values(decoded: Mapping[str, List[Any]]) -> Dict[str, Any]:
  values: Dict[str, Any] = {"categories": list(decoded.get("categories", []))}
  for name in ("title", "description", "year"):
    if name in decoded:
      values[name] = first(decoded, name, None)
  return values


def from_example(serialized: bytes) -> ItemContent:
  decoded = decode_example(serialized)
  return ItemContent(first(decoded, ITEM_ID, ""),
                     np.asarray(decoded[TEXT_EMBEDDING], np.float32),
                     np.asarray(decoded[IMAGE_EMBEDDING], np.float32),
                     bool(first(decoded, HAS_TEXT, 0)), bool(first(decoded, HAS_IMAGE, 0)),
                     _catalog_values(decoded))


def embeddings_prefix(uri: str) -> str:
  """What the writer's shard names start with."""
  return os.path.join(uri, EMBEDDINGS_DIR, "items")


def read_item_contents(uri: str) -> Iterator[ItemContent]:
  """Every item of a ContentEmbeddings artifact, streamed."""
  files = sorted(tf.io.gfile.glob(embeddings_prefix(uri) + "*"))
  for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
    yield from_example(record.numpy())
