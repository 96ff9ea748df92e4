"""The container's SpecGenerator (container_spec.py) is what podman-py sent for the same
settings before the pod's calls moved to libpod.py: podman-py renders its create() arguments
here, as the reference, for settings hypothesis varies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from podman import api
from podman.domain.containers_create import CreateMixin

from buildr_podman.model import WORKSPACE, BindMount, ContainerSpec, Task, TmpfsMount
from buildr_podman.podman import limits
from buildr_podman.podman.agent_build import AGENT_MOUNT, AgentBundle
from buildr_podman.podman.container_spec import (
    BASELINE_MOUNT,
    SOCKET_MOUNT,
    ContainerPlace,
    bind,
    container_spec,
    may_remount,
    under,
)

AGENT = AgentBundle(Path("/home/u/.cache/buildr-podman/agent/abc"),
                    ("/.buildr/agent/buildr-agent",), "abc")


def podman_py_arguments(task: Task, place: ContainerPlace) -> dict[str, Any]:
    """The arguments the executor gave podman-py's containers.create() for these settings
    (pods._create_container as it was)."""
    spec = task.container
    remounts = may_remount(spec)
    arguments, variables = limits.container_limits(spec)

    def old_bind(source: object, target: str, read_only: bool) -> dict[str, Any]:
        return {"type": "bind", "source": str(source), "target": target, "read_only": read_only}

    def old_tmpfs(target: str, size: str | None) -> dict[str, Any]:
        return {"type": "tmpfs", "source": "tmpfs", "target": target,
                **({"size": size} if size else {})}

    extra = [old_bind(m["source"], m["destination"], "ro" in m["options"])
             for m in place.extra_mounts]
    volumes: dict[str, dict[str, Any]] = (
        {place.workspace_volume: {"bind": WORKSPACE, "extended_mode": ["nocopy"]}}
        if place.workspace_volume else {})
    volumes.update({name: {"bind": target, "mode": "rw"} for name, target in place.cache_volumes})
    overlays = [{"destination": under(WORKSPACE, target), "source": str(source), "options": []}
                for source, target in place.directories] if spec.inputs == "mount" else []
    if remounts:
        overlays += [{"destination": target, "source": str(source), "options": []}
                     for source, target in [
                         (AGENT.path, AGENT_MOUNT),
                         *((s, under(BASELINE_MOUNT, t)) for s, t in place.directories),
                         *((m["source"], m["target"]) for m in extra)]]
    return dict(
        image=spec.image, name=f"{place.name}-task", pod=place.name, labels=place.labels,
        entrypoint=list(AGENT.command),
        command=["serve", "--socket", f"{SOCKET_MOUNT}/agent.sock"],
        working_dir=WORKSPACE, stop_timeout=0, network_mode=spec.network,
        privileged=spec.privileged, no_new_privileges=not spec.privileged,
        cap_add=list(spec.cap_add), cap_drop=list(spec.cap_drop),
        environment={**dict(spec.environment), **variables},
        mounts=[*([] if remounts else [old_bind(AGENT.path, AGENT_MOUNT, True)]),
                old_tmpfs(SOCKET_MOUNT, "1m"),
                *([] if remounts else [
                    *(old_bind(s, under(BASELINE_MOUNT, t), True) for s, t in place.directories),
                    *extra]),
                *(old_bind(m.source, m.target, m.read_only) for m in spec.bind_mounts),
                *(old_tmpfs(m.target, m.size) for m in spec.tmpfs_mounts)],
        overlay_volumes=overlays, volumes=volumes, **arguments)


def rendered_by_podman_py(arguments: dict[str, Any]) -> dict[str, Any]:
    rendered: dict[str, Any] = json.loads(api.prepare_body(CreateMixin._render_payload(arguments)))
    return rendered


names = st.text("abcdefgh", min_size=1, max_size=6)
paths = names.map(lambda name: f"/srv/{name}")
container_specs = st.builds(
    ContainerSpec,
    image=st.sampled_from(["localhost/buildr-busybox:latest", "gcc"]),
    network=st.sampled_from(["none", "private"]),
    inputs=st.sampled_from(["mount", "copy"]),
    cap_add=st.lists(st.sampled_from(["NET_RAW", "SYS_ADMIN", "ALL"]), max_size=2).map(tuple),
    cap_drop=st.lists(st.sampled_from(["CHOWN", "KILL"]), max_size=2).map(tuple),
    bind_mounts=st.lists(st.builds(BindMount, source=paths.map(Path), target=paths,
                                   read_only=st.booleans()), max_size=2).map(tuple),
    tmpfs_mounts=st.lists(st.builds(TmpfsMount, target=paths,
                                    size=st.sampled_from([None, "64m"])), max_size=2).map(tuple),
    environment=st.lists(st.tuples(names.map(str.upper), names), max_size=2).map(tuple),
    privileged=st.booleans(),
    pids_limit=st.sampled_from([0, 64, 4096]),
    memory=st.sampled_from(["", "none", "512m"]),
)
places = st.builds(
    ContainerPlace,
    name=names.map(lambda name: f"buildr-t-{name}"),
    labels=st.just({"io.buildr-podman": "42", "io.buildr-podman.task": "t"}),
    directories=st.lists(st.tuples(paths.map(Path), st.sampled_from(["", "src"])), min_size=1,
                         max_size=2).map(tuple),
    workspace_volume=st.sampled_from([None, "buildr-t-x-workspace"]),
    extra_mounts=st.lists(st.builds(bind, paths, paths, st.booleans()), max_size=2).map(tuple),
    cache_volumes=st.lists(st.tuples(names.map(lambda n: f"buildr-cache-{n}"), paths),
                           max_size=2, unique_by=lambda volume: volume[0]).map(tuple),
)


@pytest.mark.parametrize("controllers", [frozenset(), frozenset({"pids", "memory"})])
# monkeypatch sets the same values for every example: not resetting it between them is fine
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=container_specs, place=places)
def test_the_spec_is_what_podman_py_rendered(controllers: frozenset[str], spec: ContainerSpec,
                                             place: ContainerPlace,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "cgroup_controllers", lambda: controllers)
    monkeypatch.delenv("BUILDR_AGENT_MAX_WATCHES", raising=False)
    task = Task(name="t", module_type="script", container=spec, script="true")
    ours = json.loads(json.dumps(container_spec(task, AGENT, place)))
    assert ours == rendered_by_podman_py(podman_py_arguments(task, place))


def test_the_agent_knobs_reach_the_container(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUILDR_AGENT_MAX_WATCHES", "10")
    task = Task(name="t", module_type="script", container=ContainerSpec(image="i"),
                script="true")
    body = container_spec(task, AGENT, ContainerPlace("p", {}, ((Path("/r"), ""),)))
    assert body["env"]["BUILDR_AGENT_MAX_WATCHES"] == "10"
