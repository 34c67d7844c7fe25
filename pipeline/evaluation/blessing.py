"""The gate every evaluator of a ranked list applies, and the ModelBlessing it writes exactly as
TFX's Evaluator does, so that the stock Pusher and the latest-blessed-model resolver read the
blessings of this project's own evaluators unchanged."""
from __future__ import annotations

import os
from typing import List, Sequence, Tuple

import tensorflow as tf
from tfx.components.evaluator import constants
from tfx.types import standard_artifacts

from pipeline.evaluation.report import OVERALL, Metrics


# Ends every reason that kept a model from its blessing, so the run's last line can name what
# failed (pipeline/run_report.py `failed_reasons`).
FAILED = "FAILED"


def failure(value: float, bound: float) -> str:
  """The suffix of a failed comparison: by how much `value` missed `bound`."""
  return f": {FAILED} by {bound - value:.4f}"


def failed_reasons(reasons: Sequence[str]) -> List[str]:
  return [reason for reason in reasons if f": {FAILED}" in reason]


def gate(metrics: Metrics, model: str, rivals: Sequence[str], previous: str,
         gate_metrics: Sequence[str], tolerance: float) -> Tuple[bool, List[str]]:
  """(passed, reasons): `model` strictly above every rival on every gate metric overall, and
  no more than `tolerance` below the last blessed model `previous` (when it was evaluated)."""
  passed, reasons = True, []
  values = metrics[model][OVERALL]
  for metric in gate_metrics:
    for rival in rivals:
      other = metrics[rival][OVERALL][metric]
      ok = values[metric] > other
      passed &= ok
      reasons.append(f"{metric}: {model} {values[metric]:.4f} {'>' if ok else '<='} "
                     f"{rival} {other:.4f}" + ("" if ok else failure(values[metric], other)))
    if previous in metrics:
      last = metrics[previous][OVERALL][metric]
      ok = values[metric] >= last - tolerance
      passed &= ok
      reasons.append(f"{metric}: {model} {values[metric]:.4f} {'>=' if ok else '<'} "
                     f"last blessed {last:.4f} - tolerance {tolerance}"
                     + ("" if ok else failure(values[metric], last - tolerance)))
  return passed, reasons


def write_blessing(blessing: standard_artifacts.ModelBlessing, model: standard_artifacts.Model,
                   blessed: bool) -> None:
  """The marker file and the custom properties of TFX's Evaluator."""
  blessing.set_string_custom_property(constants.ARTIFACT_PROPERTY_CURRENT_MODEL_URI_KEY,
                                      model.uri)
  blessing.set_int_custom_property(constants.ARTIFACT_PROPERTY_CURRENT_MODEL_ID_KEY, model.id)
  name = constants.BLESSED_FILE_NAME if blessed else constants.NOT_BLESSED_FILE_NAME
  tf.io.gfile.makedirs(blessing.uri)
  with tf.io.gfile.GFile(os.path.join(blessing.uri, name), "w") as f:
    f.write("")
  blessing.set_int_custom_property(
      constants.ARTIFACT_PROPERTY_BLESSED_KEY,
      constants.BLESSED_VALUE if blessed else constants.NOT_BLESSED_VALUE)


def is_blessed(blessing: standard_artifacts.ModelBlessing) -> bool:
  return blessing.get_int_custom_property(
      constants.ARTIFACT_PROPERTY_BLESSED_KEY) == constants.BLESSED_VALUE
