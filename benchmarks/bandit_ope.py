"""Off-policy evaluation of the learned agents on the Open Bandit Dataset sample; prints JSON.

Real logged feedback: 10,000 rows of a uniform-random policy over 80 items in 3 positions, 38
clicks. Each agent is trained on the older 70% (time order) through `agents.training`, the same
path the pipeline component runs, then its epsilon-mixed slate policy is judged on the newer 30%
with IPS, SNIPS and DR (bootstrap intervals), against the logging policy's observed click rate.
obp's estimators run on exactly the same arrays, as the reference. With about ten clicks in the
held-out part, the intervals are wide and the bootstrap itself is fragile; the numbers say what
the data cannot tell, not that one agent is better.

    python -m benchmarks.bandit_ope [--agents linucb,neural_linucb,neural_epsilon_greedy]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Dict, List

import agents  # noqa: F401  (Keras 2 before TensorFlow)


def parse_args(argv: List[str]) -> argparse.Namespace:
  """Above the imports of the agents (TensorFlow, TF-Agents), so that --help and a bad flag
  answer at once."""
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--agents", default=None,
                      help="comma-separated agents to train and judge (default: all of "
                           "agents.bandit_agents.AGENT_NAMES, as in the usage above)")
  parser.add_argument("--holdout_fraction", type=float, default=0.3,
                      help="the newest share of the log, held out for the estimates (default "
                           "%(default)s)")
  parser.add_argument("--epsilon", type=float, default=0.1,
                      help="exploration of the judged slate policy: every propensity is at "
                           "least epsilon / candidates (default %(default)s)")
  parser.add_argument("--epochs", type=int, default=3,
                      help="passes of the neural agents over the training rows (default "
                           "%(default)s)")
  parser.add_argument("--n_bootstrap", type=int, default=2000,
                      help="bootstrap resamples per interval (default %(default)s)")
  parser.add_argument("--confidence", type=float, default=0.95,
                      help="confidence level of the intervals (default %(default)s)")
  parser.add_argument("--seed", type=int, default=0,
                      help="seed of the agents and of the bootstrap (default %(default)s)")
  return parser.parse_args(argv)


if __name__ == "__main__":
  parse_args(sys.argv[1:])

from agents import ope  # noqa: E402
from agents.bandit_agents import AGENT_NAMES, AgentConfig  # noqa: E402
from agents.open_bandit import load_open_bandit  # noqa: E402
from agents.report import table_dict  # noqa: E402
from agents.training import OffPolicySettings, train_and_evaluate  # noqa: E402


def obp_estimates(inputs: ope.OPEInputs, confidence: float, n_bootstrap: int, seed: int
                  ) -> Dict[str, Dict[str, float]]:
  """obp's IPW, SNIPW and DR (value and bootstrap interval) on the same arrays."""
  from obp.ope import (DoublyRobust, InverseProbabilityWeighting,
                       SelfNormalizedInverseProbabilityWeighting)
  estimators = {ope.IPS: InverseProbabilityWeighting(),
                ope.SNIPS: SelfNormalizedInverseProbabilityWeighting(), ope.DR: DoublyRobust()}
  common = dict(reward=inputs.reward, action=inputs.action, position=inputs.position,
                pscore=inputs.pscore, action_dist=inputs.action_dist)
  alpha = 1.0 - confidence
  result = {}
  for name, estimator in estimators.items():
    extra = {"estimated_rewards_by_reg_model": inputs.estimated_rewards} if name == ope.DR else {}
    interval = estimator.estimate_interval(**common, **extra, alpha=alpha,
                                           n_bootstrap_samples=n_bootstrap, random_state=seed)
    label = f"{100 * (1. - alpha)}% CI"
    result[name] = {"value": float(estimator.estimate_policy_value(**common, **extra)),
                    "lower": float(interval[f"{label} (lower)"]),
                    "upper": float(interval[f"{label} (upper)"])}
  return result


def main(argv: List[str]) -> int:
  args = parse_args(argv)
  data, validation = load_open_bandit()
  settings = OffPolicySettings(slate_size=3, epsilon=args.epsilon,
                              holdout_fraction=args.holdout_fraction, epochs=args.epochs,
                              confidence=args.confidence, n_bootstrap=args.n_bootstrap,
                              seed=args.seed)
  train_rows, held_out = data.split_by_time(args.holdout_fraction)
  result: Dict[str, object] = {
      "dataset": {"name": "Open Bandit Dataset sample (obp 0.4.1), behavior policy random, "
                          "campaign all", "rows": data.n_rows, "clicks": int(data.reward.sum()),
                  "train_rows": len(train_rows), "held_out_rows": len(held_out),
                  "held_out_clicks": int(data.reward[held_out].sum()),
                  "validation": validation.summary()},
      "settings": {"slate_size": 3, "epsilon": args.epsilon, "epochs": args.epochs,
                   "confidence": args.confidence, "n_bootstrap": args.n_bootstrap,
                   "seed": args.seed},
      "agents": {},
  }
  for name in args.agents.split(",") if args.agents else AGENT_NAMES:
    started = time.time()
    outcome = train_and_evaluate(AgentConfig(name=name, seed=args.seed), data, settings)
    table = table_dict(outcome.table)
    result["logging_policy_click_rate"] = table["logging"]
    result["agents"][name] = {
        "ours": table["estimators"],
        "obp": obp_estimates(outcome.inputs, args.confidence, args.n_bootstrap, args.seed),
        "effective_sample_size": table["effective_sample_size"],
        "positive_rewards_matched": table["positive_rewards_matched"],
        "training": {"rows": outcome.training.rows, "train_steps": outcome.training.train_steps,
                     "steps_per_second": round(outcome.training.steps_per_second, 1)},
        "seconds": round(time.time() - started, 1)}
  print(json.dumps(result, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
