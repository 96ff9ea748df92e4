"""A task container's resource limits (`pids_limit`, `memory` in `container { }`), and where the
machine can enforce them.

Rootless Podman sets cgroup limits only on cgroup v2 with the controllers delegated to the
user (systemd does so for pids and memory on a usual workstation); on cgroup v1, or without
delegation, it ignores them with a warning. There the pids limit falls back to RLIMIT_NPROC,
which the agent sets on the task's process (agent/limits.py); memory goes unbounded, and
`doctor` says so.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any

from buildr_podman.agent.limits import PIDS_LIMIT_VARIABLE
from buildr_podman.model import ContainerSpec

__all__ = ["PIDS_LIMIT_VARIABLE", "cgroup_controllers", "container_limits", "memory_bytes",
           "unenforced"]

DEFAULT_MEMORY_SHARE = 0.75  # of the machine's memory, when `memory` is not set
UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


@functools.lru_cache(maxsize=1)
def cgroup_controllers() -> frozenset[str]:
    """The cgroup v2 controllers delegated to this user's rootless containers; empty on
    cgroup v1 (or a hybrid layout), where rootless Podman can set no limit at all."""
    from buildr_podman.podman.checks import cgroup_layout

    if cgroup_layout() != "unified":
        return frozenset()
    uid = os.getuid()
    service = Path(f"/sys/fs/cgroup/user.slice/user-{uid}.slice/user@{uid}.service")
    try:
        return frozenset((service / "cgroup.controllers").read_text().split())
    except OSError:
        return frozenset()


def memory_bytes(spec: ContainerSpec) -> int | None:
    """The container's memory limit in bytes; None for no limit."""
    if spec.memory == "none":
        return None
    match = re.fullmatch(r"(\d+)([kmg])", spec.memory)
    if match:
        return int(match[1]) * UNITS[match[2]]
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None
    return int(physical * DEFAULT_MEMORY_SHARE)


def container_limits(spec: ContainerSpec) -> tuple[dict[str, Any], dict[str, str]]:
    """(arguments for Podman's create, variables for the agent) that bound the container."""
    controllers = cgroup_controllers()
    arguments: dict[str, Any] = {}
    variables: dict[str, str] = {}
    if spec.pids_limit:
        if "pids" in controllers:
            arguments["pids_limit"] = spec.pids_limit
        else:
            variables[PIDS_LIMIT_VARIABLE] = str(spec.pids_limit)
    memory = memory_bytes(spec)
    if memory and "memory" in controllers:
        arguments["mem_limit"] = memory
    return arguments, variables


def unenforced() -> list[str]:
    """What this machine cannot bound, one phrase each (for `doctor`)."""
    controllers = cgroup_controllers()
    missing = []
    if "pids" not in controllers:
        missing.append("pids_limit only as a limit per uid (RLIMIT_NPROC), counted across all "
                       "your containers, not per container")
    if "memory" not in controllers:
        missing.append("memory not at all (a task can use all the machine's memory)")
    return missing
