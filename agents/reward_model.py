"""The doubly robust estimator's reward model: E[reward | context, arm, position].

A linear model over [context, arm features, position one-hot] (logistic for click rewards, ridge
for ratings), fitted on the training rows only, never on the rows it helps to evaluate. Being
linear, its prediction splits into a context part, an arm part and a position part, so the
predictions for every candidate at every position ([R, N, K]) cost one matrix product, not R*N*K
rows.
"""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.preprocessing import StandardScaler

from agents.logged import LoggedFeedback


class RewardModel:
  """Fitted with `fit`, then `predict_all` gives predictions for every candidate and position."""

  def __init__(self, n_positions: int, binary: bool, regularization: float = 1.0):
    self._n_positions = n_positions
    self._binary = binary
    self._regularization = regularization

  def _design(self, contexts: np.ndarray, arms: np.ndarray, positions: np.ndarray) -> np.ndarray:
    return np.concatenate([contexts, arms, np.eye(self._n_positions)[positions]], axis=1)

  def fit(self, data: LoggedFeedback, rows: np.ndarray) -> "RewardModel":
    x = self._design(data.contexts[data.request[rows]], data.shown_arm_features(rows),
                     data.position[rows])
    y = data.reward[rows]
    scaler = StandardScaler().fit(x)
    if self._binary:
      if len(np.unique(y)) < 2:  # one class only: the best constant is the observed rate
        rate = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
        model_coef, intercept = np.zeros(x.shape[1]), float(np.log(rate / (1.0 - rate)))
      else:
        model = LogisticRegression(C=1.0 / self._regularization, max_iter=1000)
        model.fit(scaler.transform(x), y.astype(int))
        model_coef, intercept = model.coef_[0], float(model.intercept_[0])
    else:
      model = Ridge(alpha=self._regularization).fit(scaler.transform(x), y)
      model_coef, intercept = model.coef_, float(model.intercept_)
    # Fold the standardisation into the coefficients: w.(x - mu)/sigma + b = (w/sigma).x + b'.
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    self._coef = model_coef / scale
    self._intercept = intercept - float(np.sum(self._coef * scaler.mean_))
    self._global_dim = data.global_dim
    return self

  def predict_all(self, contexts: np.ndarray, arm_features: np.ndarray) -> np.ndarray:
    """[R, N, n_positions] predicted rewards for every candidate at every position."""
    g, a = self._global_dim, arm_features.shape[-1]
    linear = (contexts @ self._coef[:g])[:, np.newaxis] + arm_features @ self._coef[g:g + a]
    scores = (linear[:, :, np.newaxis] + self._coef[g + a:][np.newaxis, np.newaxis, :]
              + self._intercept)
    return 1.0 / (1.0 + np.exp(-scores)) if self._binary else scores
