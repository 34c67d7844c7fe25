#!/usr/bin/env bash
# Regenerates recommender_pb2*.py. Needs grpcio-tools 1.62.x (protoc for protobuf 4.25, the
# runtime the stack pins); it is a developer tool, not a runtime dependency:
#   python3 -m venv /tmp/protoc && /tmp/protoc/bin/pip install grpcio-tools==1.62.3
set -euo pipefail
cd "$(dirname "$0")/../.."
${PROTOC_PYTHON:-/tmp/protoc/bin/python} -m grpc_tools.protoc -I. --python_out=. \
  --grpc_python_out=. serving/protos/recommender.proto
