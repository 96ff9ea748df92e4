"""The task cache's key: equal for an unchanged task, different for every kind of change that
can change its result, and the digest of a REAPI v2 Action a REAPI server would compute."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import pytest

from buildr_podman._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from buildr_podman.cache import tree
from buildr_podman.cache.key import PROPERTY_NAMES, ActionKey, NotCacheable, action_key
from buildr_podman.cache.tree import StatCache, TreeBuilder
from buildr_podman.model import BindMount, ContainerSpec, Project, Task

IMAGE_ID = "sha256:" + "a" * 64


@pytest.fixture(autouse=True)
def _no_racy_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files made by a test are seconds old at most: remember them anyway."""
    monkeypatch.setattr(tree, "RACY_SECONDS", -1.0)


def make_project(root: Path) -> Project:
    (root / "src").mkdir(parents=True)
    (root / "src" / "main.c").write_text("int main(void) { return 0; }\n")
    (root / "README").write_text("read me\n")
    (root / "link").symlink_to("src/main.c")
    (root / ".buildr").mkdir()
    (root / ".buildr" / "tasks.hcl").write_text("# the configuration\n")
    return Project(root=root, out_dir=root / ".buildr" / "out")


def make_task(**changes: object) -> Task:
    task = Task(name="t", module_type="script", container=ContainerSpec(image="img:1"),
                script="make", environment=(("CC", "gcc"),))
    return dataclasses.replace(task, **changes)  # type: ignore[arg-type]


def key(project: Project, task: Task, image_id: str = IMAGE_ID,
        outputs: dict[str, Path] | None = None, cache: StatCache | None = None) -> ActionKey:
    return action_key(project, task, image_id, TreeBuilder(cache or StatCache()), outputs or {})


def test_an_unchanged_task_has_the_same_key(tmp_path: Path) -> None:
    project = make_project(tmp_path / "repo")
    assert key(project, make_task()).digest == key(project, make_task()).digest


def test_the_key_is_the_digest_of_a_reapi_action(tmp_path: Path) -> None:
    project = make_project(tmp_path / "repo")
    found = key(project, make_task(timeout_seconds=5.0))
    assert found.digest == (hashlib.sha256(found.action).hexdigest(), len(found.action))
    action = re_pb2.Action.FromString(found.action)
    assert action.command_digest.hash == hashlib.sha256(found.command).hexdigest()
    assert action.input_root_digest.hash == found.input_root[0]
    assert action.timeout.seconds == 5
    properties = {p.name: p.value for p in action.platform.properties}
    assert properties["container-image"] == f"podman-image-id:{IMAGE_ID}"
    command = re_pb2.Command.FromString(found.command)
    assert list(command.arguments) == ["/bin/sh", "-c", "make"]
    assert [(v.name, v.value) for v in command.environment_variables] == [("CC", "gcc")]
    assert command.working_directory == "workspace"


def test_platform_properties_have_the_conventional_names(tmp_path: Path) -> None:
    """A REAPI server and its workers read these names (BuildBuddy's, Bazel's, REAPI's own);
    a server must be configured with every one the client sends."""
    project = make_project(tmp_path / "repo")
    container = ContainerSpec(image="img:1", user="1000:1000", network="private",
                              cap_add=("NET_RAW", "CHOWN"), cap_drop=("ALL",), privileged=True)
    found = key(project, make_task(container=container, inputs_from=("gen", "conf"),
                                   outputs_used=("gen", "conf")))
    properties = {p.name: p.value for p in re_pb2.Action.FromString(found.action)
                  .platform.properties}
    assert properties["OSFamily"] == "linux"
    assert properties["ISA"] in ("x86-64", "aarch64")
    assert properties["container-image"] == f"podman-image-id:{IMAGE_ID}"
    assert properties["dockerUser"] == "1000:1000"
    assert properties["dockerNetwork"] == "private"
    assert properties["dockerAddCapabilities"] == "CHOWN,NET_RAW"
    assert properties["dockerDropCapabilities"] == "ALL"
    assert properties["dockerPrivileged"] == "true"
    assert properties["buildr.layers"] == "gen,conf"
    assert set(properties) <= set(PROPERTY_NAMES)
    others = set(properties) - {"OSFamily", "ISA", "container-image"}
    assert all(n.startswith(("docker", "buildr.")) for n in others)


