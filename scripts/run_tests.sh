#!/usr/bin/env bash
# Installs the stack, then runs the test suite (pytest arguments pass through).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=2
# The synthetic-shop tests need Fashion-MNIST's images (a Debian package; they skip without it).
FASHION_MNIST_DIR=/usr/share/datasets/fashion-mnist
if [ ! -d "$FASHION_MNIST_DIR" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
      || echo "warning: could not install dataset-fashion-mnist; the synthetic-shop tests will skip"
  else
    echo "note: $FASHION_MNIST_DIR is missing (apt-get install dataset-fashion-mnist, as root);" \
      "the synthetic-shop tests will skip"
  fi
fi
# The Redis user-state tests start Debian's redis-server themselves (they skip without it).
if ! command -v redis-server >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >/dev/null 2>&1 \
      || echo "warning: could not install redis-server; the Redis user-state tests will skip"
  else
    echo "note: redis-server is missing (apt-get install redis-server, as root);" \
      "the Redis user-state tests will skip"
  fi
fi
exec .venv/bin/python -m pytest -q "$@"
