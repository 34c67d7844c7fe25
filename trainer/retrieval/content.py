"""The catalog's content vectors as the two-tower model reads them: the ContentEmbedder's
artifact, aligned with the transform's item index for training and kept by item id for export.

Training sees only items with interactions; their vectors are gathered by item index into each
batch (`with_content`). Items nobody interacted with yet ("cold", all one OOV index) are placed
at export by their vectors and catalog fields alone (`CatalogContent.cold_rows`), which is what
the tower's id dropout trains for.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping, Sequence

import numpy as np
import tensorflow as tf

from trainer.content.records import (HAS_IMAGE, HAS_TEXT, IMAGE_EMBEDDING, TEXT_EMBEDDING,
                                     read_item_contents)
from transform import features as F

# The tower's content inputs besides the transform's candidate features: whether the item has a
# learned id (False for cold items and under id dropout) and its content vectors with their flags.
HAS_ID = "has_id"
CONTENT_FEATURES = (HAS_ID, TEXT_EMBEDDING, IMAGE_EMBEDDING, HAS_TEXT, HAS_IMAGE)
VECTOR_FEATURES = (TEXT_EMBEDDING, IMAGE_EMBEDDING, HAS_TEXT, HAS_IMAGE)
# Where the trainer finds the artifact: set by `pipeline/components/retrieval_trainer.py`.
CONTENT_URI = "content_uri"


@dataclasses.dataclass
class CatalogContent:
  """Every catalog item's vectors and flags, row i for item_ids[i], and its catalog fields."""
  item_ids: List[str]
  vectors: Dict[str, np.ndarray]  # VECTOR_FEATURES -> [n, ...]
  catalog: List[Dict[str, object]]

  @classmethod
  def read(cls, uri: str) -> "CatalogContent":
    item_ids, catalog = [], []
    columns: Dict[str, List[object]] = {name: [] for name in VECTOR_FEATURES}
    for item in read_item_contents(uri):
      item_ids.append(item.item_id)
      catalog.append(dict(item.catalog, item_id=item.item_id))
      columns[TEXT_EMBEDDING].append(item.text_embedding)
      columns[IMAGE_EMBEDDING].append(item.image_embedding)
      columns[HAS_TEXT].append(item.has_text)
      columns[HAS_IMAGE].append(item.has_image)
    if not item_ids:
      raise ValueError(f"content embeddings at {uri} hold no item")
    vectors = {TEXT_EMBEDDING: np.stack(columns[TEXT_EMBEDDING]).astype(np.float32),
               IMAGE_EMBEDDING: np.stack(columns[IMAGE_EMBEDDING]).astype(np.float32),
               HAS_TEXT: np.array(columns[HAS_TEXT], np.float32),
               HAS_IMAGE: np.array(columns[HAS_IMAGE], np.float32)}
    return cls(item_ids, vectors, catalog)

  def by_index(self, item_vocabulary: Sequence[str], n_items: int) -> Dict[str, np.ndarray]:
    """The vectors at each transform item index (n_items rows, OOV included); an index without
    content (not in the catalog, or the OOV bucket) gets zeros and False flags."""
    row_of = {item: row for row, item in enumerate(self.item_ids)}
    aligned = {name: np.zeros((n_items,) + values.shape[1:], values.dtype)
               for name, values in self.vectors.items()}
    for index, item in enumerate(item_vocabulary):
      row = row_of.get(item)
      if row is not None:
        for name, values in self.vectors.items():
          aligned[name][index] = values[row]
    return aligned

  def cold_rows(self, warm_items: Sequence[str]) -> List[int]:
    """Rows of the catalog items not among `warm_items` (those training placed by id)."""
    warm = set(warm_items)
    return [row for row, item in enumerate(self.item_ids) if item not in warm]


def with_content(batch: Mapping[str, tf.Tensor], by_index: Mapping[str, tf.Tensor]
                 ) -> Dict[str, tf.Tensor]:
  """A batch of transformed examples plus its items' content features (HAS_ID True: every
  training item has a learned id; the tower's id dropout hides it)."""
  index = tf.reshape(batch[F.ITEM_INDEX], [-1])
  added = {name: tf.gather(values, index) for name, values in by_index.items()}
  added[HAS_ID] = tf.ones_like(added[HAS_TEXT])
  return dict(batch, **added)
