"""Where tasks run remotely, as `buildr { remote { execution, instance_name } }` or
`run --remote URL` says.

Read with the configuration, so it imports no gRPC. The address forms are the remote cache's
(cache/remote_config.py): "grpc://HOST:PORT" or "unix:PATH", no TLS yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from buildr_podman.cache.remote_config import parse_remote

__all__ = ["RemoteExecutionSettings", "execution_settings"]


@dataclass(frozen=True)
class RemoteExecutionSettings:
    """A REAPI v2 server with an Execution service (and the CAS and ActionCache it uses)."""

    url: str  #: as configured, for messages
    target: str  #: what grpc.insecure_channel takes
    instance_name: str = ""  #: the REAPI instance the server executes under


def execution_settings(url: str, root: Path, instance_name: str = "") -> RemoteExecutionSettings:
    """The settings of an address; ValueError saying what to write instead. A relative unix
    PATH is from `root`."""
    return RemoteExecutionSettings(url, parse_remote(url, root), instance_name)
