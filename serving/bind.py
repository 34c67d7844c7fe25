"""Where the servers listen: loopback unless told otherwise.

Nothing here authenticates a caller (README, "Serving": what is and is not authenticated), so a
server reachable from other machines must be asked for with a flag (`--host 0.0.0.0`), never be
the default. Stock TF Serving binds 0.0.0.0; the local model server is a development stand-in.
"""
from __future__ import annotations

LOOPBACK = "127.0.0.1"


def grpc_address(host: str, port: int) -> str:
  """host:port as gRPC's add_insecure_port takes it (an IPv6 host in brackets)."""
  if ":" in host and not host.startswith("["):
    host = f"[{host}]"
  return f"{host}:{port}"
