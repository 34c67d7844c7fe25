"""Evaluates the recommendation cascade as a user measures it, and decides the blessings of
the ranker and of the item-to-item source.

On the miner's `gate` lists (`trainer/ranker/lists.py`): users the ranker never trained on,
each with one list per held-out fold, mined with sources fit without that fold, so about a
quarter of each user's items are what the user chose, as in a random per-user split (the
pipeline's eval split holds out only a tenth, where the sources' order says most of what can be
said: on MovieLens-100K even a ranker fit on the eval lists themselves gained 1% there, against
10% on the protocol's test split; on the gate lists the ranker's gain agrees with the test
split's). In Beam, the candidate ranker and the last blessed one order each list's candidates
(their `score_features` signature); each source's own ranking is stored in the list. One TFMA
pass then scores, per list and sliced by gender and activity segment, the cascade, each source
alone (the two-tower retrieval, the item-to-item source, popularity) and the last blessed
ranker: MAP, NDCG@10, precision@10, recall@10 and recall@100 (`trainer/ranker/metrics.py`).

The item-to-item source is blessed if it beats popularity on every gate metric. The ranker is
blessed only if the cascade beats every single source on every gate metric overall, falls no
more than `tolerance` below the last blessed ranker (when that one takes the same features),
and the sources whose candidates it serves (this run's retrieval model and item-to-item source)
are blessed too: a ranker that loses to what it re-ranks must not reach users, and a benchmark
win must not be a gate loss.
"""
import os
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
import tensorflow as tf
import tensorflow_model_analysis as tfma
from tfx import v1 as tfx
from tfx.types import standard_artifacts

from pipeline.components.artifacts import serving_model_dir
from pipeline.components.ranking_list_miner import GATE_SOURCES
from pipeline.data.examples import decode_example, encode_example
from pipeline.evaluation.blessing import FAILED, gate, is_blessed, write_blessing
from pipeline.evaluation.report import EvaluationReport, Metrics
from pipeline.evaluation.tfma_metrics import UserListMetrics
from pipeline.evaluation.tfma_runner import load_metrics, run_tfma
from trainer.ranker import lists as L
from trainer.ranker import metrics as M
from trainer.ranker.export import FEATURE_NAMES, SCORE_FEATURES
from trainer.retrieval import signature
from transform import features as F

CASCADE, LAST_BLESSED = "cascade", "last_blessed"
RETRIEVAL, ITEM_TO_ITEM, POPULARITY = GATE_SOURCES
SOURCES = GATE_SOURCES
RELEVANT = "relevant"
# The output key of the item-to-item source's blessing (the ranker's is `blessing`).
ITEM_TO_ITEM_BLESSING = "item_to_item_blessing"
_METRICS = M.metric_names() + [M.USER_COUNT]
REPORT = EvaluationReport("Recommendation cascade evaluation (gate lists)", "ranker_metrics.json",
                          "ranker_metrics.html", _METRICS, (CASCADE, *SOURCES, LAST_BLESSED))
ITEM_TO_ITEM_REPORT = EvaluationReport(
    "Item-to-item source evaluation (gate lists)", "item_to_item_metrics.json",
    "item_to_item_metrics.html", _METRICS, (ITEM_TO_ITEM, POPULARITY))


def feature_names(model_dir: str) -> Optional[List[str]]:
  """The feature layout a ranker SavedModel scores; None if it does not say."""
  model = tf.saved_model.load(model_dir)
  if FEATURE_NAMES not in model.signatures:
    return None
  return [n.decode() for n in model.signatures[FEATURE_NAMES]()["names"].numpy()]


class RankedLists(beam.DoFn):
  """Batches of serialized gate lists -> serialized per-list results: the held-out ids, each
  ranker's order of the candidates and each source's stored ranking (top M.DEPTH), and the
  slice features."""

  def __init__(self, ranker_dirs: Mapping[str, str], n_features: int):
    super().__init__()
    self._ranker_dirs = dict(ranker_dirs)
    self._n_features = n_features
    self._rankers: Dict[str, Any] = {}

  def setup(self) -> None:
    self._rankers = {name: tf.saved_model.load(path).signatures[SCORE_FEATURES]
                     for name, path in self._ranker_dirs.items()}

  def process(self, batch: Sequence[bytes]) -> Iterator[bytes]:
    decoded = [decode_example(record) for record in batch]
    width = max([len(d.get(L.CANDIDATE_IDS, [])) for d in decoded] + [1])
    features = np.zeros((len(decoded), width, self._n_features), np.float32)
    mask = np.zeros((len(decoded), width), bool)
    for row, d in enumerate(decoded):
      count = len(d.get(L.CANDIDATE_IDS, []))
      features[row, :count] = np.reshape(d.get(L.FEATURES, []), (count, self._n_features))
      mask[row, :count] = True
    scores = {name: ranker(features=tf.constant(features), mask=tf.constant(mask))[
        signature.SCORES].numpy() for name, ranker in self._rankers.items()}
    for row, d in enumerate(decoded):
      candidates = d.get(L.CANDIDATE_IDS, [])
      ranked = {name: [candidates[i] for i in np.argsort(-values[row, :len(candidates)],
                                                         kind="stable")]
                for name, values in scores.items()}
      ranked.update({source: d.get(L.RANKED_PREFIX + source, []) for source in SOURCES})
      yield encode_example({
          RELEVANT: d.get(L.RELEVANT_IDS, []),
          **{name: (d.get(name) or [""])[0] for name in F.SLICE_FEATURES},
          **{name: ids[:M.DEPTH] for name, ids in ranked.items()}})


