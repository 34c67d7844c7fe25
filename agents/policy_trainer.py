"""What the pipeline's BanditPolicyTrainer does, as a plain function (the component wraps it).

1. Logged feedback: impressions under `<data_root>/interactions` if there are any (real logs);
   otherwise a SIMULATED uniform-random log over the eval split (MovieLens has no impressions),
   labelled as such everywhere it is reported.
2. Train the agent on the older 1 - holdout_fraction of requests, export its slate policy.
3. Off-policy evaluation on the newer requests; blessing by `agents.ope.blessing_decision`.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, Optional

import numpy as np
import tensorflow as tf

from agents import ope
from agents.bandit_agents import AgentConfig
from agents.features import DEFAULT_SCORE_NAMES, arm_feature_names
from agents.logged_impressions import has_impressions, load_feedback
from agents.report import report_html, table_dict, table_text
from agents.retrieval_features import RetrievalFeaturizer
from agents.simulated_logs import simulate_uniform_logging
from agents.slate_policy import export_slate_policy
from agents.training import OffPolicySettings, Outcome, train_and_evaluate
from pipeline.data import contract
from pipeline.data.parsing import read_table

REPORT_JSON = "bandit_ope.json"
REPORT_HTML = "bandit_ope.html"

SIMULATED_DESCRIPTION = (
    "no impressions under the data root, so the log is simulated: requests are the eval-split "
    "interactions, a uniform-random logging policy shows {k} of the retrieval model's top "
    "{n} candidates (propensity 1/n per position), and clicks are drawn with probability "
    "(U S V^T)/max rating from a rank-{rank} SVD of the examples' ratings. The policy, the "
    "estimators and the blessing rule are real; the feedback is not.")
LOGGED_DESCRIPTION = ("impression and click rows of the serving feedback log under {root}; "
                      "{unmatched} positive events with a request_id match no impression and "
                      "were ignored")


@dataclasses.dataclass(frozen=True)
class BanditTrainerSettings:
  agent: AgentConfig = AgentConfig()
  training: OffPolicySettings = OffPolicySettings()
  max_candidates: int = 20          # retrieval candidates per request
  gate_estimator: str = ope.DR
  tolerance: float = 0.0            # bless if lower bound of (policy - logging) > -tolerance
  min_positive_rewards: int = 100   # fewer held-out positive rewards: too few to tell
  invalid_rows: str = "reject"      # or "skip" (drop and count)
  simulation_rank: int = 20


def _simulated_truth(outcome: Outcome, click_probabilities: np.ndarray,
                     num_candidates: np.ndarray) -> Dict[str, float]:
  """True values over the held-out rows, computable only because the clicks are simulated: the
  policy's expected click rate at each row's position, and the uniform logging policy's."""
  inputs = outcome.inputs
  rows = np.arange(len(inputs.reward))
  probabilities = click_probabilities[outcome.held_out_requests]            # [n, N]
  policy = np.sum(inputs.action_dist[rows, :, inputs.position] * probabilities, axis=1)
  logging = np.sum(probabilities, axis=1) / num_candidates[outcome.held_out_requests]
  return {"policy": float(policy.mean()), "logging": float(logging.mean()),
          "lift": float(policy.mean() - logging.mean())}


def train_bandit_policy(examples_uri: str, retrieval_model_dir: str, data_root: str,
                        settings: BanditTrainerSettings, export_dir: str,
                        report_dir: str) -> Dict[str, Any]:
  """Trains, evaluates and exports; writes the reports; returns the report (with the blessing)."""
  items = {row["item_id"]: row for row in read_table(data_root, contract.ITEMS)}
  featurizer = RetrievalFeaturizer(retrieval_model_dir, items)
  interactions = list(read_table(data_root, contract.INTERACTIONS))
  training = settings.training
  click_probabilities: Optional[np.ndarray] = None
  if has_impressions(interactions):
    feedback = load_feedback(data_root, interactions, featurizer, settings.max_candidates,
                             settings.invalid_rows)
    data, validation = feedback.data, feedback.validation
    description = LOGGED_DESCRIPTION.format(root=data_root,
                                            unmatched=feedback.unmatched_positive_events)
  else:
    data, click_probabilities, validation = simulate_uniform_logging(
        examples_uri, featurizer, training.slate_size, settings.max_candidates,
        settings.simulation_rank, training.seed, settings.invalid_rows)
    description = SIMULATED_DESCRIPTION.format(k=training.slate_size, n=settings.max_candidates,
                                               rank=settings.simulation_rank)

  outcome = train_and_evaluate(settings.agent, data, training)
  blessed, reason = ope.blessing_decision(outcome.table, settings.gate_estimator,
                                          settings.tolerance, settings.min_positive_rewards)
  embedding_dim = data.global_dim
  export_slate_policy(outcome.policy, export_dir, {
      "agent": dataclasses.asdict(settings.agent),
      "context_features": [f"query_embedding_{i}" for i in range(embedding_dim)],
      "arm_features": arm_feature_names(embedding_dim, True, DEFAULT_SCORE_NAMES),
      "retrieval_model": retrieval_model_dir,
      "simulated_training_data": data.simulated,
  })
  report: Dict[str, Any] = {
      "data": {"simulated": data.simulated, "description": description,
               "requests": len(data.timestamp), "rows": data.n_rows,
               "held_out_rows": outcome.table.n_rows,
               "held_out_rows_beyond_slate": outcome.rows_beyond_slate,
               "validation": validation.summary(), "invalid_rows_policy": settings.invalid_rows,
               "validation_problems": validation.problems},
      "agent": dataclasses.asdict(settings.agent),
      "training": {**dataclasses.asdict(outcome.training),
                   "steps_per_second": outcome.training.steps_per_second,
                   **dataclasses.asdict(training)},
      "ope": table_dict(outcome.table),
      "blessing": {"blessed": blessed, "reason": reason, "gate_estimator": settings.gate_estimator,
                   "tolerance": settings.tolerance,
                   "min_positive_rewards": settings.min_positive_rewards},
  }
  if click_probabilities is not None:
    report["simulated_truth"] = _simulated_truth(outcome, click_probabilities,
                                                 data.num_candidates)
  tf.io.gfile.makedirs(report_dir)
  with tf.io.gfile.GFile(os.path.join(report_dir, REPORT_JSON), "w") as f:
    json.dump(report, f, indent=2, sort_keys=True)
  with tf.io.gfile.GFile(os.path.join(report_dir, REPORT_HTML), "w") as f:
    f.write(report_html(report, outcome.table))
  source = "SIMULATED log" if data.simulated else "logged feedback"
  print(f"Bandit policy ({settings.agent.name}) on {source}:\n{table_text(outcome.table)}\n"
        f"{'BLESSED' if blessed else 'NOT BLESSED'}: {reason}", flush=True)
  return report
