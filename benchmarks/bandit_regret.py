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
from agents.bandit_agents import AGENT_NAMES, AgentConfig
from agents.regret import UNIFORM_RANDOM, run_agent, write_outputs
from agents.simulation import MovieLensBanditEnvironment, movielens_ratings
from pipeline.config import REPO_ROOT


def main(argv: List[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--steps", type=int, default=2000)
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--num_candidates", type=int, default=20)
  parser.add_argument("--rank", type=int, default=20)
  parser.add_argument("--agents", default=",".join((UNIFORM_RANDOM,) + AGENT_NAMES))
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--output_dir", default=os.path.join(REPO_ROOT, "outputs", "benchmarks"))
  args = parser.parse_args(argv)
  ratings = movielens_ratings()
  make_env = functools.partial(MovieLensBanditEnvironment, ratings, rank=args.rank,
                               num_candidates=args.num_candidates, batch_size=args.batch_size,
                               seed=args.seed)
  config = AgentConfig(seed=args.seed)
  curves = {name: run_agent(make_env, name, args.steps, config)
            for name in args.agents.split(",")}
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