class StoredRanking(tf.Module):
  """A stand-in model for TFMA: its `evaluation` signature answers with one model's ranked
  list as the cascade evaluation stored it."""

  def __init__(self, name: str):
    super().__init__()
    self._name = name

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
  def evaluate(self, examples: tf.Tensor) -> Dict[str, tf.Tensor]:
    ranked = tf.io.parse_example(examples, {self._name: tf.io.VarLenFeature(tf.string)})
    return {signature.ITEM_IDS: tf.sparse.to_dense(ranked[self._name], default_value="")}


def eval_config(model_names: Sequence[str], slice_features: Sequence[str]) -> tfma.EvalConfig:
  return tfma.EvalConfig(
      model_specs=[tfma.ModelSpec(name=name, signature_name="evaluation", label_key=RELEVANT)
                   for name in model_names],
      slicing_specs=[tfma.SlicingSpec()] + [tfma.SlicingSpec(feature_keys=[feature])
                                            for feature in slice_features],
      metrics_specs=[tfma.MetricsSpec(
          model_names=list(model_names),
          metrics=[tfma.MetricConfig(class_name=UserListMetrics.__name__,
                                     module=UserListMetrics.__module__)])])


def item_to_item_decision(metrics: Metrics, gate_metrics: Sequence[str]
                          ) -> Tuple[bool, List[str]]:
  """Popularity is the bar; a closed-form fit of its settings, the source's regressions show
  in the cascade's check against the last blessed ranker."""
  return gate(metrics, ITEM_TO_ITEM, [POPULARITY], "", gate_metrics, 0.0)


def ranker_decision(metrics: Metrics, gate_metrics: Sequence[str], tolerance: float,
                    sources_blessed: Mapping[str, bool]) -> Tuple[bool, List[str]]:
  """The cascade against every source and the last blessed ranker; and the sources it was
  judged with must be the ones that will serve."""
  blessed, reasons = gate(metrics, CASCADE, SOURCES, LAST_BLESSED, gate_metrics, tolerance)
  for source, source_blessed in sources_blessed.items():
    blessed &= source_blessed
    reasons.append(f"{source} source of this run {'is' if source_blessed else 'is NOT'} "
                   f"blessed" + ("" if source_blessed else f": {FAILED}"))
  return blessed, reasons


@tfx.dsl.components.component(use_beam=True)
def RankerEvaluator(  # pylint: disable=invalid-name
    candidate_lists: tfx.dsl.components.InputArtifact[standard_artifacts.Examples],
    item_to_item_model: tfx.dsl.components.InputArtifact[standard_artifacts.Model],
    retrieval_blessing: tfx.dsl.components.InputArtifact[standard_artifacts.ModelBlessing],
    model: tfx.dsl.components.InputArtifact[standard_artifacts.Model],
    evaluation: tfx.dsl.components.OutputArtifact[standard_artifacts.ModelEvaluation],
    blessing: tfx.dsl.components.OutputArtifact[standard_artifacts.ModelBlessing],
    item_to_item_blessing: tfx.dsl.components.OutputArtifact[standard_artifacts.ModelBlessing],
    gate_metrics: tfx.dsl.components.Parameter[str],
    tolerance: tfx.dsl.components.Parameter[float],
    blessed_model: tfx.dsl.components.InputArtifact[standard_artifacts.Model] = None,
    slice_features: tfx.dsl.components.Parameter[str] = ",".join(F.SLICE_FEATURES),
    beam_pipeline: tfx.dsl.components.BeamComponentParameter[beam.Pipeline] = None,
) -> None:
  """The gate lists ranked by the rankers, TFMA over them and the sources, then the two
  blessings."""
  rankers = {CASCADE: serving_model_dir(model)}
  names = feature_names(rankers[CASCADE])
  reasons: List[str] = []
  if blessed_model is not None:
    if feature_names(serving_model_dir(blessed_model)) == names:
      rankers[LAST_BLESSED] = serving_model_dir(blessed_model)
    else:
      reasons.append("the last blessed ranker takes other features: not compared")
  results = os.path.join(evaluation.uri, "gate_lists", "lists")
  with beam_pipeline as p:
    _ = (p | "Read" >> beam.io.ReadFromTFRecord(
        os.path.join(candidate_lists.uri, f"Split-{L.GATE}", "*"))
         | "Batch" >> beam.BatchElements(min_batch_size=16, max_batch_size=128)
         | "Rank" >> beam.ParDo(RankedLists(rankers, len(names)))
         | "Write" >> beam.io.WriteToTFRecord(results, file_name_suffix=".gz"))
  stand_ins = {}
  for name in (*rankers, *SOURCES):
    stand_ins[name] = os.path.join(evaluation.uri, "stored_rankings", name)
    module = StoredRanking(name)
    tf.saved_model.save(module, stand_ins[name], signatures={"evaluation": module.evaluate})
  run_tfma(beam.Pipeline(options=beam_pipeline.options), f"{results}*", stand_ins,
           eval_config(list(stand_ins), [f for f in slice_features.split(",") if f]),
           evaluation.uri)
  metrics = load_metrics(evaluation.uri)
  gates = gate_metrics.split(",")
  source_blessed, source_reasons = item_to_item_decision(metrics, gates)
  write_blessing(item_to_item_blessing, item_to_item_model, source_blessed)
  ITEM_TO_ITEM_REPORT.publish(evaluation.uri, metrics, source_blessed, source_reasons)
  blessed, ranker_reasons = ranker_decision(metrics, gates, tolerance, {
      RETRIEVAL: is_blessed(retrieval_blessing), ITEM_TO_ITEM: source_blessed})
  write_blessing(blessing, model, blessed)
  REPORT.publish(evaluation.uri, metrics, blessed, ranker_reasons + reasons)
