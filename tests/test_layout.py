"""The layout's import rules (README, "Where things are"), checked on the source: imports run one
way, serving stays free of Beam and TFX, and no module cycle exists."""
import ast
import os
import pathlib
from typing import Dict, Set

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "trainer", "agents", "transform", "serving", "kubeflow", "benchmarks")
# Package -> the project packages (or modules) it may import; "pipeline.data" and
# "transform.features" are the contract layer everything may read.
CONTRACT = ("pipeline.data", "transform.features")
ALLOWED = {
    "pipeline.data": ("pipeline.data",),
    "transform": CONTRACT + ("transform",),
    "trainer": CONTRACT + ("trainer",),
    "agents": CONTRACT + ("agents", "trainer"),
    "serving": CONTRACT + ("serving", "trainer.retrieval.signature", "trainer.cross_encoder.texts",
                           "trainer.ranker.signature", "agents.features"),
    "pipeline": CONTRACT + ("pipeline", "trainer", "agents", "transform", "serving"),
    "kubeflow": ("pipeline", "kubeflow"),
    "benchmarks": PACKAGES,
}
# Third-party packages a layer must not import (serving runs online: no batch engines).
FORBIDDEN = {"serving": ("apache_beam", "tfx", "matplotlib"),
             "trainer": ("tfx.dsl", "tfx.v1", "tfx.components", "tfx.orchestration"),
             "agents": ("tfx.dsl", "tfx.v1", "tfx.components", "tfx.orchestration"),
             "transform": ("tfx.dsl", "tfx.v1", "tfx.components", "tfx.orchestration")}


def _modules() -> Dict[str, pathlib.Path]:
  found = {}
  for package in PACKAGES:
    for path in (ROOT / package).rglob("*.py"):
      if "protos" in path.parts:  # generated code
        continue
      name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
      found[name.removesuffix(".__init__")] = path
  return found


MODULES = _modules()


def _imports(path: pathlib.Path) -> Set[str]:
  """Every module name imported anywhere in the file (function-level imports too); only runtime
  imports: `if TYPE_CHECKING:` blocks are skipped."""
  tree = ast.parse(path.read_text())
  names: Set[str] = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
      node.body = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names |= {alias.name for alias in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      # `from package import module` imports the module; `from module import name` the module.
      for alias in node.names:
        submodule = f"{node.module}.{alias.name}"
        if node.module.split(".")[0] in PACKAGES:
          names.add(submodule if submodule in MODULES else node.module)
        else:  # a third-party `from tfx import v1`: both names, for the forbidden lists
          names |= {node.module, submodule}
  return names


def _layer(module: str) -> str:
  return "pipeline.data" if module.startswith("pipeline.data") else module.split(".")[0]


def _within(name: str, prefixes) -> bool:
  return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_one_way(module):
  layer = _layer(module)
  wrong = sorted(name for name in _imports(MODULES[module])
                 if name.split(".")[0] in PACKAGES and name in MODULES
                 and not _within(name, ALLOWED[layer]))
  assert not wrong, f"{module} ({layer}) may not import {wrong}"
  forbidden = sorted(name for name in _imports(MODULES[module])
                     if _within(name, FORBIDDEN.get(layer, ())))
  assert not forbidden, f"{module} ({layer}) may not import {forbidden}"


def test_no_import_cycles():
  graph = {module: {name for name in _imports(path) if name in MODULES and name != module}
           for module, path in MODULES.items()}
  state: Dict[str, int] = {}

  def visit(module, trail):
    state[module] = 1
    for dependency in graph[module]:
      if state.get(dependency) == 1:
        raise AssertionError(" -> ".join(trail + [module, dependency]))
      if not state.get(dependency):
        visit(dependency, trail + [module])
    state[module] = 2

  for module in sorted(graph):
    if not state.get(module):
      visit(module, [])


def test_the_online_server_loads_no_batch_engine():
  """serving.serve, as scripts/serve.sh starts it, pulls in neither Beam nor TFX."""
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  code = ("import sys, serving.serve; print(sorted(m for m in ('apache_beam', 'tfx', "
          "'matplotlib', 'tensorflow_transform', 'tensorflow_model_analysis') if m in "
          "sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
  assert out.stdout.strip().splitlines()[-1] == "[]"
