#!/usr/bin/env bash
# Creates .venv and installs the pinned stack (requirements.lock) into it; a no-op when the venv
# already holds exactly this lock. tfx 1.16 declares Requires-Python <3.11 but runs on 3.11
# (../shared/STACK.md), hence --ignore-requires-python; the lock is the full resolved set, hence
# --no-deps (no resolver, no backtracking).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
stamp=.venv/.lock-sha256
want=$(sha256sum requirements.lock | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "setup: installing the pinned stack into .venv (a few minutes on a fresh machine)" >&2
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip wheel
.venv/bin/python -m pip install -q --ignore-requires-python --no-deps -r requirements.lock
.venv/bin/python - <<'PY'
import importlib.util, os
os.environ["TF_USE_LEGACY_KERAS"] = "1"
for name in ("tfx", "tensorflow_recommenders", "tensorflow_model_analysis", "recbole", "tf_agents"):
  assert importlib.util.find_spec(name), f"setup: {name} did not install"
PY
echo "$want" > "$stamp"
echo "setup: done" >&2