def test_the_input_root_is_a_merkle_tree_of_directory_messages(tmp_path: Path) -> None:
    project = make_project(tmp_path / "repo")
    found = key(project, make_task())
    blobs = found.directories(TreeBuilder(StatCache()))
    root = re_pb2.Directory.FromString(blobs[found.input_root[0]])
    assert [d.name for d in root.directories] == ["workspace"]
    workspace = re_pb2.Directory.FromString(blobs[root.directories[0].digest.hash])
    assert [d.name for d in workspace.directories] == [".buildr", "src"]
    assert [f.name for f in workspace.files] == ["README"]
    assert [(s.name, s.target) for s in workspace.symlinks] == [("link", "src/main.c")]
    readme = workspace.files[0]
    assert readme.digest.hash == hashlib.sha256(b"read me\n").hexdigest()
    assert readme.node_properties.unix_mode.value == 0o644 & ~_umask()
    for data in blobs.values():
        assert hashlib.sha256(data).hexdigest() in blobs


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def changes(root: Path) -> dict[str, object]:
    """Each kind of change to the inputs, as a function of the repository."""
    return {
        "input byte": lambda: (root / "src" / "main.c").write_text(
            "int main(void) { return 1; }\n"),
        "input mode": lambda: (root / "README").chmod(0o755),
        "added file": lambda: (root / "src" / "new.h").write_text(""),
        "deleted file": lambda: (root / "README").unlink(),
        "added directory": lambda: (root / "empty").mkdir(),
        "symlink target": lambda: ((root / "link").unlink(), (root / "link").symlink_to("x")),
    }


@pytest.mark.parametrize("change", list(changes(Path())))
def test_every_change_to_the_inputs_changes_the_key(tmp_path: Path, change: str) -> None:
    project = make_project(tmp_path / "repo")
    cache = StatCache()
    before = key(project, make_task(), cache=cache)
    changes(project.root)[change]()  # type: ignore[operator]
    assert key(project, make_task(), cache=cache).digest != before.digest


@pytest.mark.parametrize("changed", [
    {"script": "make all"},
    {"environment": (("CC", "clang"),)},
    {"environment": (("CC", "gcc"), ("CFLAGS", "-O2"))},
    {"shell": "/bin/bash"},
    {"working_dir": "src"},
    {"module_type": "make"},
    {"timeout_seconds": 60.0},
    {"inputs_from": ("dep",), "outputs_used": ("dep",)},
    {"container": ContainerSpec(image="img:1", network="private")},
    {"container": ContainerSpec(image="img:1", user="1000:1000")},
    {"container": ContainerSpec(image="img:1", cap_add=("NET_RAW",))},
    {"container": ContainerSpec(image="img:1", cap_drop=("ALL",))},
    {"container": ContainerSpec(image="img:1", privileged=True)},
    {"container": ContainerSpec(image="img:1", pids_limit=64)},
    {"container": ContainerSpec(image="img:1", memory="512m")},
    {"container": ContainerSpec(image="img:1", environment=(("LANG", "C"),))},
], ids=lambda changed: ",".join(changed))
def test_every_change_to_the_command_or_container_changes_the_key(
        tmp_path: Path, changed: dict[str, object]) -> None:
    project = make_project(tmp_path / "repo")
    assert key(project, make_task(**changed)).digest != key(project, make_task()).digest


def test_what_the_container_does_not_show_is_not_in_the_key(tmp_path: Path) -> None:
    """Tag, pod reuse and the out dir: only what the task can see counts."""
    project = make_project(tmp_path / "repo")
    before = key(project, make_task())
    (project.out_dir / "t").mkdir(parents=True)
    (project.out_dir / "t.log").write_text("an earlier run's log\n")
    same_image = make_task(container=ContainerSpec(image="img:other-tag-same-id"))
    assert key(project, same_image).digest == before.digest
    assert key(project, make_task(), image_id="sha256:" + "b" * 64).digest != before.digest


def test_a_dependency_output_of_this_run_is_in_the_key(tmp_path: Path) -> None:
    project = make_project(tmp_path / "repo")
    task = make_task(outputs_used=("dep",))
    output = tmp_path / "dep-out"
    output.mkdir()
    (output / "lib.a").write_text("one")
    cache = StatCache()
    before = key(project, task, outputs={"dep": output}, cache=cache)
    (output / "lib.a").write_text("two")
    assert key(project, task, outputs={"dep": output}, cache=cache).digest != before.digest


def test_an_unchanged_file_is_not_hashed_again(tmp_path: Path) -> None:
    project = make_project(tmp_path / "repo")
    path = tmp_path / "stat.cache"
    first = StatCache(path)
    before = key(project, make_task(), cache=first)
    first.save()
    assert first.hashed == 3
    again = StatCache(path)  # as the next run loads it
    assert key(project, make_task(), cache=again).digest == before.digest
    assert again.hashed == 0


