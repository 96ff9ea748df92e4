"""The agent's servicer and the host's stream consumer, over real gRPC on a unix socket.

No container here: the agent runs in-process on the host, with real inotify and a real task
process, so the protocol and the archive path are tested without Podman.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from buildr_podman._protos.buildr.remote.v1 import agent_pb2, agent_pb2_grpc
from buildr_podman.agent.service import AgentService, add_agent_service
from buildr_podman.archive.extract import StagedTree, extract_tar_stream, stage_tar_stream
from buildr_podman.archive.owned import remove_tree
from buildr_podman.errors import AgentError
from buildr_podman.model import ContainerSpec, Task
from buildr_podman.podman.agent_client import AgentClient, RunSpec
from buildr_podman.podman.task_stream import receive_events
from buildr_podman.s2 import S2Reader


class Observer:
    def __init__(self) -> None:
        self.chunks: list[tuple[str, bytes]] = []
        self.logs: list[str] = []

    def output(self, task: Task, stream: str, data: bytes) -> None:
        self.chunks.append((stream, data))

    def log(self, task: Task, message: str) -> None:
        self.logs.append(message)

    def text(self, stream: str) -> str:
        return b"".join(d for s, d in self.chunks if s == stream).decode()


class Into:
    """Lands every archive in one directory, whatever the result (where a real landing puts
    it is tested in tests/unit/test_landing.py)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def stage(self, task: Task, archive: object, observer: object = None) -> StagedTree:
        return stage_tar_stream(archive, self.path)

    def land(self, task: Task, staged: StagedTree, succeeded: bool,
             observer: object = None) -> Path:
        staged.land(self.path)
        return self.path


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentClient]:
    socket_path = tmp_path / "agent.sock"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    add_agent_service(AgentService(threading.Event()), server)
    server.add_insecure_port(f"unix:{socket_path}")
    server.start()
    client = AgentClient(str(socket_path))
    client.wait_ready(10, lambda: True)
    client.hello()
    yield client
    client.close()
    server.stop(grace=None).wait()


def make_task(script: str) -> Task:
    return Task(name="t", module_type="script", container=ContainerSpec(image="unused"),
                script=script)


def run(agent: AgentClient, workspace: Path, out: Path, script: str) -> tuple:
    task = make_task(script)
    request = RunSpec(task_name="t", argv=task.argv(), workspace=str(workspace),
                      working_dir=str(workspace), environment={"X": "42"})
    observer = Observer()
    outcome = receive_events(task, agent.run(request), Into(out), observer)
    return outcome, observer


def test_output_streams_and_only_changed_files_come_back(agent, tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    (workspace / "src").mkdir(parents=True)
    (workspace / "src" / "keep.c").write_text("untouched\n")
    (workspace / "old.txt").write_text("old\n")
    out = tmp_path / "out" / "t"
    outcome, observer = run(agent, workspace, out, """
        echo "x is $X in $BUILDR_WORKSPACE"
        echo oops >&2
        mkdir -p gen/a/b && echo deep > gen/a/b/deep.txt
        printf '#!/bin/sh\\n' > tool.sh && chmod 4755 tool.sh
        ln -s gen/a/b/deep.txt link
        rm old.txt
        exit 3
    """)
    assert outcome.exit_code == 3 and not outcome.error
    assert observer.text("stdout") == f"x is 42 in {workspace}\n"
    assert observer.text("stderr") == "oops\n"
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        "gen", "gen/a", "gen/a/b", "gen/a/b/deep.txt", "link", "tool.sh"]
    assert (out / "gen/a/b/deep.txt").read_text() == "deep\n"
    assert os.readlink(out / "link") == "gen/a/b/deep.txt"
    assert (out / "tool.sh").stat().st_mode & 0o7777 == 0o755  # setuid never comes back
    assert outcome.files_returned == 3
    assert outcome.deleted_paths == ("old.txt",)


