"""The serving stack as users run it, for the serving tests: `python -m serving.serve` in its own
process (as scripts/serve.sh starts it), over a serving root filled by the pipeline's pusher code,
set up for an A/B test exactly as README says, with a small cross-encoder pushed beside the
pipeline's retrieval model."""
import dataclasses
import ipaddress
import os
import re
import shlex
import shutil
import subprocess
import sys
from typing import Dict, List

import psutil

from benchmarks.serve_process import SERVE_ENV, ServeProcess
from pipeline.components.serving_pusher import refresh_models_config
from pipeline.config import REPO_ROOT

README = os.path.join(REPO_ROOT, "README.md")
RERANK_DEPTH = 8


def listening_ips(pid: int, port: int) -> List[str]:
  """The IPs process `pid` accepts connections on at `port`."""
  return [c.laddr.ip for c in psutil.Process(pid).net_connections(kind="inet")
          if c.status == psutil.CONN_LISTEN and c.laddr.port == port]


def is_loopback(ip: str) -> bool:
  address = ipaddress.ip_address(ip)
  mapped = getattr(address, "ipv4_mapped", None)  # gRPC's dual-stack ::ffff:127.0.0.1
  return (mapped or address).is_loopback


def readme_ab_setup() -> Dict[str, str]:
  """README's A/B setup block: the labelling command and the experiment JSON, as written."""
  with open(README) as f:
    text = f.read()
  block = re.search(r"<!-- ab-setup -->\s*```bash\n(.*?)```", text, re.S)
  assert block, "README has no A/B setup block (<!-- ab-setup --> before a bash block)"
  lines = block.group(1)
  label = next(line for line in lines.splitlines() if "serving.models_config" in line)
  experiment = re.search(r"<<'EOF'\n(.*?)\n\s*EOF", lines, re.S).group(1)
  serve = next(line for line in lines.splitlines() if "scripts/serve.sh" in line)
  return {"label": label, "experiment": experiment, "serve": serve}


def _export_cross_encoder(export_dir: str) -> None:
  """A one-layer cross-encoder from the project's own export path (real TF Text tokenizer)."""
  # pylint: disable=import-outside-toplevel
  from trainer.cross_encoder.export import CrossEncoderModule, export_cross_encoder
  from trainer.cross_encoder.model import build_cross_encoder, pair_preprocessor
  from trainer.encoders.bert_checkpoint import load_backbone, load_tokenizer, minilm_dir
  folder = minilm_dir()
  model = build_cross_encoder(load_backbone(folder, num_layers=1),
                              pair_preprocessor(load_tokenizer(folder), 32), 0.1)
  export_cross_encoder(CrossEncoderModule(model, RERANK_DEPTH), export_dir)


@dataclasses.dataclass
class Stack:
  """What the serving tests share: the process, its roots, the pushed versions."""
  process: ServeProcess
  data_root: str
  serving_root: str
  stable: int
  canary: int
  experiment_path: str
  summary: dict
  work: str

  def args(self) -> List[str]:
    """serve's flags, as README's serve line plus the test's roots and a short head timeout."""
    readme = shlex.split(readme_ab_setup()["serve"])[2:]  # after `bash scripts/serve.sh`
    return [*(self.experiment_path if a == "experiment.json" else a for a in readme),
            "--data_root", self.data_root,
            "--serving_root", self.serving_root, "--file_system_poll_wait_seconds", "0.5",
            "--http_header_timeout_s", "3"]

  def restart(self) -> None:
    self.process.stop()
    self.process = ServeProcess(self.args(), self.process.log_path).start()


def launch(summary: dict, slice_root: str, work: str) -> Stack:
  """Pushes (copies) the run's retrieval model as two versions and a cross-encoder into a
  serving root of its own, labels them as README says, and starts serve as README says."""
  data_root = os.path.join(work, "data")
  shutil.copytree(slice_root, data_root)
  serving_root = os.path.join(work, "serving")
  stable = int(os.path.basename(summary["pushed_to"]))
  canary = stable + 1  # the same model under a second version number
  for version in (stable, canary):
    shutil.copytree(summary["pushed_to"], os.path.join(serving_root, "retrieval", str(version)))
  _export_cross_encoder(os.path.join(serving_root, "cross_encoder", "1"))
  refresh_models_config(serving_root)
  setup = readme_ab_setup()
  label = (setup["label"].replace("outputs/serving", serving_root)
           .replace("V1", str(stable)).replace("V2", str(canary)))
  words = shlex.split(label)
  assert words[:3] == ["python", "-m", "serving.models_config"], label
  subprocess.run([sys.executable, *words[1:]], cwd=REPO_ROOT, check=True, capture_output=True,
                 env={**os.environ, **SERVE_ENV})
  experiment_path = os.path.join(work, "experiment.json")
  with open(experiment_path, "w") as f:
    f.write(setup["experiment"])
  stack = Stack(None, data_root, serving_root, stable, canary, experiment_path, summary, work)
  stack.process = ServeProcess(stack.args(), os.path.join(work, "serve.log")).start()
  return stack
