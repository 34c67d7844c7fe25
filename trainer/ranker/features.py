"""The ranker's features of a user's candidates, computed in the graph from the raw request.

One definition for training and serving: the list miner calls it with each fold's sources (fit
without that fold), the exported ranker carries it with the sources fit on the whole training
split. Only the request's raw features, the history's timestamps and the candidate ids go in
(`trainer/ranker/signature.py` REQUEST_SPEC): what the cascade knows of a user.

Why these features (measured on MovieLens-100K, benchmarks/movielens_protocol.py): each source's
view of a candidate as ranks and normalised scores only (a z-score over the user's unseen
catalogue, the score relative to the user's best, the log rank and a top-N flag), never raw
scores, which shift between the fold sources the ranker learns from and the full sources it
serves with; the two-tower's score carries most of the weight; item popularity and recency,
its categories and year, and how the candidate relates to the history (category affinity,
year gap, the closest and mean history item by two-tower embedding and by co-occurrence) and to
when the user was active (the share of the item's interactions inside the user's active
window, its first and mean interaction time against the user's last and mean).
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np
import tensorflow as tf

from trainer.item_to_item.model import ItemToItemTables, NeighbourTable
from trainer.item_to_item.scoring import ScoringTable, history_mask
from trainer.ranker.catalog import DAY, TIME_BINS, ItemCatalog
from trainer.ranker.signature import CANDIDATE_IDS
from trainer.retrieval import signature
from transform import features as F

# Sources scored for every candidate, in column order.
SOURCES: Tuple[str, ...] = ("retrieval", "item_to_item", "knn")
PER_SOURCE = ("z", "relative", "log_rank", "in_top")
_EPS = 1e-6


def category_vocabulary(catalog: ItemCatalog, size: int) -> List[str]:
  """The `size` most frequent categories (by interactions), the one-hot columns."""
  totals: Dict[str, int] = {}
  for categories, count in zip(catalog.categories, catalog.counts):
    for category in categories:
      totals[category] = totals.get(category, 0) + int(count)
  return [c for c, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:size]]


def feature_names(categories: Sequence[str]) -> List[str]:
  """Column names of the feature tensor, in order."""
  names = [f"{source}_{kind}" for source in SOURCES for kind in PER_SOURCE]
  names += ["item_log_share", "item_age_days", "item_mean_days_ago", "item_recent_share",
            "item_year"]
  names += [f"category={c}" for c in categories]
  return names + ["category_affinity", "year_gap", "history_max_cosine",
                  "history_mean_cosine", "history_max_cooccurrence", "user_log_history",
                  "item_share_in_user_window", "item_first_minus_user_last_days",
                  "item_mean_minus_user_mean_days", "user_span_days"]


def _reindexed(table: NeighbourTable, from_ids: Sequence[str], to_index: Dict[str, int]
               ) -> Tuple[np.ndarray, np.ndarray]:
  """A neighbour table over another catalog order; neighbours outside it are dropped."""
  mapping = np.array([to_index.get(i, -1) for i in from_ids] + [-1], np.int64)
  rows = np.full((len(to_index), table.neighbours.shape[1]), -1, np.int64)
  weights = np.zeros((len(to_index), table.neighbours.shape[1]), np.float32)
  for source_row, item in enumerate(from_ids):
    row = to_index.get(item, -1)
    if row >= 0:
      neighbours = mapping[table.neighbours[source_row]]  # -1 stays -1 (the last entry)
      rows[row] = neighbours
      weights[row] = np.where(neighbours >= 0, table.weights[source_row], 0.0)
  return rows, weights


def capped_rank(scores: tf.Tensor, candidates: tf.Tensor, cap: int) -> tf.Tensor:
  """Each candidate's rank (1 = best) in its user's catalogue scores [B, n], capped at
  `cap` + 1 (all the features use): its place among the first cap + 1, where top_k orders
  ties by index as a stable sort does, else cap + 1. The same values as ranking the whole
  catalogue by two sorts, at a fifth of the CPU."""
  depth = tf.minimum(cap + 1, tf.shape(scores)[1])
  top = tf.math.top_k(scores, depth).indices                            # [B, depth]
  match = tf.equal(tf.cast(candidates, tf.int32)[:, :, tf.newaxis], top[:, tf.newaxis, :])
  place = tf.cast(tf.argmax(tf.cast(match, tf.int32), axis=2), tf.float32) + 1.0
  return tf.where(tf.reduce_any(match, axis=2), place, float(cap + 1))


class RankingFeatures(tf.Module):
  """Raw request with candidate ids [B, C] -> (features [B, C, F] float32, valid [B, C],
  {source: raw score [B, C]})."""

  def __init__(self, catalog: ItemCatalog, retrieval_model, tables: ItemToItemTables,
               categories: Sequence[str], candidates_per_source: int):
    super().__init__()
    index = {item: i for i, item in enumerate(catalog.item_ids)}
    n = len(index)
    self.n_items = n
    self.retrieval_model = retrieval_model
    self.lookup = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
        tf.constant(catalog.item_ids), tf.range(n, dtype=tf.int64)), default_value=-1)
    rows = catalog.rows()
    embeddings = np.concatenate([
        retrieval_model.signatures["item_embeddings"](**signature.as_tensors(
            signature.item_inputs(rows[start:start + 512])))[signature.EMBEDDING].numpy()
        for start in range(0, n, 512)])
    self.embeddings = tf.constant(embeddings, tf.float32)
    self.unit_embeddings = tf.math.l2_normalize(self.embeddings, axis=1)
    self.ease = ScoringTable(*_reindexed(tables.ease, tables.item_ids, index))
    self.cosine = ScoringTable(*_reindexed(tables.cosine, tables.item_ids, index))
    position = {c: j for j, c in enumerate(categories)}
    one_hot = np.zeros((n, len(categories)), np.float32)
    for i, item_categories in enumerate(catalog.categories):
      for category in item_categories:
        if category in position:
          one_hot[i, position[category]] = 1.0
    self.categories = tf.constant(one_hot)
    total = max(int(catalog.counts.sum()), 1)
    years = catalog.years.astype(np.float32)
    self.years = tf.constant(years)
    self.known_year = tf.constant((years > 0).astype(np.float32))
    self.item_features = tf.constant(np.stack([
        np.log((catalog.counts + 1.0) / total),
        (catalog.now - catalog.first_seen) / DAY,
        (catalog.now - catalog.mean_time) / DAY,
        catalog.recent_counts() / np.maximum(catalog.counts, 1),
        years], axis=1).astype(np.float32))
    # Cumulative time histograms [n, TIME_BINS + 1], so a window's count is a difference.
    self.cumulative = tf.constant(np.concatenate(
        [np.zeros((n, 1)), np.cumsum(catalog.histogram, axis=1)], axis=1).astype(np.float32))
    self.counts = tf.constant(np.maximum(catalog.counts, 1).astype(np.float32))
    self.first_seen = tf.constant(catalog.first_seen.astype(np.float64))
    self.mean_time = tf.constant(catalog.mean_time.astype(np.float64))
    self.span = (float(catalog.span[0]), float(max(catalog.span[1] - catalog.span[0], 1)))
    self.top_n = float(candidates_per_source)
    self.names = feature_names(categories)

  def _source_features(self, scores: tf.Tensor, seen: tf.Tensor, candidates: tf.Tensor
                       ) -> List[tf.Tensor]:
    """Each candidate's z-score over the unseen catalogue, its score relative to the user's
    best, log rank (capped at N + 1) and top-N flag; [B, C] each."""
    unseen = 1.0 - seen
    count = tf.maximum(tf.reduce_sum(unseen, axis=1, keepdims=True), 1.0)
    mean = tf.reduce_sum(scores * unseen, axis=1, keepdims=True) / count
    std = tf.sqrt(tf.reduce_sum(tf.square(scores - mean) * unseen, axis=1, keepdims=True)
                  / count) + _EPS
    masked = tf.where(seen > 0, tf.fill(tf.shape(scores), -np.inf), scores)
    best = tf.reduce_max(masked, axis=1, keepdims=True)
    score = tf.gather(scores, candidates, batch_dims=1)
    rank = capped_rank(masked, candidates, int(self.top_n))
    return [(score - mean) / std, score / (tf.abs(best) + _EPS),
            tf.math.log(tf.minimum(rank, self.top_n + 1.0)),
            tf.cast(rank <= self.top_n, tf.float32)]

  def _time_features(self, times: tf.Tensor, known: tf.Tensor, candidates: tf.Tensor
                     ) -> List[tf.Tensor]:
    """The candidate against when the user was active (their history's known timestamps):
    [B, C] each; 0 where the request carries no timestamps."""
    known = known & (times > 0)
    seconds = tf.cast(times, tf.float64)
    has_time = tf.reduce_any(known, axis=1, keepdims=True)
    first = tf.reduce_min(tf.where(known, seconds, np.inf), axis=1, keepdims=True)
    last = tf.reduce_max(tf.where(known, seconds, -np.inf), axis=1, keepdims=True)
    mean = (tf.reduce_sum(tf.where(known, seconds, 0.0), axis=1, keepdims=True)
            / tf.maximum(tf.reduce_sum(tf.cast(known, tf.float64), axis=1, keepdims=True), 1.0))
    first, last, mean = (tf.where(has_time, x, 0.0) for x in (first, last, mean))

    def bin_of(t: tf.Tensor) -> tf.Tensor:
      position = (t - self.span[0]) / self.span[1] * TIME_BINS
      return tf.cast(tf.clip_by_value(position, 0, TIME_BINS), tf.int32)

    start, end = bin_of(first - DAY), bin_of(last + DAY) + 1
    cumulative = tf.gather(self.cumulative, candidates)                 # [B, C, BINS + 1]
    width = tf.shape(candidates)[1]
    inside = (tf.gather(cumulative, tf.minimum(tf.tile(end, [1, width]), TIME_BINS),
                        batch_dims=2)
              - tf.gather(cumulative, tf.tile(start, [1, width]), batch_dims=2))
    days = lambda x: tf.cast(x / DAY, tf.float32)  # noqa: E731
    values = [inside / tf.gather(self.counts, candidates),
              days(tf.gather(self.first_seen, candidates) - last),
              days(tf.gather(self.mean_time, candidates) - mean),
              tf.tile(days(last - first), [1, width])]
    return [tf.where(has_time, v, 0.0) for v in values]

  def __call__(self, request: Dict[str, tf.Tensor]
               ) -> Tuple[tf.Tensor, tf.Tensor, Dict[str, tf.Tensor]]:
    """`request`: the REQUEST_SPEC tensors (`trainer/ranker/signature.py`)."""
    history = self.lookup.lookup(request[F.HISTORY])                      # [B, H]
    known = tf.cast(history >= 0, tf.float32)
    n_history = tf.reduce_sum(known, axis=1, keepdims=True)             # [B, 1]
    candidates = self.lookup.lookup(request[CANDIDATE_IDS])                      # [B, C]
    valid = candidates >= 0
    candidates = tf.maximum(candidates, 0)
    seen = history_mask(history, self.n_items)
    query_embedding = self.retrieval_model.signatures["query_embedding"](**{
        name: request[name] for name in signature.QUERY_SPEC})[signature.EMBEDDING]
    scores = {"retrieval": tf.matmul(query_embedding, self.embeddings, transpose_b=True),
              "item_to_item": self.ease.scores(history),
              "knn": self.cosine.scores(history)}
    columns: List[tf.Tensor] = []
    for source in SOURCES:
      columns += self._source_features(scores[source], seen, candidates)
    item = tf.gather(self.item_features, candidates)                    # [B, C, 5]
    categories = tf.gather(self.categories, candidates)                 # [B, C, G]
    history_index = tf.maximum(history, 0)
    weights = known[:, :, tf.newaxis] / tf.maximum(n_history[:, :, tf.newaxis], 1.0)
    user_categories = tf.reduce_sum(tf.gather(self.categories, history_index) * weights, axis=1)
    affinity = (tf.reduce_sum(categories * user_categories[:, tf.newaxis, :], axis=2)
                / tf.maximum(tf.reduce_sum(categories, axis=2), 1.0))
    year_known = tf.gather(self.known_year, history_index) * known
    user_year = (tf.reduce_sum(tf.gather(self.years, history_index) * year_known, axis=1,
                               keepdims=True)
                 / tf.maximum(tf.reduce_sum(year_known, axis=1, keepdims=True), 1.0))
    year_gap = tf.where(tf.gather(self.known_year, candidates) > 0,
                        tf.gather(self.years, candidates) - user_year, 0.0)
    cosine = tf.einsum("bcd,bhd->bch", tf.gather(self.unit_embeddings, candidates),
                       tf.gather(self.unit_embeddings, history_index))
    in_history = known[:, tf.newaxis, :] > 0
    max_cosine = tf.reduce_max(tf.where(in_history, cosine, -1.0), axis=2)
    mean_cosine = (tf.reduce_sum(tf.where(in_history, cosine, 0.0), axis=2)
                   / tf.maximum(n_history, 1.0))
    cooccurrence = tf.gather(self.cosine.max(history), candidates, batch_dims=1)
    user_history = tf.tile(tf.math.log1p(n_history), [1, tf.shape(candidates)[1]])
    times = self._time_features(request[F.HISTORY_TIMESTAMPS], history >= 0, candidates)
    features = tf.concat(
        [tf.stack(columns, axis=2), item, categories,
         tf.stack([affinity, year_gap, tf.where(n_history > 0, max_cosine, 0.0), mean_cosine,
                   cooccurrence, user_history, *times], axis=2)], axis=2)
    raw = {source: tf.where(valid, tf.gather(values, candidates, batch_dims=1), 0.0)
           for source, values in scores.items()}
    return tf.where(valid[:, :, tf.newaxis], features, 0.0), valid, raw
