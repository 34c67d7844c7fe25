"""The ranker's lists: one tf.Example per candidate list (a user and a held-out fold), with
every candidate's features, its label and how many items the fold held out.

Written by the list miner; the ranker trainer reads the `train` and `validation` splits, the
ranker's evaluator the `gate` split. `relevant` counts every held-out item, also those no
source found, so metrics measure recall against what the user chose. A gate list also carries
what the evaluator compares the ranker with: the held-out ids, each source's own ranking
(`ranked_<source>`, its top-N with the history removed) and the user's slice features.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Sequence

import numpy as np
import tensorflow as tf

from pipeline.data.examples import encode_example
from trainer.ranker.signature import CANDIDATE_IDS

LIST_ID = "list_id"
FEATURES = "features"
MASK = "mask"
LABELS = "labels"
RELEVANT = "relevant"
RELEVANT_IDS = "relevant_ids"
RANKED_PREFIX = "ranked_"
# Splits of the mined lists, by a hash share of the users: `validation` stops training early
# and chooses the ensemble; `gate` is never trained on and decides the blessings.
TRAIN, VALIDATION, GATE = "train", "validation", "gate"
SPLITS = (TRAIN, VALIDATION, GATE)


@dataclasses.dataclass
class CandidateList:
  list_id: str
  candidate_ids: List[str]
  features: np.ndarray  # [C, F] float32
  labels: np.ndarray    # [C] float32, 1 = held out and chosen
  relevant: int         # items the fold held out for this user
  # Gate lists only: the held-out ids, {source: its ranked ids}, {slice feature: value}.
  relevant_ids: List[str] = dataclasses.field(default_factory=list)
  rankings: Dict[str, List[str]] = dataclasses.field(default_factory=dict)
  slices: Dict[str, str] = dataclasses.field(default_factory=dict)

  def to_example(self) -> bytes:
    return encode_example({
        LIST_ID: self.list_id, CANDIDATE_IDS: list(self.candidate_ids),
        FEATURES: np.ravel(self.features).astype(float).tolist(),
        LABELS: np.asarray(self.labels, float).tolist(), RELEVANT: int(self.relevant),
        RELEVANT_IDS: list(self.relevant_ids),
        **{RANKED_PREFIX + source: list(ids) for source, ids in self.rankings.items()},
        **self.slices})


def list_dataset(files: Sequence[str], n_features: int) -> tf.data.Dataset:
  """One element per list: ({features [C, F], mask [C]}, labels [C], relevant []), streamed
  from the files (never all lists in memory); batch with `padded_batch`."""
  spec = {CANDIDATE_IDS: tf.io.VarLenFeature(tf.string),
          FEATURES: tf.io.VarLenFeature(tf.float32), LABELS: tf.io.VarLenFeature(tf.float32),
          RELEVANT: tf.io.FixedLenFeature([], tf.int64)}

  def parse(record: tf.Tensor):
    parsed = tf.io.parse_single_example(record, spec)
    labels = tf.sparse.to_dense(parsed[LABELS])
    features = tf.reshape(tf.sparse.to_dense(parsed[FEATURES]), [-1, n_features])
    return ({FEATURES: features, MASK: tf.ones_like(labels, tf.bool)}, labels,
            tf.cast(parsed[RELEVANT], tf.float32))

  return tf.data.TFRecordDataset(list(files), compression_type="GZIP").map(
      parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
