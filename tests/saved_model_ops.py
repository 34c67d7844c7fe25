"""The op types a SavedModel's graph uses (its functions' bodies included), for the tests that
check a model runs on stock TF Serving."""
import os
from typing import Set

from tensorflow.core.protobuf import saved_model_pb2

# The custom (non-core) ops keras-hub's BertTokenizer and packers put in the graph: all TF Text
# kernels, which stock TF Serving links in.
TF_TEXT_OPS = {"CaseFoldUTF8", "NormalizeUTF8", "RegexSplitWithOffsets",
               "FastWordpieceTokenizeWithOffsets", "TFText>RoundRobinTrim"}


def graph_ops(export_dir: str) -> Set[str]:
  saved_model = saved_model_pb2.SavedModel()
  with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
    saved_model.ParseFromString(f.read())
  graph = saved_model.meta_graphs[0].graph_def
  ops = {node.op for node in graph.node}
  for function in graph.library.function:
    ops |= {node.op for node in function.node_def}
  return ops - {function.signature.name for function in graph.library.function}
