"""Writes a ModelBlessing exactly as TFX's Evaluator does, so that the stock Pusher and the
latest-blessed-model resolver read the blessings of this project's own evaluators unchanged."""
from __future__ import annotations

import os

import tensorflow as tf
from tfx.components.evaluator import constants
from tfx.types import standard_artifacts


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
