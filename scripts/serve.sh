#!/usr/bin/env bash
# After scripts/run_pipeline.sh: serves the pushed models locally (model server + cascade on
# gRPC 127.0.0.1:50051 and HTTP 127.0.0.1:8080; --host 0.0.0.0 for every interface). Flags pass
# through, see `python -m serving.serve --help`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=2
exec .venv/bin/python -m serving.serve "$@"
