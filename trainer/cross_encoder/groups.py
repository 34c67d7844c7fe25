"""The cross-encoder's training and evaluation records: one tf.Example per query group.

A group is one search query (logged, or synthetic) with its candidates: the item the user chose, the retriever's top candidates and random items, each
with its text, its relevance label and the retriever's score (the baseline order). Written by
the mining component, read by the trainer, the model's `evaluation` signature and TFMA.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Sequence

import tensorflow as tf

QUERY_ID = "query_id"
QUERY = "query"
QUERY_KIND = "query_kind"
ITEM_IDS = "item_ids"
ITEM_TEXTS = "item_texts"
LABELS = "labels"
RETRIEVER_SCORES = "retriever_scores"

# Query kinds (a TFMA slice): a logged search, a generated search.
SEARCH = "search"
SYNTHETIC_SEARCH = "synthetic_search"

# Splits of the mined groups: `validation` (from training-period interactions) drives early
# stopping; `eval` (the later interactions) is only for TFMA and the blessing.
TRAIN, VALIDATION, EVAL = "train", "validation", "eval"
SPLITS = (TRAIN, VALIDATION, EVAL)
# Scores [groups, candidates] of a batch of groups are padded past each group's end with this.
PADDING_SCORE = -1e9


@dataclasses.dataclass
class Group:
  query_id: str
  query: str
  kind: str
  item_ids: List[str]
  item_texts: List[str]
  labels: List[float]
  retriever_scores: List[float]

  def to_example(self) -> bytes:
    def strings(values: Sequence[str]) -> tf.train.Feature:
      return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode() for v in values]))

    def floats(values: Sequence[float]) -> tf.train.Feature:
      return tf.train.Feature(float_list=tf.train.FloatList(value=values))

    return tf.train.Example(features=tf.train.Features(feature={
        QUERY_ID: strings([self.query_id]), QUERY: strings([self.query]),
        QUERY_KIND: strings([self.kind]), ITEM_IDS: strings(self.item_ids),
        ITEM_TEXTS: strings(self.item_texts), LABELS: floats(self.labels),
        RETRIEVER_SCORES: floats(self.retriever_scores)})).SerializeToString()


def feature_spec() -> Dict[str, tf.io.VarLenFeature | tf.io.FixedLenFeature]:
  """Candidate lists are variable-length: groups of a split may differ in size."""
  return {QUERY_ID: tf.io.FixedLenFeature([], tf.string),
          QUERY: tf.io.FixedLenFeature([], tf.string),
          QUERY_KIND: tf.io.FixedLenFeature([], tf.string),
          ITEM_IDS: tf.io.VarLenFeature(tf.string),
          ITEM_TEXTS: tf.io.VarLenFeature(tf.string),
          LABELS: tf.io.VarLenFeature(tf.float32),
          RETRIEVER_SCORES: tf.io.VarLenFeature(tf.float32)}


def parse_groups(serialized: tf.Tensor) -> Dict[str, tf.Tensor | tf.RaggedTensor]:
  """Serialized groups [B] -> scalars [B] and ragged candidate lists [B, (G)]."""
  parsed = tf.io.parse_example(serialized, feature_spec())
  return {name: (tf.RaggedTensor.from_sparse(value) if isinstance(value, tf.SparseTensor)
                 else value) for name, value in parsed.items()}
