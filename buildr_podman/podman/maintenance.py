"""The Podman backend's hooks besides its executor: stop running tasks, doctor, clean.

Registered as a built-in plugin (see plugins.BUILTIN_PLUGINS); heavy imports happen inside
the hooks, so loading it costs nothing for commands that do not call them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from buildr_podman.doctor import Finding
from buildr_podman.hookspecs import hookimpl
from buildr_podman.model import Project

__all__ = ["buildr_cancel_running", "buildr_clean", "buildr_doctor"]

EXECUTOR_NAME = "podman"


@hookimpl
def buildr_cancel_running(executor_name: str) -> None:
    if executor_name == EXECUTOR_NAME:
        from buildr_podman.podman.leftovers import kill_own_containers

        kill_own_containers()


@hookimpl
def buildr_doctor(project: Project | None, image: str | None) -> Iterator[Finding]:
    from buildr_podman.podman.checks import run_checks

    return run_checks(project, image)


@hookimpl
def buildr_clean(everything: bool, root: Path | None) -> Iterable[str]:
    from buildr_podman.podman.leftovers import clean

    return clean(everything)
