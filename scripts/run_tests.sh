#!/usr/bin/env bash
# Installs the stack, then runs the test suite (pytest arguments pass through).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=2
# Debian packages some tests need (those tests skip without them): installed when run as root.
need() {  # need PATH_OR_COMMAND PACKAGE WHICH_TESTS
  if [ -e "$1" ] || command -v "$1" >/dev/null 2>&1; then return; fi
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null 2>&1 \
      || echo "warning: could not install $2; $3 will skip"
  else
    echo "note: $1 is missing (apt-get install $2, as root); $3 will skip"
  fi
}
need /usr/share/datasets/fashion-mnist dataset-fashion-mnist "the synthetic-shop tests"
need redis-server redis-server "the Redis user-state tests"
need chromium chromium "the run page's headless-browser checks"
exec .venv/bin/python -m pytest -q "$@"
