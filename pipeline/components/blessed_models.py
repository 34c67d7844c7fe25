"""Which earlier blessed model a run compares with, or starts from, chosen so that a run on
identical input is a cache hit in every component.

TFX's LatestBlessedModelStrategy returns the newest blessed model. After a run blesses its
candidate, an identical re-run (every component cached up to the trainer) would get that same
candidate as "the last blessed model", so the evaluator's inputs change, it runs again, compares
the model with itself, and the pusher runs again. Here the newest model of the trainer's channel,
which is this run's candidate (fresh or cached), is left out: an identical re-run resolves what
the first run resolved, and a changed run still meets every earlier blessing.

The trainer's warm start cannot wait for the trainer: it takes the newest blessed model older
than the run's examples (the ExampleGen's newest artifact, fresh or cached). New data: the model
blessed last. Identical data: the examples are the first run's, so is the base model, and the
trainer is a cache hit.
"""
from __future__ import annotations

from typing import Dict, List, Optional

from tfx import types
from tfx import v1 as tfx
from tfx.dsl.input_resolution.strategies.latest_blessed_model_strategy import (
    LatestBlessedModelStrategy)

MODEL, BLESSING, EXAMPLES = "model", "model_blessing", "examples"


class LatestBlessedBeforeCandidate(LatestBlessedModelStrategy):
  """The newest blessed model other than the trainer's newest (the candidate being judged)."""

  def resolve_artifacts(self, store, input_dict: Dict[str, List[types.Artifact]]
                        ) -> Optional[Dict[str, List[types.Artifact]]]:
    models = input_dict[MODEL]
    if models:
      candidate = max(model.id for model in models)
      input_dict = dict(input_dict, **{MODEL: [m for m in models if m.id != candidate]})
    if not input_dict[MODEL]:
      return {key: [] for key in input_dict}
    return super().resolve_artifacts(store, input_dict)


class LatestBlessedBeforeExamples(LatestBlessedModelStrategy):
  """The newest blessed model created before the newest examples (those this run trains on)."""

  def resolve_artifacts(self, store, input_dict: Dict[str, List[types.Artifact]]
                        ) -> Optional[Dict[str, List[types.Artifact]]]:
    examples = input_dict[EXAMPLES]
    newest = max(examples, key=lambda e: e.id) if examples else None
    models = {MODEL: [m for m in input_dict[MODEL] if newest and m.id < newest.id],
              BLESSING: input_dict[BLESSING]}
    if not models[MODEL]:
      return {key: [] for key in input_dict}
    # Every input key is an output of the resolver: the examples it compared with go along.
    return dict(super().resolve_artifacts(store, models), **{EXAMPLES: [newest]})


def _blessed_model_channels(trainer_id: str, evaluator_id: str, blessing_key: str
                            ) -> Dict[str, tfx.dsl.Channel]:
  """Every Model of `trainer_id` and every blessing `evaluator_id` wrote under `blessing_key`
  (so no stage's blessing becomes another's)."""
  return {MODEL: tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model,
                                 producer_component_id=trainer_id, output_key="model"),
          BLESSING: tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing,
                                    producer_component_id=evaluator_id,
                                    output_key=blessing_key)}


def latest_blessed_before_examples(trainer_id: str, evaluator_id: str, blessing_key: str,
                                   examples_producer_id: str, resolver_id: str,
                                   portable: bool = False) -> tfx.dsl.Resolver:
  """The warm start's base model: `LatestBlessedBeforeExamples` over the ExampleGen's examples
  (`portable`: TFX's own strategy, the newest blessed model)."""
  channels = _blessed_model_channels(trainer_id, evaluator_id, blessing_key)
  if portable:
    return tfx.dsl.Resolver(strategy_class=LatestBlessedModelStrategy,
                            **channels).with_id(resolver_id)
  return tfx.dsl.Resolver(
      strategy_class=LatestBlessedBeforeExamples, **channels,
      **{EXAMPLES: tfx.dsl.Channel(type=tfx.types.standard_artifacts.Examples,
                                   producer_component_id=examples_producer_id,
                                   output_key="examples")}).with_id(resolver_id)


def latest_blessed_before_candidate(trainer_id: str, evaluator_id: str, blessing_key: str,
                                    resolver_id: str, portable: bool = False
                                    ) -> tfx.dsl.Resolver:
  """The evaluator's last blessed model. `portable`: TFX's own strategy (Kubeflow V2 compiles
  no other; an identical re-run there re-runs the evaluator)."""
  return tfx.dsl.Resolver(
      strategy_class=LatestBlessedModelStrategy if portable else LatestBlessedBeforeCandidate,
      **_blessed_model_channels(trainer_id, evaluator_id, blessing_key)).with_id(resolver_id)
