"""Serves a SavedModel's `serving_default` in a fresh Python process that has none of the
project's code on its path, both ways a server loads it: TF2's `tf.saved_model.load`, and the
TF1 session loader (graph mode, signature tensors fed by name), which is how TF Serving's C++
loader runs a SavedModel and the way a Keras 3 export can fail to restore its variables."""
import os
import pathlib
import subprocess
import sys
from typing import Dict, List, Tuple

import numpy as np
import tensorflow as tf

_SCRIPT = """
import sys
import numpy as np
import tensorflow as tf
if sys.argv[4] == "tf_text":
  import tensorflow_text  # registers the tokenizer's ops, as TF Serving links them in
export_dir, name, out = sys.argv[1], sys.argv[2], sys.argv[5]
inputs = tf.io.parse_tensor(tf.io.read_file(sys.argv[3]), tf.string)
serve = tf.saved_model.load(export_dir).signatures["serving_default"]
np.savez(out + ".tf2.npz", **{k: v.numpy() for k, v in serve(**{name: inputs}).items()})
with tf.Graph().as_default(), tf.compat.v1.Session() as session:
  signature = tf.compat.v1.saved_model.loader.load(
      session, ["serve"], export_dir).signature_def["serving_default"]
  got = session.run({k: v.name for k, v in signature.outputs.items()},
                    {signature.inputs[name].name: inputs.numpy()})
np.savez(out + ".tf1.npz", **got)
print("IMPORTED", sorted({m.split(".")[0] for m in sys.modules}
                         & {"torch", "keras_hub", "trainer", "tests"}))
"""


def serve_in_fresh_process(export_dir: str, input_name: str, inputs: List[bytes],
                           work_dir: pathlib.Path, tf_text: bool = False
                           ) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray], str]:
  """(outputs through TF2's loader, outputs through the TF1 session, the last line the child
  printed: which of torch, keras-hub and the project's packages it imported; TensorFlow imports
  Keras itself)."""
  batch = work_dir / "inputs.pb"
  tf.io.write_file(str(batch), tf.io.serialize_tensor(tf.constant(inputs, tf.string)))
  out = str(work_dir / "outputs")
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ""}
  env.pop("TF_USE_LEGACY_KERAS", None)
  result = subprocess.run(
      [sys.executable, "-c", _SCRIPT, export_dir, input_name, str(batch),
       "tf_text" if tf_text else "-", out],
      capture_output=True, text=True, env=env, cwd=str(work_dir), timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return (dict(np.load(out + ".tf2.npz")), dict(np.load(out + ".tf1.npz")),
          result.stdout.strip().splitlines()[-1])
