"""Cumulative regret of the bandit agents in the MovieLens-100K environment; prints JSON.

The environment (`agents.simulation`): rewards from a rank-k SVD of all 100,000 ratings, as in
TF-Agents' MovieLens example; the agents' features from a second SVD without each user's latest
20% of ratings. Each step serves `batch_size` random users 20 random movies each; every agent sees
the same users and movies. Writes the regret curves as PNG and JSON under --output_dir.

    python -m benchmarks.bandit_regret [--steps 2000] [--output_dir outputs/benchmarks]
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from typing import List

import agents  # noqa: F401  (Keras 2 before TensorFlow)
from pipeline.config import REPO_ROOT


def parse_args(argv: List[str]) -> argparse.Namespace:
  """Above the imports of the agents (TensorFlow, TF-Agents), so that --help and a bad flag
  answer at once."""
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--steps", type=int, default=2000,
                      help="environment steps per agent (default %(default)s)")
  parser.add_argument("--batch_size", type=int, default=8,
                      help="users served per step (default %(default)s)")
  parser.add_argument("--num_candidates", type=int, default=20,
                      help="random movies each user is offered per step (default %(default)s)")
  parser.add_argument("--rank", type=int, default=20,
                      help="rank of the SVDs behind the rewards and the features (default "
                           "%(default)s)")
  parser.add_argument("--agents", default=None,
                      help="comma-separated agents to run (default: uniform_random, then all "
                           "of agents.bandit_agents.AGENT_NAMES)")
  parser.add_argument("--seed", type=int, default=0,
                      help="seed of the environment and the agents (default %(default)s)")
  parser.add_argument("--output_dir", default=os.path.join(REPO_ROOT, "outputs", "benchmarks"),
                      help="bandit_regret.png and .json go here (default %(default)s)")
  return parser.parse_args(argv)


if __name__ == "__main__":
  parse_args(sys.argv[1:])

from agents.bandit_agents import AGENT_NAMES, AgentConfig  # noqa: E402
from agents.regret import UNIFORM_RANDOM, run_agent, write_outputs  # noqa: E402
from agents.simulation import MovieLensBanditEnvironment, movielens_ratings  # noqa: E402


def main(argv: List[str]) -> int:
  args = parse_args(argv)
  ratings = movielens_ratings()
  make_env = functools.partial(MovieLensBanditEnvironment, ratings, rank=args.rank,
                               num_candidates=args.num_candidates, batch_size=args.batch_size,
                               seed=args.seed)
  config = AgentConfig(seed=args.seed)
  names = args.agents.split(",") if args.agents else (UNIFORM_RANDOM,) + AGENT_NAMES
  curves = {name: run_agent(make_env, name, args.steps, config) for name in names}
  settings = {"dataset": "MovieLens-100K", "ratings": len(ratings.ratings), "steps": args.steps,
              "batch_size": args.batch_size, "decisions_per_agent": args.steps * args.batch_size,
              "num_candidates": args.num_candidates, "rank": args.rank, "seed": args.seed,
              "reward": "rank-k SVD reconstruction of the ratings matrix (rating points)"}
  os.makedirs(args.output_dir, exist_ok=True)
  png = os.path.join(args.output_dir, "bandit_regret.png")
  curves_json = os.path.join(args.output_dir, "bandit_regret.json")
  write_outputs(curves, png, curves_json, settings)
  print(json.dumps({"settings": settings,
                    "agents": {name: curve.to_json() for name, curve in curves.items()},
                    "plot": png, "curves": curves_json}, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
