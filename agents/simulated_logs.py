"""SIMULATED logged feedback for data without impressions (the MovieLens demo).

MovieLens has ratings, not impressions, so nothing was ever shown with a known propensity. This
module makes that explicit rather than hiding it: each eval-split example becomes a request (the
user as of that interaction), a simulated uniform-random logging policy shows a slate of k of the
retrieval model's candidates (propensity 1/n at every position), and a simulated user clicks an
item with probability (U S V^T)_ui / max rating, from a rank-k SVD of every rating in the
examples (the reward construction of TF-Agents' MovieLens environment, `agents.simulation`). The
click probabilities are returned too, so the true policy value can sit beside the estimates.
"""
from __future__ import annotations

import os
from typing import Dict, Iterator, List, Tuple

import numpy as np
import tensorflow as tf

from agents.logged import LoggedFeedback
from agents.retrieval_features import Request, RetrievalFeaturizer
from agents.simulation import LowRankRatings, Ratings
from agents.validation import BINARY, REJECT, ValidationReport, rating_scale, validate_rows
from pipeline.data.examples import EVAL, SPLITS, decode_example, first
from transform import features as F


def read_examples(examples_uri: str, split: str) -> Iterator[Dict[str, object]]:
  """The ExampleGen's examples of one split, as dicts of the raw features used here."""
  files = tf.io.gfile.glob(os.path.join(examples_uri, f"Split-{split}", "*"))
  for record in tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator():
    decoded = decode_example(record)
    row = {name: first(decoded, name, "") for name in (F.USER_ID, F.ITEM_ID, F.GENDER,
                                                       F.OCCUPATION)}
    yield {**row, F.AGE: first(decoded, F.AGE, 0), F.TIMESTAMP: first(decoded, F.TIMESTAMP, 0),
           F.RATING: first(decoded, F.RATING, None), F.HISTORY: decoded.get(F.HISTORY, [])}


def _ratings(rows: List[Dict[str, object]]) -> Ratings:
  rated = [row for row in rows if row[F.RATING] is not None]
  return Ratings(np.array([r[F.USER_ID] for r in rated]), np.array([r[F.ITEM_ID] for r in rated]),
                 np.array([r[F.RATING] for r in rated], float),
                 np.array([r[F.TIMESTAMP] for r in rated], np.int64))


def click_model(examples_uri: str, rank: int) -> Tuple[LowRankRatings, Dict[str, int],
                                                      Dict[str, int]]:
  """The simulated users' tastes: a rank-k SVD of every rating in both splits."""
  rows = [row for split in SPLITS for row in read_examples(examples_uri, split)]
  ratings = _ratings(rows)
  users, items = np.unique(ratings.user_ids), np.unique(ratings.item_ids)
  model = LowRankRatings(ratings, users, items, rank)
  return model, {u: i for i, u in enumerate(users)}, {m: j for j, m in enumerate(items)}


def simulate_uniform_logging(examples_uri: str, featurizer: RetrievalFeaturizer, slate_size: int,
                             max_candidates: int, rank: int = 20, seed: int = 0,
                             invalid_rows: str = REJECT
                             ) -> Tuple[LoggedFeedback, np.ndarray, ValidationReport]:
  """(SIMULATED log, click probabilities [R, N], validation report) from the eval split."""
  model, user_index, item_index = click_model(examples_uri, rank)
  examples = list(read_examples(examples_uri, EVAL))
  requests = [Request(row[F.USER_ID], row[F.HISTORY], row[F.AGE], row[F.GENDER],
                      row[F.OCCUPATION], row[F.TIMESTAMP]) for row in examples]
  sets = featurizer.candidate_sets(requests, max_candidates)
  users = np.array([user_index.get(r.user_id, -1) for r in requests])
  items = np.vectorize(lambda item: item_index.get(item, -1))(sets.candidate_ids)
  predicted = model.predict(np.maximum(users, 0)[:, np.newaxis], np.maximum(items, 0))
  known = (users[:, np.newaxis] >= 0) & (items >= 0)
  probabilities = np.clip(np.where(known, predicted, 0.0) / rating_scale()[1], 0.0, 1.0)

  rng = np.random.default_rng(seed)
  request, shown, position = [], [], []
  for row, n in enumerate(sets.num_candidates):
    slate = rng.permutation(n)[:slate_size]
    request += [row] * len(slate)
    shown += list(slate)
    position += list(range(len(slate)))
  request, shown = np.array(request), np.array(shown)
  propensity = 1.0 / sets.num_candidates[request]
  reward = (rng.random(len(request)) < probabilities[request, shown]).astype(np.float32)
  keep, report = validate_rows(propensity, reward, np.ones(len(request), bool),
                               np.array(position, float), BINARY, invalid_rows)
  return LoggedFeedback(
      contexts=sets.contexts, arm_features=sets.arm_features, candidate_ids=sets.candidate_ids,
      num_candidates=sets.num_candidates, request=request[keep], shown=shown[keep],
      position=np.array(position)[keep], reward=reward[keep], propensity=propensity[keep],
      timestamp=np.array([r.timestamp for r in requests], np.int64), simulated=True,
  ), probabilities, report
