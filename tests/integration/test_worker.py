"""`buildr-podman worker` on a real cluster (PostgreSQL, BuildGrid, workers: reapi_cluster.py):
the test keys a real task as the client does (cache/key.py), puts its blobs in the CAS and
sends a raw Execute call; a worker runs it in a rootless pod and the result comes back in the
task cache's format, with the task's real files."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from reapi_cluster import ReapiCluster
from test_faults import need_image
from test_remote_cache import empty_local_cache, run

from buildr_podman._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from buildr_podman.cache.key import action_key
from buildr_podman.cache.store import CHANGES, DELETED, OUTCOME
from buildr_podman.cache.task_cache import podman_image_id
from buildr_podman.cache.tree import StatCache, TreeBuilder
from buildr_podman.cache_root import cache_root
from buildr_podman.config import load_project
from buildr_podman.model import ContainerSpec, Project, Task

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leaks")]

IMAGE = "localhost/buildr-busybox:latest"
HCL = """
buildr {{
  cache {{
    remote = "{remote}"
  }}
}}

task "script" "make" {{
  container {{
    image = "{image}"
    user  = "1000:1000"
  }}
  script = "mkdir -p gen; cat src/in.txt > gen/copy.txt; chmod 640 gen/copy.txt; ln -s copy.txt gen/link; echo made"
}}
"""
LABEL = "io.buildr-podman"
OK, DEADLINE_EXCEEDED, INVALID_ARGUMENT, FAILED_PRECONDITION = 0, 4, 3, 9


@pytest.fixture(scope="module")
def cluster() -> Iterator[ReapiCluster]:
    need_image(IMAGE)
    with ReapiCluster(workers=1, jobs=2) as running:
        yield running


def make_repo(root: Path) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "src" / "in.txt").write_text("the input\n")
    (root / "doomed.txt").write_text("to be deleted\n")
    (root / ".buildr").mkdir()
    (root / ".buildr" / "tasks.hcl").write_text("# keyed like any input\n")
    return root


def make_task(script: str, **changes: object) -> Task:
    task = Task(name="remote", module_type="script",
                container=ContainerSpec(image=IMAGE, user="1000:1000"), script=script)
    return dataclasses.replace(task, **changes)  # type: ignore[arg-type]


def submit(cluster: ReapiCluster, root: Path, task: Task,
           outputs: dict[str, Path] | None = None,
           edit: dict[str, str] | None = None, project: Project | None = None) -> re_pb2.Digest:
    """The task's Action as the client keys it, its blobs in the CAS; `edit` changes
    platform properties after keying (as another client could send them)."""
    project = project or Project(root=root, out_dir=root / ".buildr" / "out")
    builder = TreeBuilder(StatCache())
    key = action_key(project, task, podman_image_id(task.container.image), builder,
                     outputs or {})
    action = re_pb2.Action.FromString(key.action)
    for name, value in (edit or {}).items():
        kept = [p for p in action.platform.properties if p.name != name]
        del action.platform.properties[:]
        action.platform.properties.extend(sorted(
            [*kept, re_pb2.Platform.Property(name=name, value=value)], key=lambda p: p.name))
    data = action.SerializeToString(deterministic=True)
    files = [p.read_bytes() for base in (root, *(outputs or {}).values())
             for p in base.rglob("*") if p.is_file() and not p.is_symlink()
             and ".buildr/out" not in p.as_posix()]
    cluster.upload(data, key.command, *key.directories(builder).values(), *files)
    return cluster.upload(data)[0]


def outputs_of(cluster: ReapiCluster, result: re_pb2.ActionResult) -> dict[str, bytes]:
    return {f.path: cluster.read(f.digest) for f in result.output_files}


def changes(cluster: ReapiCluster, result: re_pb2.ActionResult) -> dict[str, tarfile.TarInfo]:
    data = outputs_of(cluster, result)[CHANGES]
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        return {m.name: m for m in archive.getmembers()}


def content(cluster: ReapiCluster, result: re_pb2.ActionResult, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(outputs_of(cluster, result)[CHANGES])) as archive:
        extracted = archive.extractfile(name)
        assert extracted is not None
        return extracted.read()


def stream(cluster: ReapiCluster, digest: re_pb2.Digest) -> str:
    return cluster.read(digest).decode() if digest.hash else ""


def test_an_action_runs_in_a_pod_and_its_changes_come_back(
        cluster: ReapiCluster, tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    task = make_task("echo \"hello from $(id -u)\"; echo oops >&2\n"
                     "mkdir -p gen; cat src/in.txt > gen/copy.txt; chmod 640 gen/copy.txt\n"
                     "ln -s copy.txt gen/link; rm doomed.txt\n")
    action = submit(cluster, root, task)
    for attempt in range(3):  # run, then served by the scheduler's ActionCache, then re-run
        response = cluster.execute(action, skip_cache_lookup=attempt == 2)
        assert response.status.code == OK, response.status
        assert response.cached_result == (attempt == 1)
        result = response.result
        assert result.exit_code == 0
        assert stream(cluster, result.stdout_digest) == "hello from 1000\n"
        assert stream(cluster, result.stderr_digest) == "oops\n"
        members = changes(cluster, result)
        assert members["gen/copy.txt"].mode & 0o777 == 0o640
        assert members["gen/link"].issym() and members["gen/link"].linkname == "copy.txt"
        assert content(cluster, result, "gen/copy.txt") == b"the input\n"
        files = outputs_of(cluster, result)
        assert files[DELETED].split(b"\0") == [b"doomed.txt"]
        assert json.loads(files[OUTCOME])["files_returned"] >= 2
    stored = cluster.action_result(action)
    assert stored is not None and stored.exit_code == 0, "a success is a cache hit for all"
    assert "ok in" in cluster.worker_log("w1")


def test_a_remote_result_is_a_cache_hit_for_any_client(
        cluster: ReapiCluster, tmp_path: Path) -> None:
    """The worker's result is the task cache's own entry: a client whose remote cache is the
    cluster lands it as a hit (no pod), the same files a local run lands."""
    root = make_repo(tmp_path / "repo")
    (root / ".buildr" / "tasks.hcl").write_text(HCL.format(remote=cluster.url, image=IMAGE))
    project = load_project(root)
    response = cluster.execute(submit(cluster, root, project.tasks["make"], project=project))
    assert response.status.code == OK and response.result.exit_code == 0, response
    finished, _ = run(root, "make", env=empty_local_cache(tmp_path / "cache"))
    assert finished["make"]["cached"], finished["make"]
    assert "remote cache" in finished["make"]["cache"]
    out = root / ".buildr" / "out" / "make"
    assert (out / "gen" / "copy.txt").read_text() == "the input\n"
    assert (out / "gen" / "copy.txt").stat().st_mode & 0o777 == 0o640
    local = make_repo(tmp_path / "local")
    (local / ".buildr" / "tasks.hcl").write_text(HCL.format(remote="", image=IMAGE)
                                                 .replace('remote = ""', ""))
    run(local, "make", env=empty_local_cache(tmp_path / "cache2"))
    assert contents(local / ".buildr" / "out" / "make") == contents(out)


def contents(directory: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(directory)): (
        os.readlink(p) if p.is_symlink() else "dir" if p.is_dir() else p.read_text(),
        p.lstat().st_mode) for p in sorted(directory.rglob("*"))}


def test_a_failing_action_says_its_exit_code_and_is_not_cached(
        cluster: ReapiCluster, tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    action = submit(cluster, root, make_task("echo half > half.txt; echo bad >&2; exit 3"))
    response = cluster.execute(action)
    assert response.status.code == OK
    assert response.result.exit_code == 3
    assert stream(cluster, response.result.stderr_digest) == "bad\n"
    assert content(cluster, response.result, "half.txt") == b"half\n"
    assert cluster.action_result(action) is None


def test_many_actions_at_once_are_all_run(cluster: ReapiCluster, tmp_path: Path) -> None:
    """More Execute streams at once than BuildGrid's default thread pool (10 here) holds:
    none is refused (RESOURCE_EXHAUSTED), each gets its own result."""
    root = make_repo(tmp_path / "repo")
    actions = [submit(cluster, root, make_task(f"echo {n} > n.txt")) for n in range(16)]
    responses: dict[int, re_pb2.ExecuteResponse] = {}

    def execute(n: int) -> None:
        responses[n] = cluster.execute(actions[n])

    threads = [threading.Thread(target=execute, args=(n,)) for n in range(len(actions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert sorted(responses) == list(range(len(actions)))
    for n, response in responses.items():
        assert response.status.code == OK and response.result.exit_code == 0, response
        assert content(cluster, response.result, "n.txt") == f"{n}\n".encode()


def test_dependency_outputs_are_shown_and_laid_over_the_workspace(
        cluster: ReapiCluster, tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    gen = tmp_path / "gen-out"
    (gen / "include").mkdir(parents=True)
    (gen / "include" / "g.h").write_text("#define G 1\n")
    task = make_task("cat include/g.h > seen.txt; ls /.buildr/out/gen/include > listed.txt",
                     inputs_from=("gen",), outputs_used=("gen",))
    response = cluster.execute(submit(cluster, root, task, {"gen": gen}))
    assert response.status.code == OK and response.result.exit_code == 0, response
    assert content(cluster, response.result, "seen.txt") == b"#define G 1\n"
    assert content(cluster, response.result, "listed.txt") == b"g.h\n"


def test_a_hostile_task_gets_nothing_of_the_worker(
        cluster: ReapiCluster, tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    task = make_task("ln -s /etc/passwd stolen; ln -s ../../../../../.. up\n"
                     "mkdir locked; echo x > locked/f; chmod 000 locked\n"
                     "echo away > /tmp/outside.txt; mkfifo pipe\n"
                     "true")
    response = cluster.execute(submit(cluster, root, task))
    assert response.status.code == OK and response.result.exit_code == 0, response
    members = changes(cluster, response.result)
    assert members["stolen"].issym() and members["stolen"].linkname == "/etc/passwd"
    assert members["up"].issym()
    assert "outside.txt" not in " ".join(members)
    leases = cache_root() / "worker" / cluster.worker_name("w1") / "leases"
    assert list(leases.iterdir()) == [], "every lease's inputs are removed after it"
    again = cluster.execute(submit(cluster, root, make_task("echo still here")))
    assert stream(cluster, again.result.stdout_digest) == "still here\n"


@pytest.mark.parametrize(("edit", "code", "said"), [
    ({"dockerNetwork": "host"}, INVALID_ARGUMENT, "dockerNetwork is 'host'"),
    ({"buildr.bind-mounts": "/data:ro"}, INVALID_ARGUMENT, "client's machine"),
    ({"container-image": "podman-image-id:" + "0" * 64}, FAILED_PRECONDITION,
     "is not on this worker"),
])
def test_what_the_worker_cannot_honour_comes_back_as_a_clear_status(
        cluster: ReapiCluster, tmp_path: Path, edit: dict[str, str], code: int,
        said: str) -> None:
    root = make_repo(tmp_path / "repo")
    response = cluster.execute(submit(cluster, root, make_task("true"), edit=edit))
    assert response.status.code == code, response.status
    assert said in response.status.message
    assert "worker buildr-podman@" in response.status.message


def test_a_task_past_its_timeout_is_deadline_exceeded(
        cluster: ReapiCluster, tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    task = make_task("echo started; sleep 60", timeout_seconds=1.0)
    started = time.monotonic()
    response = cluster.execute(submit(cluster, root, task))
    assert response.status.code == DEADLINE_EXCEEDED, response.status
    assert time.monotonic() - started < 45
    assert stream(cluster, response.result.stdout_digest) == "started\n"


def test_another_clients_action_gets_the_outputs_it_declares(cluster: ReapiCluster) -> None:
    """An Action as Bazel sends one: no buildr.* properties, the input root is the workspace,
    the outputs are named by the Command."""
    def blob(message: re_pb2.Directory | re_pb2.Command | re_pb2.Action) -> re_pb2.Digest:
        return cluster.upload(message.SerializeToString(deterministic=True))[0]

    (source,) = cluster.upload(b"the input\n")
    package = blob(re_pb2.Directory(files=[re_pb2.FileNode(name="in.txt", digest=source)]))
    root = blob(re_pb2.Directory(directories=[re_pb2.DirectoryNode(name="pkg", digest=package)]))
    command = blob(re_pb2.Command(
        arguments=["/bin/sh", "-c", "mkdir -p gen; cat in.txt > gen/copy; echo obj > a.o"],
        working_directory="pkg", output_paths=["a.o", "gen", "never-written"]))
    action = re_pb2.Action(command_digest=command, input_root_digest=root)
    for name, value in (("OSFamily", "linux"), ("container-image", f"docker://{IMAGE}")):
        action.platform.properties.add(name=name, value=value)
    response = cluster.execute(blob(action))
    assert response.status.code == OK and response.result.exit_code == 0, response
    (made,) = response.result.output_files
    assert made.path == "a.o" and cluster.read(made.digest) == b"obj\n"
    (generated,) = response.result.output_directories
    tree = re_pb2.Tree.FromString(cluster.read(generated.tree_digest))
    (copy,) = tree.root.files
    assert copy.name == "copy" and cluster.read(copy.digest) == b"the input\n"


# -- stopping and restarting workers (a cluster of their own: a long keepalive) ------------

@pytest.fixture
def lone_worker() -> Iterator[ReapiCluster]:
    """One worker, and a keepalive far longer than the tests wait: a lease that comes back
    sooner was handed back or reclaimed, not expired."""
    need_image(IMAGE)
    with ReapiCluster(workers=1, jobs=1, keepalive=300) as running:
        yield running


def containers_of(pid: int) -> list[str]:
    return subprocess.run(["podman", "ps", "-a", "-q", "--filter", f"label={LABEL}={pid}"],
                          capture_output=True, text=True, check=True).stdout.split()


def execute_in_background(cluster: ReapiCluster, action: re_pb2.Digest
                          ) -> tuple[threading.Thread, list[re_pb2.ExecuteResponse]]:
    responses: list[re_pb2.ExecuteResponse] = []
    thread = threading.Thread(target=lambda: responses.append(cluster.execute(action)),
                              daemon=True)
    thread.start()
    return thread, responses


def wait_for_container(pid: int) -> None:
    deadline = time.monotonic() + 60
    while not containers_of(pid):
        assert time.monotonic() < deadline, "the worker never started the task's pod"
        time.sleep(0.2)


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_stopped_worker_leaves_no_pod_and_its_lease_runs_again_at_once(
        lone_worker: ReapiCluster, tmp_path: Path, how: str) -> None:
    root = make_repo(tmp_path / "repo")
    action = submit(lone_worker, root, make_task("sleep 4; echo finished"))
    thread, responses = execute_in_background(lone_worker, action)
    pid = lone_worker.workers["w1"].process.pid
    wait_for_container(pid)
    stopped = time.monotonic()
    if how == "SIGTERM":
        assert lone_worker.stop_worker("w1") == 0
        assert "handed back" in lone_worker.worker_log("w1")
    else:
        lone_worker.kill_worker("w1")  # its pods are removed as `clean` does
    assert containers_of(pid) == []
    lone_worker.start_worker("w1")  # the same bot id: it reclaims the lease at once
    thread.join(120)
    assert responses, "the action never finished"
    assert responses[0].status.code == OK and responses[0].result.exit_code == 0
    assert stream(lone_worker, responses[0].result.stdout_digest) == "finished\n"
    assert time.monotonic() - stopped < 90, "it waited for the session to expire (300 s)"


def test_a_lease_the_client_cancels_is_stopped_on_the_worker(
        lone_worker: ReapiCluster, tmp_path: Path) -> None:
    # A client's Ctrl-C cancels its Execute (remote_execution/execution.py); BuildGrid then
    # leaves the lease out of the worker's session, and the worker kills the task's pod
    # rather than running it to its end for nobody.
    import grpc

    from buildr_podman._protos.build.bazel.remote.execution.v2 import (
        remote_execution_pb2_grpc as re_grpc,
    )
    from buildr_podman._protos.google.longrunning import operations_pb2, operations_pb2_grpc

    root = make_repo(tmp_path / "repo")
    action = submit(lone_worker, root, make_task("sleep 120; echo finished"))
    pid = lone_worker.workers["w1"].process.pid
    with grpc.insecure_channel(lone_worker.url) as channel:
        stream = re_grpc.ExecutionStub(channel).Execute(
            re_pb2.ExecuteRequest(action_digest=action, skip_cache_lookup=True), timeout=180)
        name = next(stream).name
        wait_for_container(pid)
        cancelled = time.monotonic()
        operations_pb2_grpc.OperationsStub(channel).CancelOperation(
            operations_pb2.CancelOperationRequest(name=name), timeout=30)
        stream.cancel()
    while containers_of(pid):
        assert time.monotonic() - cancelled < 30, "the cancelled task still runs"
        time.sleep(0.2)
    deadline = time.monotonic() + 30
    while "cancelled in" not in lone_worker.worker_log("w1"):
        assert time.monotonic() < deadline, lone_worker.worker_log("w1")
        time.sleep(0.2)
    log = lone_worker.worker_log("w1")
    assert "cancelled by the scheduler: stopping its task" in log
    assert "finished" not in log