def test_a_plain_protobuf_client_reads_the_archive_events(agent, tmp_path: Path) -> None:
    # The agent writes archive events by hand (archive_wire.py); any gRPC client with the
    # generated code must still read them as RunEvents.
    workspace = tmp_path / "ws"
    workspace.mkdir()
    script = "head -c 3000000 /dev/urandom > big.bin"  # three S2 blocks, so three messages
    request = agent_pb2.RunRequest(task_name="t", argv=make_task(script).argv(),
                                   workspace=str(workspace), working_dir=str(workspace))
    stub = agent_pb2_grpc.AgentStub(agent._channel)
    events = list(stub.Run(request))
    chunks = [event.archive.data for event in events if event.HasField("archive")]
    assert len(chunks) >= 3 and events[-1].HasField("result")
    extract_tar_stream(S2Reader(iter(chunks)), tmp_path / "out")
    assert (tmp_path / "out" / "big.bin").read_bytes() == (workspace / "big.bin").read_bytes()


def test_a_second_run_replaces_the_previous_output(agent, tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    out = tmp_path / "out" / "t"
    run(agent, workspace, out, "echo one > first.txt")
    (workspace / "first.txt").unlink()
    outcome, _ = run(agent, workspace, out, "echo two > second.txt")
    assert outcome.exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == ["second.txt"]


def test_a_missing_shell_is_a_clear_error(agent, tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    request = RunSpec(task_name="t", argv=["/no/such/shell", "-c", "true"],
                      workspace=str(workspace), working_dir=str(workspace))
    outcome = receive_events(make_task("true"), agent.run(request), Into(tmp_path / "o"),
                             Observer())
    assert outcome.exit_code == 127
    assert "/no/such/shell" in outcome.error


def test_a_protocol_mismatch_fails_the_handshake(agent, tmp_path: Path) -> None:
    stub = agent_pb2_grpc.AgentStub(agent._channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.Hello(agent_pb2.HelloRequest(protocol_version=99, host_version="9.9"))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "protocol" in info.value.details()


def test_a_dead_agent_is_an_agent_error(tmp_path: Path) -> None:
    client = AgentClient(str(tmp_path / "nobody.sock"))
    with pytest.raises(AgentError, match="exited before it listened"):
        client.wait_ready(5, lambda: False)


def test_tasks_do_not_inherit_the_frozen_agents_loader_settings() -> None:
    from buildr_podman.agent.service import task_base_environment

    frozen = {"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/.buildr/agent/_internal",
              "LD_LIBRARY_PATH_ORIG": "/opt/lib", "_PYI_APPLICATION_HOME_DIR": "/x",
              "IMAGE_VAR": "kept"}
    assert task_base_environment(frozen) == {"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/opt/lib",
                                             "IMAGE_VAR": "kept"}
    del frozen["LD_LIBRARY_PATH_ORIG"]
    assert "LD_LIBRARY_PATH" not in task_base_environment(frozen)


def test_each_task_of_a_warm_agent_starts_from_the_baseline(agent, tmp_path: Path) -> None:
    baseline = tmp_path / "base"
    (baseline / "src").mkdir(parents=True)
    (baseline / "src" / "a.c").write_text("original\n")
    (baseline / "gone.txt").write_text("keep me\n")
    workspace = tmp_path / "ws"
    shutil.copytree(baseline, workspace)

    def run_with_baseline(script: str, out: Path) -> Observer:
        task = make_task(script)
        request = RunSpec(task_name="t", argv=task.argv(), workspace=str(workspace),
                          working_dir=str(workspace), baseline=str(baseline))
        observer = Observer()
        receive_events(task, agent.run(request), Into(out), observer)
        return observer

    run_with_baseline("echo changed > src/a.c; rm gone.txt; mkdir -p new/deep; "
                      "echo x > new/deep/f; chmod 600 src/a.c; chmod 700 src", tmp_path / "o1")
    assert (tmp_path / "o1" / "src").stat().st_mode & 0o777 == 0o700  # it came back
    second = run_with_baseline("cat src/a.c gone.txt; ls", tmp_path / "o2")
    assert second.text("stdout") == "original\nkeep me\ngone.txt\nsrc\n"
    assert (workspace / "src" / "a.c").stat().st_mode & 0o777 == 0o644
    assert (workspace / "src").stat().st_mode & 0o777 == (baseline / "src").stat().st_mode & 0o777
    assert not (tmp_path / "o2").exists() or not any((tmp_path / "o2").iterdir())


def test_a_warm_agent_resets_after_the_host_left_mid_archive(agent, tmp_path: Path) -> None:
    baseline = tmp_path / "base"
    baseline.mkdir()
    (baseline / "kept.txt").write_text("from the baseline\n")
    workspace = tmp_path / "ws"
    shutil.copytree(baseline, workspace)

    def request(script: str) -> RunSpec:
        return RunSpec(task_name="t", argv=make_task(script).argv(),
                       workspace=str(workspace), working_dir=str(workspace),
                       baseline=str(baseline))

    events = agent.run(request("mkdir gen; for i in 1 2 3 4 5 6 7 8 9 10 11 12; do "
                               "head -c 1000000 /dev/urandom > gen/$i; done; rm kept.txt"))
    assert isinstance(next(events), memoryview)  # the archive has begun
    events.close()  # and the host leaves: the change set must still become known
    observer = Observer()
    outcome = receive_events(make_task("ls"), agent.run(request("ls")), Into(tmp_path / "o"),
                             observer)
    assert outcome.exit_code == 0 and not outcome.error
    assert observer.text("stdout") == "kept.txt\n"


def test_deleting_a_tree_bigger_than_a_message_streams_every_path(agent, tmp_path: Path) -> None:
    """45,000 deleted paths of ~200 bytes are 9 MB: past the host's 8 MiB message limit had
    they gone in the result, as they did."""
    workspace = tmp_path / "ws"
    tree = workspace / "node_modules"
    tree.mkdir(parents=True)
    names = [f"{index:06d}-" + "p" * 190 for index in range(45_000)]
    for name in names:
        os.close(os.open(tree / name, os.O_CREAT | os.O_WRONLY))
    outcome, _ = run(agent, workspace, tmp_path / "out" / "t", "rm -rf node_modules")
    assert outcome.exit_code == 0 and not outcome.error
    assert sorted(outcome.deleted_paths) == ["node_modules"] + [
        f"node_modules/{name}" for name in names]


def test_a_deleted_name_that_is_not_utf8_comes_back_as_its_bytes(agent, tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    name = b"caf\xe9.txt"  # Latin-1, not UTF-8
    os.close(os.open(os.fsencode(workspace) + b"/" + name, os.O_CREAT | os.O_WRONLY))
    outcome, _ = run(agent, workspace, tmp_path / "out" / "t", "rm -f ./caf*")
    assert outcome.exit_code == 0 and not outcome.error
    assert [os.fsencode(path) for path in outcome.deleted_paths] == [name]


def test_deletions_come_in_bounded_messages() -> None:
    from buildr_podman.agent.service import DELETED_BATCH_BYTES, deletion_events

    paths = [f"d/{index:06d}-" + "q" * 300 for index in range(10_000)] + ["caf\udce9"]
    events = list(deletion_events(paths))
    assert len(events) > 2
    assert all(len(event.SerializeToString()) <= DELETED_BATCH_BYTES + 400 for event in events)
    assert [p for event in events for p in event.deleted.paths] == [os.fsencode(p) for p in paths]


def test_what_the_task_closed_to_its_owner_still_comes_back(agent, tmp_path: Path) -> None:
    """Without CAP_DAC_OVERRIDE (drop = ["ALL"], or an agent that is no root, as here) the
    agent must open up what it owns to read it, then give it back the task's modes."""
    if os.geteuid() == 0:
        pytest.skip("root reads files of any mode: run as an ordinary user (scripts/test)")
    workspace = tmp_path / "ws"
    workspace.mkdir()
    out = tmp_path / "out" / "t"
    outcome, _ = run(agent, workspace, out, """
        mkdir -p closed/inner && echo in > closed/inner/f && chmod 000 closed/inner closed
        echo w > write-only && chmod 200 write-only
        echo n > none && chmod 000 none
    """)
    assert outcome.exit_code == 0 and not outcome.error, outcome.error
    for rel, mode in {"closed": 0, "write-only": 0o200, "none": 0}.items():
        assert (workspace / rel).lstat().st_mode & 0o777 == mode, rel
    (workspace / "closed").chmod(0o700)  # to look inside, and so that pytest can remove it
    assert (workspace / "closed" / "inner").lstat().st_mode & 0o777 == 0
    (workspace / "closed" / "inner").chmod(0o700)
    assert (out / "closed").lstat().st_mode & 0o777 == 0
    (out / "closed").chmod(0o700)
    assert (out / "closed" / "inner").lstat().st_mode & 0o777 == 0
    (out / "closed" / "inner").chmod(0o700)
    assert (out / "closed" / "inner" / "f").read_text() == "in\n"
    assert (out / "none").lstat().st_mode & 0o777 == 0
    (out / "none").chmod(0o600)
    (out / "write-only").chmod(0o600)
    assert (out / "none").read_text() == "n\n" and (out / "write-only").read_text() == "w\n"


def test_an_agent_failure_says_so_with_its_cause(agent, tmp_path: Path, monkeypatch) -> None:
    from buildr_podman.agent import task_run

    def broken(*args, **kwargs):
        raise OSError(5, "Input/output error", "/workspace/some/file")
    monkeypatch.setattr(task_run, "pack_changes", broken)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    with pytest.raises(AgentError) as raised:
        run(agent, workspace, tmp_path / "out" / "t", "true")
    message = str(raised.value)
    assert message.startswith("the agent failed: OSError: Input/output error: "
                              "'/workspace/some/file' (in test_service.py:"), message
    assert "killed" not in message


def test_names_that_are_not_utf8_come_back_as_their_bytes(agent, tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    out = tmp_path / "out" / "t"
    outcome, _ = run(agent, workspace, out,
                     "mkdir \"$(printf 'd\\351')\" && echo x > \"$(printf 'd\\351/f\\377')\"")
    assert outcome.exit_code == 0 and not outcome.error, outcome.error
    assert sorted(os.listdir(os.fsencode(out))) == [b"d\xe9"]
    with open(os.fsencode(out) + b"/d\xe9/f\xff", "rb") as returned:
        assert returned.read() == b"x\n"


def test_a_workspace_that_is_not_the_copied_one_is_refused(agent, tmp_path: Path) -> None:
    """inputs = "copy" where Podman mounts another directory than the one the host filled
    (another mount namespace): the task must not run on an empty workspace and say ok."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    task = make_task("echo ran")
    answers = []
    for inode in (workspace.stat().st_ino, workspace.stat().st_ino + 1, 0):
        spec = RunSpec(task_name="t", argv=task.argv(), workspace=str(workspace),
                       working_dir=str(workspace), workspace_inode=inode)
        observer = Observer()
        outcome = receive_events(task, agent.run(spec), Into(tmp_path / "out" / "t"), observer)
        answers.append((outcome.exit_code, observer.text("stdout"), outcome.error))
    assert answers[0] == answers[2] == (0, "ran\n", "")
    assert answers[1][:2] == (1, "")
    assert answers[1][2].startswith(f"{workspace} is not the volume the host copied the inputs "
                                    "into: Podman mounts another one"), answers[1][2]


# A workspace-relative path of 4,090 bytes: fine to the file system and to a task (relative to
# its working directory), past PATH_MAX as an absolute path.
LONG_PARTS = [f"p{index:03d}" + "q" * 196 for index in range(20)]
LONG_NAME = "f" * 70
LONG_REL = "/".join([*LONG_PARTS, LONG_NAME])


def make_long(root: Path, data: bytes) -> None:
    """LONG_REL under root, made a directory at a time (no path string could reach it)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in LONG_PARTS:
            os.mkdir(part, dir_fd=fd)
            deeper = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = deeper
        file_fd = os.open(LONG_NAME, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(file_fd, data)
        os.close(file_fd)
    finally:
        os.close(fd)


def read_long(root: Path) -> bytes | None:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in LONG_PARTS:
            deeper = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = deeper
        file_fd = os.open(LONG_NAME, os.O_RDONLY, dir_fd=fd)
    except FileNotFoundError:
        return None
    finally:
        os.close(fd)
    with open(file_fd, "rb") as opened:
        return opened.read()


def test_a_path_past_path_max_is_tracked_returned_and_undone(agent, tmp_path: Path) -> None:
    """Past PATH_MAX once /workspace/ is in front: a workspace that merely holds one failed
    every task (the agent's walks built absolute strings); one the task writes comes back,
    and a warm agent puts it back as it was."""
    assert len(LONG_REL.encode()) == 4_090
    baseline, workspace = tmp_path / "base", tmp_path / "ws"
    for root in (baseline, workspace):
        root.mkdir()
        make_long(root, b"original\n")
    outcomes = []
    for index, script in enumerate(("echo new > new.txt", f"echo changed > {LONG_REL}",
                                    f"cat {LONG_REL}", f"rm {LONG_REL}", f"cat {LONG_REL}")):
        task = make_task(script)
        spec = RunSpec(task_name="t", argv=task.argv(), workspace=str(workspace),
                       working_dir=str(workspace), baseline=str(baseline))
        observer = Observer()
        out = tmp_path / f"o{index}"
        outcome = receive_events(task, agent.run(spec), Into(out), observer)
        assert outcome.exit_code == 0 and not outcome.error, (script, outcome.error)
        outcomes.append((outcome, observer, out))
    assert [p.name for p in outcomes[0][2].iterdir()] == ["new.txt"]
    assert read_long(outcomes[1][2]) == b"changed\n"
    assert outcomes[2][1].text("stdout") == "original\n"  # the warm agent undid the change
    assert outcomes[3][0].deleted_paths == (LONG_REL,)
    assert outcomes[4][1].text("stdout") == "original\n"
    assert read_long(workspace) == b"original\n"


def test_a_path_past_path_max_is_tracked_without_a_baseline(agent, tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    make_long(workspace, b"original\n")
    outcome, _ = run(agent, workspace, tmp_path / "out" / "t",
                     f"echo changed > {LONG_REL}; echo new > new.txt")
    assert outcome.exit_code == 0 and not outcome.error, outcome.error
    assert read_long(tmp_path / "out" / "t") == b"changed\n"
    assert (tmp_path / "out" / "t" / "new.txt").read_text() == "new\n"


def test_a_workspace_of_any_depth_and_path_length_is_given_to_the_tasks_user(
        tmp_path: Path, monkeypatch) -> None:
    """`user = "UID:GID"` hands every path over first: os.walk recursed per level (a 1,500-level
    tree raised RecursionError) and skipped what lay past PATH_MAX."""
    from buildr_podman.agent import identity

    monkeypatch.setattr(identity, "HOME", str(tmp_path / "home"))
    workspace = tmp_path / "ws"
    workspace.mkdir()
    make_long(workspace, b"long\n")
    fd = os.open(workspace, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(1_500):
        os.mkdir("d", dir_fd=fd)
        deeper = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = deeper
    os.close(fd)
    seen: list[str] = []
    real_lchown = os.lchown

    def lchown(path: str, uid: int, gid: int) -> None:
        real_lchown(path, uid, gid)  # to oneself: allowed, and it must reach the path
        seen.append(path)
    monkeypatch.setattr(identity.os, "lchown", lchown)
    assert identity.give_to_user(str(workspace), os.getuid(), os.getgid()) == str(tmp_path / "home")
    assert len(seen) == 1 + 1_500 + len(LONG_PARTS) + 1
    assert any(path.endswith(LONG_NAME) for path in seen)
    remove_tree(workspace)  # pytest's own clean-up recurses per level


def test_an_output_holding_a_path_past_path_max_is_laid_and_undone(tmp_path: Path) -> None:
    """inputs_from: the layer's long path comes into the workspace, and a task's rewrite of it
    is undone from that layer."""
    from buildr_podman.agent.layers import lay_outputs
    from buildr_podman.agent.revert import revert
    from buildr_podman.agent.snapshot import Baseline
    from buildr_podman.agent.watcher import ChangeSet

    base, layer, workspace = tmp_path / "base", tmp_path / "layer", tmp_path / "ws"
    for root in (base, layer, workspace):
        root.mkdir()
    make_long(layer, b"from the layer\n")
    assert lay_outputs(str(workspace), [str(layer)]) == len(LONG_PARTS) + 1
    assert read_long(workspace) == b"from the layer\n"
    remove_tree(workspace / LONG_PARTS[0])  # what a task's rewrite left: another file there
    make_long(workspace, b"the task's\n")
    revert(str(workspace), Baseline([str(base), str(layer)]),
           ChangeSet(returned=[LONG_REL], deleted=[]))
    assert read_long(workspace) == b"from the layer\n"
