"""The worker reads a task's Action (cache/key.py's) back into the same Task, and refuses, with
a message naming the property, what it cannot honour."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from pathlib import Path

import pytest

from buildr_podman._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from buildr_podman.cache import tree
from buildr_podman.cache.key import action_key
from buildr_podman.cache.tree import StatCache, TreeBuilder
from buildr_podman.model import ContainerSpec, Project, Task, TmpfsMount
from buildr_podman.worker.properties import MATCH_KEYS, Refused, task_of, worker_properties

IMAGE_ID = "b" * 64


@pytest.fixture(autouse=True)
def _no_racy_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tree, "RACY_SECONDS", -1.0)
    for name in [n for n in os.environ if n.startswith("BUILDR_AGENT_")]:
        monkeypatch.delenv(name)


def keyed(tmp_path: Path, task: Task, outputs: dict[str, Path] | None = None
          ) -> tuple[str, re_pb2.Action, re_pb2.Command, dict[str, re_pb2.Directory]]:
    root = tmp_path / "repo"
    (root / "src").mkdir(parents=True, exist_ok=True)
    (root / "src" / "a.c").write_text("int a;\n")
    project = Project(root=root, out_dir=root / ".buildr" / "out")
    builder = TreeBuilder(StatCache())
    key = action_key(project, task, IMAGE_ID, builder, outputs or {})
    directories = {h: re_pb2.Directory.FromString(d)
                   for h, d in key.directories(builder).items()}
    return (key.hash, re_pb2.Action.FromString(key.action),
            re_pb2.Command.FromString(key.command), directories)


def make_task(**changes: object) -> Task:
    task = Task(name="build", module_type="script",
                container=ContainerSpec(image="img:1", user="1000:1000", network="private",
                                        cap_add=("NET_RAW",), cap_drop=("ALL",),
                                        tmpfs_mounts=(TmpfsMount("/tmp", "64m"),),
                                        pids_limit=99, memory="512m"),
                script="make all", shell="/bin/bash", environment=(("CC", "gcc"),),
                working_dir="src", timeout_seconds=30.0)
    return dataclasses.replace(task, **changes)  # type: ignore[arg-type]


def test_the_action_of_a_task_is_that_task_again(tmp_path: Path) -> None:
    task = make_task()
    action_hash, action, command, directories = keyed(tmp_path, task)
    leased = task_of(action_hash, action, command, directories)
    got = leased.task
    assert leased.image == IMAGE_ID
    assert got.container.image == IMAGE_ID
    assert got.container.user == "1000:1000"
    assert got.container.network == "private"
    assert got.container.cap_add == ("NET_RAW",) and got.container.cap_drop == ("ALL",)
    assert got.container.tmpfs_mounts == (TmpfsMount("/tmp", "64m"),)
    assert got.container.pids_limit == 99 and got.container.memory == "512m"
    assert got.container.inputs == "copy"
    assert got.argv() == task.argv()
    assert got.environment == (("CC", "gcc"),)
    assert got.working_dir == "src"
    assert got.timeout_seconds == 30.0
    assert got.name == f"action-{action_hash[:12]}"
    assert leased.dependencies == ()


def test_dependency_outputs_and_layers_come_from_the_input_root(tmp_path: Path) -> None:
    gen = tmp_path / "gen-out"
    (gen / "include").mkdir(parents=True)
    (gen / "include" / "g.h").write_text("#define G 1\n")
    conf = tmp_path / "conf-out"
    conf.mkdir()
    task = make_task(inputs_from=("gen",), outputs_used=("conf", "gen"))
    leased = task_of(*keyed(tmp_path, task, {"gen": gen, "conf": conf}))
    assert leased.task.inputs_from == ("gen",)
    assert sorted(leased.dependencies) == ["conf", "gen"]
    assert sorted(leased.task.outputs_used) == ["conf", "gen"]


def with_property(action: re_pb2.Action, name: str, value: str) -> re_pb2.Action:
    changed = re_pb2.Action()
    changed.CopyFrom(action)
    kept = [p for p in changed.platform.properties if p.name != name]
    del changed.platform.properties[:]
    changed.platform.properties.extend(
        sorted([*kept, re_pb2.Platform.Property(name=name, value=value)], key=lambda p: p.name))
    return changed


@pytest.mark.parametrize(("name", "value", "said"), [
    ("colour", "blue", "does not understand: colour"),
    ("dockerNetwork", "host", "dockerNetwork is 'host'"),
    ("dockerUser", "root", "dockerUser is 'root'"),
    ("dockerPrivileged", "yes", "dockerPrivileged is 'yes'"),
    ("dockerAddCapabilities", "FLY", "not a capability"),
    ("buildr.memory", "lots", "buildr.memory is 'lots'"),
    ("buildr.pids-limit", "-1", "whole number"),
    ("buildr.tmpfs", "/workspace:1m", "/PATH:SIZE"),
    ("buildr.bind-mounts", "/data:ro", "runs on the client's machine"),
    ("buildr.secret-names", "TOKEN", "never travel"),
    ("buildr.version", "0.0.0-other", "this worker's is"),
    ("buildr.agent-protocol", "99", "this worker's is"),
    ("buildr.agent-environment", "BUILDR_AGENT_X=1", "runs with ''"),
    ("buildr.layers", "ghost", "does not hold under .buildr/out/"),
    ("container-image", "localhost/busybox", "podman-image-id:<image id>"),
    ("container-image", "podman-image-id:latest", "not an image id"),
    ("unixUID", "1000", "disagree"),
    ("OSFamily", "windows", "OSFamily is 'windows'"),
])
def test_what_the_worker_cannot_honour_is_refused_by_name(
        tmp_path: Path, name: str, value: str, said: str) -> None:
    action_hash, action, command, directories = keyed(tmp_path, make_task())
    with pytest.raises(Refused, match=re.escape(said)):
        task_of(action_hash, with_property(action, name, value), command, directories)


def test_unix_ids_and_the_conventional_values_are_understood(tmp_path: Path) -> None:
    action_hash, action, command, directories = keyed(
        tmp_path, make_task(container=ContainerSpec(image="img:1")))
    for name, value in (("unixUID", "1001"), ("unixGID", "1002"), ("dockerNetwork", "off"),
                        ("container-image", "docker://localhost/buildr-busybox:latest"),
                        ("Pool", "big")):
        action = with_property(action, name, value)
    got = task_of(action_hash, action, command, directories)
    assert got.task.container.user == "1001:1002"
    assert got.task.container.network == "none"
    assert got.image == "localhost/buildr-busybox:latest"


def test_another_clients_argv_runs_through_the_shell_as_it_is(tmp_path: Path) -> None:
    action_hash, action, _, directories = keyed(tmp_path, make_task())
    command = re_pb2.Command(arguments=["gcc", "-o", "a b", "a.c"],
                             working_directory="workspace")
    got = task_of(action_hash, action, command, directories).task
    assert got.argv() == ["/bin/sh", "-c", "exec gcc -o 'a b' a.c"]
    assert got.working_dir == "."


@pytest.mark.parametrize("directory", ["", "src", "workspace/../etc", "workspace//x"])
def test_a_working_directory_outside_the_workspace_is_refused(
        tmp_path: Path, directory: str) -> None:
    action_hash, action, command, directories = keyed(tmp_path, make_task())
    command.working_directory = directory
    with pytest.raises(Refused, match="working_directory"):
        task_of(action_hash, action, command, directories)


def test_an_input_root_of_another_layout_is_refused(tmp_path: Path) -> None:
    action_hash, action, command, directories = keyed(tmp_path, make_task())
    root = directories[action.input_root_digest.hash]
    root.files.add(name="stray", digest=re_pb2.Digest(hash=hashlib.sha256(b"").hexdigest()))
    with pytest.raises(Refused, match="stray"):
        task_of(action_hash, action, command, directories)


def test_the_worker_says_what_the_scheduler_matches() -> None:
    mine = worker_properties()
    assert set(mine) == set(MATCH_KEYS)
    assert mine["OSFamily"] == "linux"


def test_another_clients_action_has_its_input_root_as_workspace_and_declared_outputs() -> None:
    root = re_pb2.Directory(files=[re_pb2.FileNode(name="BUILD", digest=re_pb2.Digest(
        hash=hashlib.sha256(b"").hexdigest()))])
    data = root.SerializeToString(deterministic=True)
    action = re_pb2.Action(input_root_digest=re_pb2.Digest(
        hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data)))
    for name, value in (("OSFamily", "linux"),
                        ("container-image", "docker://localhost/buildr-busybox:latest")):
        action.platform.properties.add(name=name, value=value)
    command = re_pb2.Command(arguments=["/bin/sh", "-c", "touch out/a"],
                             working_directory="pkg", output_paths=["out/a", "gen", ""])
    leased = task_of("c" * 64, action, command, {action.input_root_digest.hash: root})
    assert leased.workspace == "" and leased.dependencies == ()
    assert leased.task.working_dir == "pkg"
    assert leased.outputs == (("out/a", "pkg/out/a"), ("gen", "pkg/gen"), ("", "pkg"))
    command.output_paths[:] = ["../escape"]
    with pytest.raises(Refused, match="not a plain relative path"):
        task_of("c" * 64, action, command, {action.input_root_digest.hash: root})
