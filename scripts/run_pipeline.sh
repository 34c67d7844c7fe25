#!/usr/bin/env bash
# Installs the stack, then runs the whole pipeline on MovieLens-100K (or pass your own flags,
# e.g. --data_root DIR). See README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=2
if [ $# -eq 0 ]; then set -- --movielens; fi
exec .venv/bin/python -m pipeline.runners.local_runner "$@"
