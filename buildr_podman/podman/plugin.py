"""The Podman backend's hook implementations (entry point `podman` of group `buildr`)."""

from __future__ import annotations

from buildr_podman.executor import Executor
from buildr_podman.hookspecs import hookimpl


@hookimpl
def buildr_executors() -> list[Executor]:
    from buildr_podman.podman.executor import PodmanExecutor

    return [PodmanExecutor()]
