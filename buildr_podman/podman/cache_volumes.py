"""`cache_volume { target }`: persistent state of a task that is not an output (BuildKit's cache
mounts): compiler caches, package downloads.

One named Podman volume per project, task and target, made on first use and kept across runs.
It is mounted read-write at its target, is never part of what the task returns (the agent
watches the workspace only) nor of the task cache's key, and `clean --cache` removes it. Its
label is not the leftover label (pods.LABEL): it outlives the run that made it on purpose.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from buildr_podman.model import Project, Task

if TYPE_CHECKING:
    from buildr_podman.podman.libpod import Libpod

__all__ = ["VOLUME_LABEL", "cache_volume_mounts", "remove_cache_volumes"]

VOLUME_LABEL = "io.buildr-podman.cache-volume"  # value: the project's root


def volume_name(project: Project, task: Task, target: str) -> str:
    project_id = hashlib.sha256(str(project.root.resolve()).encode()).hexdigest()[:12]
    target_id = hashlib.sha256(target.encode()).hexdigest()[:8]
    return f"buildr-cache-{project_id}-{task.name}-{target_id}"


def cache_volume_mounts(libpod: Libpod, project: Project,
                        task: Task) -> tuple[tuple[str, str], ...]:
    """The task's cache volumes, (name, target) each, made if missing."""
    from buildr_podman.podman.libpod import LibpodError

    volumes = []
    for target in task.container.cache_volumes:
        name = volume_name(project, task, target)
        if not libpod.volume_exists(name):
            try:
                libpod.create_volume(name, {VOLUME_LABEL: str(project.root)})
            except LibpodError:
                if not libpod.volume_exists(name):  # not a concurrent run making it too
                    raise
        volumes.append((name, target))
    return tuple(volumes)


def remove_cache_volumes() -> list[str]:
    """Removes every cache volume of every project (clean --cache); returns their names."""
    from buildr_podman.podman.podman_cli import podman

    names = podman("volume", "ls", "-q", "--filter", f"label={VOLUME_LABEL}").split()
    if names:
        podman("volume", "rm", "-f", *names)
    return names
