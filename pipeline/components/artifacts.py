"""Artifact types of this project's own components, and where a Model artifact keeps its
SavedModel."""
import os

from tfx.types.artifact import Artifact

# The folder of a Model artifact that holds the servable SavedModel: where TFX's Trainer writes
# it (`serving_model_dir`) and where its Evaluator and Pusher look for it.
SERVING_MODEL_DIR = "Format-Serving"


def serving_model_dir(model: Artifact) -> str:
  return os.path.join(model.uri, SERVING_MODEL_DIR)


class ValidationReport(Artifact):
  """HTML and JSON reports of one run's data statistics and anomalies."""
  TYPE_NAME = "recsys.ValidationReport"  # <namespace>.<Name>: Kubeflow V2 requires it


class ContentEmbeddings(Artifact):
  """Per catalog item, its text and image vectors and what it has (`trainer/content/records.py`
  names the layout: `embeddings/` TFRecords of tf.Examples, `content_report.json`)."""
  TYPE_NAME = "recsys.ContentEmbeddings"
