"""What Podman is asked to create for a task: the container's SpecGenerator, as libpod's
`POST /containers/create` takes it (libpod.py sends it).

The JSON is the one podman-py renders for the same settings (None and empty values left
out, as its `prepare_body` does); tests/unit/test_container_spec.py checks the two agree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buildr_podman.model import WORKSPACE, ContainerSpec, Task
from buildr_podman.podman.agent_build import AGENT_MOUNT, AgentBundle
from buildr_podman.podman.input_mapping import MappedDirectories
from buildr_podman.podman.limits import container_limits

__all__ = ["BASELINE_MOUNT", "SOCKET_MOUNT", "SOCKET_NAME", "ContainerPlace", "bind",
           "container_spec", "may_remount", "under"]

# The agent's socket lives on a small tmpfs of the container's own, and the host reaches it
# through /proc/PID/root: nothing of the host is mounted writable for it, so a task cannot
# leave files on the host (a bind-mounted directory under $XDG_RUNTIME_DIR, a small tmpfs
# on a workstation, took a task's 20 MB, chowned so that the user could not delete them).
# The host may open /proc/PID/root of the agent although the agent is not dumpable
# (agent/hardening.py): the user owns the container's user namespace.
SOCKET_MOUNT = "/.buildr/sock"
SOCKET_TMPFS_SIZE = "1m"
SOCKET_NAME = "agent.sock"
BASELINE_MOUNT = "/.buildr/base"  # the inputs again, read-only: what the workspace started as

Mount = dict[str, Any]


@dataclass(frozen=True)
class ContainerPlace:
    """Where a task's container goes and what it is given besides the task's own settings."""

    name: str  #: the pod's name; the container is NAME-task
    labels: dict[str, str]
    directories: MappedDirectories  #: the inputs: host directory and workspace path
    workspace_volume: str | None = None  #: inputs = "copy": the volume they are copied into
    extra_mounts: tuple[Mount, ...] = ()  #: dependencies' outputs, the hidden out dir
    cache_volumes: tuple[tuple[str, str], ...] = ()  #: (volume name, target), kept across runs


def container_spec(task: Task, agent: AgentBundle, place: ContainerPlace) -> dict[str, Any]:
    """The SpecGenerator of the task's container in pod `place.name`, serving the agent."""
    spec = task.container
    remounts = may_remount(spec)
    limits, limit_variables = container_limits(spec)
    body: dict[str, Any] = {
        "image": spec.image,
        "name": f"{place.name}-task",
        "pod": place.name,
        "labels": place.labels,
        "entrypoint": list(agent.command),
        "command": ["serve", "--socket", f"{SOCKET_MOUNT}/{SOCKET_NAME}"],
        "work_dir": WORKSPACE,
        # Nothing in the container needs a graceful stop (the agent keeps no state), and a
        # stop that waits 10 s for an agent not yet handling SIGTERM is a leak in time.
        "stop_timeout": 0,
        # "private": a network namespace of the container's own, with Podman's rootless
        # user-mode networking (slirp4netns or pasta); "none": loopback only.
        "netns": {"nsmode": spec.network},
        "privileged": spec.privileged,
        "no_new_privileges": not spec.privileged,
        "cap_add": list(spec.cap_add),
        "cap_drop": list(spec.cap_drop),
        "env": {**dict(spec.environment), **_agent_knobs(), **limit_variables},
        "mounts": _mounts(spec, agent, place, remounts),
        "overlay_volumes": [*_workspace_overlays(task, place.directories),
                            *(_overlaid_host_mounts(agent, place) if remounts else [])],
        "volumes": _named_volumes(place),
        "resource_limits": _resource_limits(limits),
    }
    return {key: value for key, value in body.items() if value not in ([], {})}


