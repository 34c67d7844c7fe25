"""The ranker SavedModel: the raw request and the candidate ids in, a score per candidate out.

It carries its features (`features.py`, with the sources fit on the whole training split) and
its scorers, so the cascade sends it exactly what it sends the retrieval model plus the
candidate union, and nothing has to match the training code by hand.

  serving_default  user_id, history [B, any], history_timestamps [B, any] (0 = unknown), age,
                   gender, occupation, candidate_ids [B, C]
                   -> scores [B, C] (the ensemble: each scorer's logits standardised per list,
                   averaged; unknown and "" candidates get EXCLUDED_SCORE), and per source the
                   raw score of every candidate (`retrieval_scores`, `item_to_item_scores`,
                   `knn_scores`), which the cascade shows as the explanation.
  score_features   features [B, C, F], mask [B, C] -> scores [B, C]: the ensemble on features
                   computed elsewhere (the evaluator's gate lists, mined with the fold
                   sources); `feature_names` -> names [F], so a caller can check the layout.
"""
from __future__ import annotations

from typing import Dict, Sequence

import tensorflow as tf

from trainer.ranker.features import RankingFeatures
from trainer.ranker.model import ensemble_logits
from trainer.ranker.signature import REQUEST_SPEC
from trainer.retrieval.signature import EXCLUDED_SCORE, SCORES

SCORE_FEATURES, FEATURE_NAMES = "score_features", "feature_names"


class RankerModule(tf.Module):
  """Features + an ensemble of scorers behind `serving_default`."""

  def __init__(self, features: RankingFeatures, scorers: Sequence[tf.keras.Model]):
    super().__init__()
    self.features = features
    self.scorers = list(scorers)

  def score(self, request: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    values, valid, raw = self.features(request)
    outputs = self.score_features(values, valid)
    outputs.update({f"{source}_{SCORES}": score for source, score in raw.items()})
    return outputs

  def score_features(self, features: tf.Tensor, mask: tf.Tensor) -> Dict[str, tf.Tensor]:
    ensemble = ensemble_logits(self.scorers, features, mask)
    return {SCORES: tf.where(mask, ensemble, EXCLUDED_SCORE)}

  def signatures(self) -> Dict[str, tf.types.experimental.ConcreteFunction]:
    def serve(**request):
      return self.score(request)

    names = tf.constant(self.features.names)
    width = len(self.features.names)
    return {
        "serving_default": tf.function(serve).get_concrete_function(**REQUEST_SPEC),
        SCORE_FEATURES: tf.function(self.score_features).get_concrete_function(
            tf.TensorSpec([None, None, width], tf.float32, name="features"),
            tf.TensorSpec([None, None], tf.bool, name="mask")),
        FEATURE_NAMES: tf.function(lambda: {"names": names}).get_concrete_function(),
    }


def export_ranker(module: RankerModule, export_dir: str) -> None:
  tf.saved_model.save(module, export_dir, signatures=module.signatures())
