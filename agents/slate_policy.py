"""The servable policy: a context and a candidate set in, a slate with propensities out.

How a slate of k items is chosen: the agent's TF-Agents policy scores every candidate (the upper
confidence bound for LinUCB and NeuralLinUCB, the predicted reward for epsilon-greedy). With
probability 1 - epsilon the slate is the k best-scoring candidates in score order; with
probability epsilon it is k distinct candidates in uniformly random order.

What a propensity means: for the item shown at position p, the probability that this policy puts
that item at position p given this context and candidate set (n real candidates):

    (1 - epsilon) * [item is the p-th best] + epsilon / n

For every position these probabilities sum to one over the candidates, and every candidate gets
at least epsilon / n, so a later log of this policy can judge any other policy off-policy. This is
the position-wise propensity of the Open Bandit Dataset and of obp's estimators (`position`,
`action_dist[:, :, position]`). When n < k, positions from n on are empty ("" with propensity 0).

Why a tf.Module and not TF-Agents' PolicySaver: PolicySaver exports `action(time_step)` for one
arm index over a fixed arm count, without item ids or propensities; this module wraps the same
TF-Agents policy object (its variables are saved with it) and adds the slate and the ids.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Mapping

import tensorflow as tf
from tf_agents.policies import tf_policy
from tf_agents.specs import bandit_spec_utils
from tf_agents.trajectories import time_step as ts

POLICY_SPEC_FILE = os.path.join("assets.extra", "policy_spec.json")


class SlatePolicy(tf.Module):
  """Epsilon-mixed greedy slates over a per-arm TF-Agents policy's candidate scores."""

  def __init__(self, policy: tf_policy.TFPolicy, score_field: str, slate_size: int,
               epsilon: float):
    super().__init__()
    if not 0.0 < epsilon <= 1.0:
      raise ValueError(f"epsilon must be in (0, 1] so every candidate keeps a positive "
                       f"propensity, got {epsilon}")
    if slate_size < 1:
      raise ValueError(f"slate_size must be positive, got {slate_size}")
    observation = policy.time_step_spec.observation
    arm_spec = observation[bandit_spec_utils.PER_ARM_FEATURE_KEY]
    self.policy = policy
    self.max_candidates = int(arm_spec.shape[0])
    self.arm_dim = int(arm_spec.shape[1])
    self.global_dim = int(observation[bandit_spec_utils.GLOBAL_FEATURE_KEY].shape[0])
    self.slate_size = slate_size
    self.epsilon = epsilon
    self._score_field = score_field

  def _pad(self, tensor: tf.Tensor, value: Any) -> tf.Tensor:
    """Pads axis 1 (candidates) up to the policy's fixed width."""
    width = tf.shape(tensor)[1]
    tf.debugging.assert_less_equal(width, self.max_candidates,
                                   message="more candidates than the policy was built for")
    paddings = [[0, 0], [0, self.max_candidates - width]] + [[0, 0]] * (tensor.shape.rank - 2)
    return tf.pad(tensor, paddings, constant_values=value)

  def _scores(self, context: tf.Tensor, arm_features: tf.Tensor, num_candidates: tf.Tensor
              ) -> tf.Tensor:
    """[B, max_candidates] ranking scores, -inf beyond each row's candidates."""
    tf.debugging.assert_less_equal(num_candidates, tf.shape(arm_features)[1],
                                   message="num_candidates exceeds the candidates given")
    observation = {
        bandit_spec_utils.GLOBAL_FEATURE_KEY: tf.ensure_shape(context, [None, self.global_dim]),
        bandit_spec_utils.PER_ARM_FEATURE_KEY: tf.ensure_shape(
            self._pad(arm_features, 0.0), [None, self.max_candidates, self.arm_dim]),
        bandit_spec_utils.NUM_ACTIONS_FEATURE_KEY: num_candidates,
    }
    step = ts.restart(observation, batch_size=tf.shape(context)[:1])
    scores = getattr(self.policy.action(step).info, self._score_field)
    valid = tf.sequence_mask(num_candidates, self.max_candidates)
    return tf.where(valid, scores, tf.constant(-float("inf")))

  def _position_probabilities(self, scores: tf.Tensor, num_candidates: tf.Tensor
                              ) -> tf.Tensor:
    """[B, k, max_candidates]: P(candidate at position p), the docstring's formula."""
    greedy = tf.math.top_k(scores, self.slate_size).indices
    valid = tf.cast(tf.sequence_mask(num_candidates, self.max_candidates), tf.float32)
    uniform = valid / tf.maximum(tf.cast(num_candidates, tf.float32), 1.0)[:, tf.newaxis]
    probabilities = ((1.0 - self.epsilon) * tf.one_hot(greedy, self.max_candidates)
                     + self.epsilon * uniform[:, tf.newaxis, :])
    filled = tf.sequence_mask(num_candidates, self.slate_size, dtype=tf.float32)
    return probabilities * filled[:, :, tf.newaxis]

  @tf.function(input_signature=[
      tf.TensorSpec([None, None], tf.float32, name="context"),
      tf.TensorSpec([None, None, None], tf.float32, name="arm_features"),
      tf.TensorSpec([None], tf.int32, name="num_candidates")])
  def position_probabilities(self, context: tf.Tensor, arm_features: tf.Tensor,
                             num_candidates: tf.Tensor) -> Dict[str, tf.Tensor]:
    """{"probabilities": [B, k, N]}: the whole distribution, what off-policy evaluation needs."""
    scores = self._scores(context, arm_features, num_candidates)
    probabilities = self._position_probabilities(scores, num_candidates)
    return {"probabilities": probabilities[:, :, :tf.shape(arm_features)[1]]}

  def select(self, context: tf.Tensor, arm_features: tf.Tensor, candidate_ids: tf.Tensor,
             num_candidates: tf.Tensor) -> Dict[str, tf.Tensor]:
    """Samples a slate: item_ids [B, k], their propensities [B, k] and scores [B, k]."""
    scores = self._scores(context, arm_features, num_candidates)
    probabilities = self._position_probabilities(scores, num_candidates)
    batch = tf.shape(scores)[0]
    valid = tf.sequence_mask(num_candidates, self.max_candidates)
    random_keys = tf.where(valid, tf.random.uniform([batch, self.max_candidates]), -1.0)
    explore = tf.random.uniform([batch]) < self.epsilon
    slate = tf.where(explore[:, tf.newaxis], tf.math.top_k(random_keys, self.slate_size).indices,
                     tf.math.top_k(scores, self.slate_size).indices)
    filled = tf.sequence_mask(num_candidates, self.slate_size)
    ids = tf.gather(self._pad(candidate_ids, ""), slate, batch_dims=1)
    return {
        "item_ids": tf.where(filled, ids, ""),
        "propensities": tf.gather(probabilities, slate[:, :, tf.newaxis], batch_dims=2)[:, :, 0],
        "scores": tf.where(filled, tf.gather(scores, slate, batch_dims=1), 0.0),
    }


  def serving_signature(self) -> tf.types.experimental.ConcreteFunction:
    """`select` with the policy's widths in its input shapes (context [B, G], arm_features
    [B, N, A], candidate_ids [B, N]): what a caller reads from the model's metadata to build its
    requests, so a policy exported with another width or feature layout needs no change of
    serving code (fewer real candidates are padded; `num_candidates` says how many are real)."""
    return tf.function(self.select).get_concrete_function(
        tf.TensorSpec([None, self.global_dim], tf.float32, name="context"),
        tf.TensorSpec([None, self.max_candidates, self.arm_dim], tf.float32,
                      name="arm_features"),
        tf.TensorSpec([None, self.max_candidates], tf.string, name="candidate_ids"),
        tf.TensorSpec([None], tf.int32, name="num_candidates"))


def export_slate_policy(policy: SlatePolicy, export_dir: str, spec: Mapping[str, Any]) -> None:
  """Writes the SavedModel (`serving_default` = select, plus `position_probabilities`) and
  `assets.extra/policy_spec.json` (the feature layout and settings `spec` describes)."""
  tf.saved_model.save(policy, export_dir, signatures={
      "serving_default": policy.serving_signature(),
      "position_probabilities": policy.position_probabilities})
  path = os.path.join(export_dir, POLICY_SPEC_FILE)
  tf.io.gfile.makedirs(os.path.dirname(path))
  with tf.io.gfile.GFile(path, "w") as f:
    json.dump(dict(spec, global_dim=policy.global_dim, arm_dim=policy.arm_dim,
                   max_candidates=policy.max_candidates, slate_size=policy.slate_size,
                   epsilon=policy.epsilon), f, indent=2, sort_keys=True)
