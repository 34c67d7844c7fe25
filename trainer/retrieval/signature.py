"""The retrieval SavedModel's request contract: input specs, and the one builder of its requests.

Every caller of the exported model (the cascade, the cross-encoder's miner, the bandit's
featurizer, the benchmarks) builds its inputs here, from the same specs the export signs with,
so a feature added to the signature reaches every caller at once. Rows are mappings keyed by the
raw feature names (`transform/features.py`); a missing or None value is the signature's "unknown"
("" for strings, 0 for numbers). List-valued inputs (history, categories) are padded with ""
(or 0) to the batch's longest row.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np
import tensorflow as tf

from transform import features as F

# How top-K marks an item it must not return (a history item) when the catalog is shorter than K:
# its score is the float32 minimum. Callers drop such rows with `retrieved`.
EXCLUDED_SCORE = float(np.finfo(np.float32).min)

QUERY_SPEC: Dict[str, tf.TensorSpec] = {
    F.USER_ID: tf.TensorSpec([None], tf.string, name=F.USER_ID),
    F.HISTORY: tf.TensorSpec([None, None], tf.string, name=F.HISTORY),
    F.AGE: tf.TensorSpec([None], tf.int64, name=F.AGE),
    F.GENDER: tf.TensorSpec([None], tf.string, name=F.GENDER),
    F.OCCUPATION: tf.TensorSpec([None], tf.string, name=F.OCCUPATION),
}
# An item's raw content: its catalog fields, and the bytes of its image ("" = none), which a
# multimodal model embeds when it does not know the item (`content_graph.py`); other models
# ignore description and image.
IMAGE_BYTES = "image_bytes"
ITEM_SPEC: Dict[str, tf.TensorSpec] = {
    F.ITEM_ID: tf.TensorSpec([None], tf.string, name=F.ITEM_ID),
    F.TITLE: tf.TensorSpec([None], tf.string, name=F.TITLE),
    F.CATEGORIES: tf.TensorSpec([None, None], tf.string, name=F.CATEGORIES),
    F.YEAR: tf.TensorSpec([None], tf.int64, name=F.YEAR),
    F.DESCRIPTION: tf.TensorSpec([None], tf.string, name=F.DESCRIPTION),
    IMAGE_BYTES: tf.TensorSpec([None], tf.string, name=IMAGE_BYTES),
}
KNOWN_SPEC: Dict[str, tf.TensorSpec] = {F.ITEM_ID: ITEM_SPEC[F.ITEM_ID]}
# Outputs of `serving_default` (and of the popularity baseline's), of the embedding signatures,
# and of `known_items` (whether each item is among the candidates the model retrieves from).
ITEM_IDS, SCORES, EMBEDDING, KNOWN = "item_ids", "scores", "embedding", "known"


def _column(spec: tf.TensorSpec, values: List[object]) -> np.ndarray:
  blank = "" if spec.dtype == tf.string else 0
  dtype = object if spec.dtype == tf.string else spec.dtype.as_numpy_dtype
  if spec.shape.rank == 2:
    rows = [list(v) if v is not None else [] for v in values]
    width = max([len(row) for row in rows] + [1])
    return np.array([[blank if x is None else x for x in row] + [blank] * (width - len(row))
                     for row in rows], dtype=dtype)
  return np.array([v or blank for v in values], dtype=dtype)


def build_inputs(spec: Mapping[str, tf.TensorSpec], rows: Sequence[Mapping[str, object]]
                 ) -> Dict[str, np.ndarray]:
  """One batch of signature inputs, a column per spec entry, from rows keyed by feature name."""
  if not rows:
    raise ValueError("a request needs at least one row")
  return {name: _column(tensor_spec, [row.get(name) for row in rows])
          for name, tensor_spec in spec.items()}


def query_inputs(rows: Sequence[Mapping[str, object]]) -> Dict[str, np.ndarray]:
  """Inputs of `serving_default` and `query_embedding` (user id, history, profile)."""
  return build_inputs(QUERY_SPEC, rows)


def item_inputs(rows: Sequence[Mapping[str, object]]) -> Dict[str, np.ndarray]:
  """Inputs of `item_embeddings`, from contract catalog rows (item_id, title, categories, year,
  description) and, where a row has it, `image_bytes`."""
  return build_inputs(ITEM_SPEC, rows)


def as_tensors(inputs: Mapping[str, np.ndarray]) -> Dict[str, tf.Tensor]:
  """The same inputs for an in-process call of a loaded signature (`model.signatures[...]`)."""
  return {name: tf.constant(value) for name, value in inputs.items()}


def retrieved(item_ids: np.ndarray, scores: np.ndarray, depth: int) -> List[Tuple[str, float]]:
  """One row of `serving_default`'s answer as (item id, score), excluded items dropped."""
  return [(item.decode() if isinstance(item, bytes) else str(item), float(score))
          for item, score in zip(item_ids[:depth], scores[:depth])
          if score > EXCLUDED_SCORE / 2]