def _mounts(spec: ContainerSpec, agent: AgentBundle, place: ContainerPlace,
            remounts: bool) -> list[Mount]:
    # A task that may remount read-only binds gets the host's directories as overlays instead
    # (_overlaid_host_mounts): only its own tmpfs and binds stay mounts.
    return [*([] if remounts else [bind(agent.path, AGENT_MOUNT, read_only=True)]),
            _tmpfs(SOCKET_MOUNT, SOCKET_TMPFS_SIZE),
            *([] if remounts else [*_baseline_mounts(place.directories),
                                   *place.extra_mounts]),
            *(bind(m.source, m.target, m.read_only) for m in spec.bind_mounts),
            *(_tmpfs(m.target, m.size) for m in spec.tmpfs_mounts)]


def _named_volumes(place: ContainerPlace) -> list[dict[str, Any]]:
    # nocopy: the image's own files at the workspace path (if any) stay out of the volume, as
    # the overlay hides them in the other mode.
    volumes = ([{"Name": place.workspace_volume, "Dest": WORKSPACE, "Options": ["nocopy"]}]
               if place.workspace_volume is not None else [])
    # cache_volume { target }: kept across runs (cache_volumes.py)
    volumes += [{"Name": name, "Dest": target, "Options": ["rw"]}
                for name, target in place.cache_volumes]
    return volumes


def _resource_limits(limits: dict[str, int]) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if "pids_limit" in limits:
        resources["pids"] = {"limit": limits["pids_limit"]}
    if "mem_limit" in limits:
        resources["memory"] = {"limit": limits["mem_limit"]}
    return resources


def _agent_knobs() -> dict[str, str]:
    """BUILDR_AGENT_* variables of the host reach the agent: the knobs that let tests and
    benchmarks force the change tracker's safety nets (see agent/watcher.TrackerLimits)."""
    return {key: value for key, value in os.environ.items() if key.startswith("BUILDR_AGENT_")}


def _tmpfs(target: str, size: str | None) -> Mount:
    return {"destination": target, "options": [f"size={size}"] if size else [],
            "source": "tmpfs", "type": "tmpfs"}


def bind(source: Path | str, target: str, read_only: bool) -> Mount:
    return {"destination": target, "options": ["ro"] if read_only else [],
            "source": str(source), "type": "bind"}


def _workspace_overlays(task: Task, directories: MappedDirectories) -> list[dict[str, Any]]:
    """The repository (or each mapped directory) under a copy-on-write overlay: the task sees
    and may change it, but its writes land in the container's layer, never in the repo.
    Empty when the inputs are copied in instead (into the pod's workspace volume)."""
    if task.container.inputs != "mount":
        return []
    return [{"destination": under(WORKSPACE, target), "source": str(source), "options": []}
            for source, target in directories]


def may_remount(spec: ContainerSpec) -> bool:
    """Whether the task may remount its read-only binds read-write (CAP_SYS_ADMIN in the
    container's user namespace: privileged, or asked for)."""
    return spec.privileged or bool({"ALL", "SYS_ADMIN"} & set(spec.cap_add))


def _overlaid_host_mounts(agent: AgentBundle, place: ContainerPlace) -> list[dict[str, Any]]:
    """The agent bundle, the baseline and the other read-only binds (the dependencies'
    outputs) for a task that could remount a read-only bind read-write and write through it
    (into the agent every later run uses, the repository, or another task's outputs): each
    under a copy-on-write overlay instead, whose writes land in the container's own layer.
    Such a pod serves no other task (warm_pods.reusable)."""
    sources = [(str(agent.path), AGENT_MOUNT),
               *((str(source), under(BASELINE_MOUNT, target))
                 for source, target in place.directories),
               *((m["source"], m["destination"]) for m in place.extra_mounts)]
    return [{"destination": target, "source": source, "options": []}
            for source, target in sources]


def _baseline_mounts(directories: MappedDirectories) -> list[Mount]:
    """Read-only binds of the same inputs at BASELINE_MOUNT, so the agent can compare a
    rewritten file with its original (a bind costs nothing; nothing is copied)."""
    return [bind(source, under(BASELINE_MOUNT, target), read_only=True)
            for source, target in directories]


def under(mount: str, target: str) -> str:
    return f"{mount}/{target}" if target else mount