def test_a_rewrite_that_keeps_size_and_mtime_is_still_seen(tmp_path: Path) -> None:
    """Same size, mtime put back: the ctime (and a new inode, for a replaced file) tell."""
    project = make_project(tmp_path / "repo")
    cache = StatCache()
    before = key(project, make_task(), cache=cache)
    main = project.root / "src" / "main.c"
    st = main.stat()
    main.write_text("int main(void) { return 7; }\n")
    os.utime(main, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert key(project, make_task(), cache=cache).digest != before.digest


def test_a_recently_modified_file_is_not_remembered(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tree, "RACY_SECONDS", 3600.0)
    project = make_project(tmp_path / "repo")
    cache = StatCache()
    key(project, make_task(), cache=cache)
    key(project, make_task(), cache=cache)
    assert cache.hashed == 6


def test_a_damaged_stat_cache_file_starts_afresh(tmp_path: Path) -> None:
    project = make_project(tmp_path / "repo")
    path = tmp_path / "stat.cache"
    path.write_bytes(b"\x00garbage")
    cache = StatCache(path)
    key(project, make_task(), cache=cache)
    assert cache.hashed == 3


def test_secrets_make_a_task_uncacheable(tmp_path: Path) -> None:
    project = make_project(tmp_path / "repo")
    with pytest.raises(NotCacheable, match="secret_environment"):
        key(project, make_task(secret_environment=(("TOKEN", "s3cret"),)))


def test_a_writable_bind_mount_makes_a_task_uncacheable(tmp_path: Path) -> None:
    project = make_project(tmp_path / "repo")
    mount = BindMount(source=tmp_path, target="/data")
    with pytest.raises(NotCacheable, match="/data is writable"):
        key(project, make_task(container=ContainerSpec(image="i", bind_mounts=(mount,))))


def test_a_read_only_bind_mount_is_keyed_by_its_content(tmp_path: Path) -> None:
    project = make_project(tmp_path / "repo")
    data = tmp_path / "data"
    data.mkdir()
    (data / "table").write_text("1")
    mount = BindMount(source=data, target="/data", read_only=True)
    task = make_task(container=ContainerSpec(image="i", bind_mounts=(mount,)))
    cache = StatCache()
    before = key(project, task, cache=cache)
    (data / "table").write_text("2")
    assert key(project, task, cache=cache).digest != before.digest


def test_cache_secrets_keys_a_task_by_the_secrets_names_never_their_values(
        tmp_path: Path) -> None:
    project = make_project(tmp_path / "repo")
    task = make_task(secret_environment=(("TOKEN", "s3cret-one"),), cache_secrets=True)
    found = key(project, task)
    assert b"s3cret" not in found.action + found.command
    other_value = make_task(secret_environment=(("TOKEN", "s3cret-two"),), cache_secrets=True)
    assert key(project, other_value).digest == found.digest
    other_name = make_task(secret_environment=(("KEY", "s3cret-one"),), cache_secrets=True)
    assert key(project, other_name).digest != found.digest
    assert key(project, make_task()).digest != found.digest


def test_cache_false_makes_a_task_uncacheable(tmp_path: Path) -> None:
    with pytest.raises(NotCacheable, match="cache = false"):
        key(make_project(tmp_path / "repo"), make_task(cache=False))


def test_a_cache_volume_is_not_in_the_key(tmp_path: Path) -> None:
    project = make_project(tmp_path / "repo")
    with_volume = make_task(container=ContainerSpec(image="img:1", cache_volumes=("/cache",)))
    assert key(project, with_volume).digest == key(project, make_task()).digest


def test_the_stat_cache_forgets_what_is_long_gone(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tree, "PRUNE_SLACK", 0)
    project = make_project(tmp_path / "repo")
    path = tmp_path / "stat.cache"
    for index in range(4):
        (project.root / f"gone{index}").write_text("x")
    cache = StatCache(path)
    key(project, make_task(), cache=cache)
    cache.save()
    for index in range(4):
        (project.root / f"gone{index}").unlink()
    again = StatCache(path)
    assert len(again.file_paths()) == 7
    key(project, make_task(), cache=again)
    again.save()
    assert sorted(Path(p).name for p in StatCache(path).file_paths()) == ["README", "main.c",
                                                                          "tasks.hcl"]


def test_an_unchanged_directory_is_known_by_its_stat_and_a_change_is_not_hidden(
        tmp_path: Path) -> None:
    project = make_project(tmp_path / "repo")
    path = tmp_path / "stat.cache"
    first = StatCache(path)
    before = key(project, make_task(), cache=first)
    first.save()
    again = StatCache(path)  # the next run
    found = key(project, make_task(), cache=again)
    assert found.digest == before.digest
    assert found.root.directories["workspace"].directories["src"].known is not None
    for change in ("added file", "input byte", "deleted file", "symlink target"):
        changes(project.root)[change]()  # type: ignore[operator]
        changed = key(project, make_task(), cache=again)
        assert changed.digest != found.digest, change
        assert changed.digest == key(project, make_task()).digest, change  # a fresh cache's
        found = changed
