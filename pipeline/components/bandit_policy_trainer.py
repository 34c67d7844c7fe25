"""BanditPolicyTrainer: the pipeline component that trains, judges and blesses the slate policy.

Outputs a Model whose SavedModel is under `<uri>/Format-Serving` (pushable with
`pipeline.components.serving_pusher.serving_root_pusher`), a ModelBlessing written as TFX's
Evaluator writes it (so the Pusher and the latest-blessed resolver read it), and a
ModelEvaluation holding `bandit_ope.json` and `bandit_ope.html`. The defaults are those of the
settings dataclasses (`AgentConfig`, `OffPolicySettings`, `BanditTrainerSettings`).
"""
import json
import os

import tensorflow as tf
from tfx import v1 as tfx
from tfx.types import standard_artifacts

from agents.bandit_agents import AgentConfig
from agents.policy_trainer import REPORT_JSON, BanditTrainerSettings, train_bandit_policy
from agents.training import OffPolicySettings
from pipeline.components.artifacts import serving_model_dir
from pipeline.evaluation.blessing import is_blessed, write_blessing


@tfx.dsl.components.component
def BanditPolicyTrainer(  # pylint: disable=invalid-name
    examples: tfx.dsl.components.InputArtifact[standard_artifacts.Examples],
    retrieval_model: tfx.dsl.components.InputArtifact[standard_artifacts.Model],
    model: tfx.dsl.components.OutputArtifact[standard_artifacts.Model],
    blessing: tfx.dsl.components.OutputArtifact[standard_artifacts.ModelBlessing],
    evaluation: tfx.dsl.components.OutputArtifact[standard_artifacts.ModelEvaluation],
    data_root: tfx.dsl.components.Parameter[str],
    retrieval_blessing: tfx.dsl.components.InputArtifact[
        standard_artifacts.ModelBlessing] = None,
    agent: tfx.dsl.components.Parameter[str] = AgentConfig.name,
    slate_size: tfx.dsl.components.Parameter[int] = OffPolicySettings.slate_size,
    max_candidates: tfx.dsl.components.Parameter[int] = BanditTrainerSettings.max_candidates,
    epsilon: tfx.dsl.components.Parameter[float] = OffPolicySettings.epsilon,
    holdout_fraction: tfx.dsl.components.Parameter[float] = OffPolicySettings.holdout_fraction,
    epochs: tfx.dsl.components.Parameter[int] = OffPolicySettings.epochs,
    gate_estimator: tfx.dsl.components.Parameter[str] = BanditTrainerSettings.gate_estimator,
    tolerance: tfx.dsl.components.Parameter[float] = BanditTrainerSettings.tolerance,
    min_positive_rewards: tfx.dsl.components.Parameter[int] = (
        BanditTrainerSettings.min_positive_rewards),
    confidence: tfx.dsl.components.Parameter[float] = OffPolicySettings.confidence,
    n_bootstrap: tfx.dsl.components.Parameter[int] = OffPolicySettings.n_bootstrap,
    invalid_rows: tfx.dsl.components.Parameter[str] = BanditTrainerSettings.invalid_rows,
    seed: tfx.dsl.components.Parameter[int] = OffPolicySettings.seed,
) -> None:
  """Trains the slate policy from logged (or, without impressions, SIMULATED) feedback, runs the
  off-policy evaluation on held-out requests and blesses only when it is confidently no worse.

  The policy's features are the retrieval model's embeddings: with a `retrieval_blessing` that
  says not blessed, that model never reaches serving, so no policy is trained for it.
  """
  if retrieval_blessing is not None and not is_blessed(retrieval_blessing):
    tf.io.gfile.makedirs(evaluation.uri)
    with tf.io.gfile.GFile(os.path.join(evaluation.uri, REPORT_JSON), "w") as f:
      json.dump({"blessing": {"blessed": False, "reason": "the retrieval model of this run was "
                              "not blessed; the current policy stays"}}, f, indent=2)
    write_blessing(blessing, model, False)
    return
  settings = BanditTrainerSettings(
      agent=AgentConfig(name=agent, seed=seed),
      training=OffPolicySettings(slate_size=slate_size, epsilon=epsilon,
                                holdout_fraction=holdout_fraction, epochs=epochs,
                                confidence=confidence, n_bootstrap=n_bootstrap, seed=seed),
      max_candidates=max_candidates, gate_estimator=gate_estimator, tolerance=tolerance,
      min_positive_rewards=min_positive_rewards, invalid_rows=invalid_rows)
  report = train_bandit_policy(examples.uri, serving_model_dir(retrieval_model), data_root,
                               settings, serving_model_dir(model), evaluation.uri)
  write_blessing(blessing, model, report["blessing"]["blessed"])
