"""Artifact types of this project's own components."""
from tfx.types.artifact import Artifact


class ValidationReport(Artifact):
  """HTML and JSON reports of one run's data statistics and anomalies."""
  TYPE_NAME = "recsys.ValidationReport"  # <namespace>.<Name>: Kubeflow V2 requires it
