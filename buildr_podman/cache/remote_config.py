"""Where the remote task cache is, as `buildr { cache { remote, upload, instance_name } }` says.

Read with the configuration, so it imports no gRPC: a project without a remote loads as fast
as before. The address forms are gRPC's own, minus TLS (not supported yet):

    remote = "grpc://HOST:PORT"     a REAPI server over plain HTTP/2 (127.0.0.1:8980, [::1]:80)
    remote = "unix:PATH"            a REAPI server on a unix socket; a relative PATH is from
                                    the repository root
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RemoteCacheSettings", "parse_remote"]

HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$")


@dataclass(frozen=True)
class RemoteCacheSettings:
    """A REAPI v2 ActionCache and CAS that serve a local miss, and maybe store successes."""

    url: str  #: as configured, for messages
    target: str  #: what grpc.insecure_channel takes
    upload: bool = False  #: store successful runs there too (typically CI)
    instance_name: str = ""  #: the REAPI instance name the server serves the cache under


def parse_remote(url: str, root: Path) -> str:
    """The gRPC target of a `remote` address; ValueError saying what to write instead."""
    if url.startswith("unix:"):
        path = url[len("unix:"):]
        if path.startswith("//"):  # unix:///abs/path, gRPC's other spelling
            path = path[2:]
        if not path:
            raise ValueError("unix: needs the socket's path, like \"unix:/run/reapi.sock\"")
        return "unix:" + str(root / path)  # an absolute path stays as it is
    if url.startswith("grpc://"):
        address = url[len("grpc://"):].rstrip("/")
        match = HOST_PORT.match(address)
        if not match or not 0 < int(match.group(2)) < 65536:
            raise ValueError(f"{url!r} has no HOST:PORT after grpc://, like "
                             "\"grpc://127.0.0.1:8980\"")
        return address
    scheme = url.split(":", 1)[0] if ":" in url else ""
    said = f"the scheme {scheme!r} is not supported" if scheme else "it has no scheme"
    raise ValueError(f"{said}: write \"grpc://HOST:PORT\" or \"unix:PATH\" (TLS is not "
                     "supported yet)")
