"""The remote task cache against a real REAPI server (BuildGrid, reapi_server.py) with real
rootless Podman: what one clone uploads, a second clone with an empty local cache lands
without starting a container; upload = false never writes; a server that is down or never
answers costs one warning and the tasks run; a damaged blob on the server is a miss with a
warning, never a wrong output."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from reapi_server import BuildGrid
from test_faults import buildr, need_image
from test_task_cache import logs, output

from buildr_podman.cache_root import cache_root

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leaks")]

IMAGE = "localhost/buildr-busybox:latest"
BIG = 5_000_000  # bytes: past BuildGrid's 4 MiB batch limit, so it goes through ByteStream

CONFIG = '''
buildr {{
  cache {{
    {remote}
  }}
}}

task "script" "make" {{
  container {{ image = "{image}" }}
  script = <<-EOT
    echo "ran $(cat /proc/sys/kernel/random/uuid)"
    echo "to stderr" >&2
    mkdir -p gen
    cat src/in.txt > gen/copy.txt
    chmod 640 gen/copy.txt
    head -c {big} /dev/urandom > gen/big.bin
    ln -sf copy.txt gen/link
  EOT
}}

task "script" "use" {{
  container {{ image = "{image}" }}
  inputs_from = ["make"]
  script = "cat gen/copy.txt > used.txt; cat /proc/sys/kernel/random/uuid"
}}
'''


@pytest.fixture(scope="module")
def server() -> Iterator[BuildGrid]:
    with BuildGrid() as running:
        yield running


def clone(root: Path, remote: str, content: str) -> Path:
    """A repository with the same sources in another place, with `remote` in its cache block."""
    (root / ".buildr").mkdir(parents=True)
    (root / ".buildr" / "tasks.hcl").write_text(
        CONFIG.format(image=IMAGE, remote=remote, big=BIG))
    (root / "src").mkdir()
    (root / "src" / "in.txt").write_text(content)
    return root


def empty_local_cache(home: Path) -> dict[str, str]:
    """The environment of a user whose task cache is empty (as on another machine), sharing
    this user's agent build (10-20 s to make again)."""
    agent = cache_root() / "agent"
    agent.mkdir(parents=True, exist_ok=True)
    (home / "buildr-podman").mkdir(parents=True)
    (home / "buildr-podman" / "agent").symlink_to(agent)
    return {"XDG_CACHE_HOME": str(home)}


def run(root: Path, *names: str, env: dict[str, str] | None = None,
        ) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    result = buildr(root, "-v", "run", "-j", "1", "--output", "json", *names,
                    env={"BUILDR_CACHE": "on", **(env or {})})
    events = [json.loads(line) for line in result.stdout.splitlines()]
    finished = {e["task"]: e for e in events if e["event"] == "task_finished"}
    assert result.returncode == 0, "\n".join([result.stderr, *map(json.dumps, events[-12:])])
    return finished, events


def landed(directory: Path) -> dict[str, tuple[str, int, int, int]]:
    """Every path under directory: (its content's digest or link target, mode, mtime, owner)."""
    found = {}
    for path in sorted(directory.rglob("*")):
        st = path.lstat()
        if path.is_symlink():
            what = "-> " + os.readlink(path)
        elif path.is_dir():
            what = "dir"
        else:
            what = hashlib.sha256(path.read_bytes()).hexdigest()
        found[str(path.relative_to(directory))] = (what, st.st_mode, st.st_mtime_ns, st.st_uid)
    return found


def warnings(events: list[dict[str, Any]]) -> list[str]:
    return [e["message"] for e in events if e["event"] == "warning"]


def pods_started(events: list[dict[str, Any]], *tasks: str) -> list[str]:
    return [m for task in tasks for m in logs(events, task) if "pod " in m]


def stored_key(env: dict[str, str], root: Path, task: str) -> tuple[str, int]:
    """The action digest the local store last stored for a task (its refs/ and cas/)."""
    store = Path(env.get("XDG_CACHE_HOME") or cache_root().parent) / "buildr-podman" / "task-cache"
    project = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    action = (store / "refs" / project / task).read_text().strip()
    return action, (store / "cas" / action[:2] / action).stat().st_size


def test_what_one_clone_uploads_another_lands_from_the_remote(server: BuildGrid,
                                                               tmp_path: Path) -> None:
    need_image(IMAGE)
    content = f"shared {uuid.uuid4()}\n"
    # One configuration file for both: it is an input of the tasks, so only the environment
    # may differ (as between CI and a developer).
    remote = f'remote = "{server.url}"\n    upload = env("UPLOAD_TO_REMOTE", "false")'
    ci = clone(tmp_path / "ci", remote, content)
    ci_env = empty_local_cache(tmp_path / "ci-cache")
    first, first_events = run(ci, "use", env={**ci_env, "UPLOAD_TO_REMOTE": "true"})
    assert not first["make"]["cached"] and not first["use"]["cached"]
    assert not warnings(first_events)
    action = stored_key(ci_env, ci, "make")
    uploaded = server.action_result(*action)
    assert uploaded is not None and uploaded.exit_code == 0

    developer = clone(tmp_path / "developer", remote, content)
    developer_env = empty_local_cache(tmp_path / "developer-cache")
    for attempt in ("from the remote", "from the local copy", "again"):
        again, events = run(developer, "use", env=developer_env)
        assert again["make"]["cached"] and again["use"]["cached"], attempt
        assert not pods_started(events, "make", "use"), attempt
        assert not warnings(events), attempt
        if attempt == "from the remote":
            assert "remote cache" in again["make"]["cache"], again["make"]
            assert any("from the remote cache" in m for m in logs(events, "make"))
        else:  # now in the developer's local store: no server needed
            assert not again["make"]["cache"], again["make"]
        for task in ("make", "use"):
            assert landed(developer / ".buildr" / "out" / task) \
                == landed(ci / ".buildr" / "out" / task), (attempt, task)
        assert output(events, "make") == output(first_events, "make")
        assert output(events, "make", "stderr") == ["to stderr"]
    shown = buildr(developer, "cache", env={"BUILDR_CACHE": "on", **developer_env})
    assert f"remote:  {server.url}, read only" in shown.stdout, shown.stdout
    assert "2 of the hits from the remote cache" in shown.stdout, shown.stdout
    big = developer / ".buildr" / "out" / "make" / "gen" / "big.bin"
    assert big.stat().st_size == BIG
    assert (developer / ".buildr" / "out" / "use" / "used.txt").read_text() == content


def test_upload_false_never_writes_to_the_server(server: BuildGrid, tmp_path: Path) -> None:
    need_image(IMAGE)
    content = f"not shared {uuid.uuid4()}\n"
    remote = f'remote = "{server.url}"\n    upload = false'
    first = clone(tmp_path / "first", remote, content)
    first_env = empty_local_cache(tmp_path / "first-cache")
    ran, _ = run(first, "make", env=first_env)
    assert not ran["make"]["cached"]
    assert server.action_result(*stored_key(first_env, first, "make")) is None
    second = clone(tmp_path / "second", remote, content)
    missed, events = run(second, "make", env=empty_local_cache(tmp_path / "second-cache"))
    assert not missed["make"]["cached"]
    assert pods_started(events, "make")
    assert not warnings(events)


def test_a_task_with_secrets_is_never_uploaded(server: BuildGrid, tmp_path: Path) -> None:
    need_image(IMAGE)
    root = tmp_path / "repo"
    (root / ".buildr").mkdir(parents=True)
    (root / "unique.txt").write_text(f"{uuid.uuid4()}\n")
    (root / ".buildr" / "tasks.hcl").write_text(f'''
buildr {{
  cache {{
    remote = "{server.url}"
    upload = true
  }}
}}

task "script" "sign" {{
  container {{ image = "{IMAGE}" }}
  secret_environment = {{ TOKEN = env("REMOTE_TEST_TOKEN") }}
  cache_secrets = true
  script = "cat unique.txt > signed.txt; echo $TOKEN > token.txt"
}}
''')
    env = {**empty_local_cache(tmp_path / "cache"), "REMOTE_TEST_TOKEN": "s3cret"}
    ran, events = run(root, "sign", env=env)
    assert not ran["sign"]["cached"] and not warnings(events)
    assert run(root, "sign", env=env)[0]["sign"]["cached"]  # stored here, all the same
    assert server.action_result(*stored_key(env, root, "sign")) is None


@pytest.fixture
def silent_socket() -> Iterator[str]:
    """A unix socket that takes connections and never answers: a hung server."""
    directory = tempfile.mkdtemp(prefix="buildr-hung-")
    path = os.path.join(directory, "hung.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path)
        listener.listen(16)
        yield f"unix:{path}"
    finally:
        listener.close()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize("state", ["down", "hung"])
def test_a_server_that_is_down_or_hung_costs_one_warning_and_the_tasks_run(
        tmp_path: Path, silent_socket: str, state: str) -> None:
    need_image(IMAGE)
    url = silent_socket if state == "hung" else f"unix:{tmp_path}/nobody-here.sock"
    root = clone(tmp_path / "repo", f'remote = "{url}"\n    upload = true',
                 f"alone {uuid.uuid4()}\n")
    finished, events = run(root, "use", env=empty_local_cache(tmp_path / "cache"))
    assert not finished["make"]["cached"] and not finished["use"]["cached"]
    said = warnings(events)
    assert len(said) == 1, said  # once for the run, not once per task
    assert "not used" in said[0] and url in said[0]
    assert ("did not answer within 2 s" if state == "hung" else "cannot be reached") in said[0]
    assert (root / ".buildr" / "out" / "use" / "used.txt").read_text().startswith("alone")


def test_a_damaged_blob_on_the_server_is_a_miss_with_a_warning(tmp_path: Path) -> None:
    need_image(IMAGE)
    content = f"to be damaged {uuid.uuid4()}\n"
    with BuildGrid(cas_on_disk=True) as damaged_server:
        remote = f'remote = "{damaged_server.url}"\n    upload = env("UPLOAD_TO_REMOTE", "false")'
        ci = clone(tmp_path / "ci", remote, content)
        run(ci, "make", env={**empty_local_cache(tmp_path / "ci-cache"), "UPLOAD_TO_REMOTE": "true"})
        tampered = 0
        for blob in (damaged_server.cas_dir / "cas" / "objects").rglob("*"):
            data = blob.read_bytes() if blob.is_file() else b""
            if content.encode() in data:  # the change set: same size, other bytes
                blob.write_bytes(data.replace(b"to be damaged", b"TO BE DAMAGED"))
                tampered += 1
        assert tampered
        developer = clone(tmp_path / "developer", remote, content)
        finished, events = run(developer, "make",
                               env=empty_local_cache(tmp_path / "developer-cache"))
    assert not finished["make"]["cached"]
    said = warnings(events)
    assert len(said) == 1 and "remote cache's entry was damaged" in said[0], said
    assert pods_started(events, "make")
    copy = developer / ".buildr" / "out" / "make" / "gen" / "copy.txt"
    assert copy.read_text() == content


def test_a_read_only_server_costs_one_warning_and_the_run_succeeds(tmp_path: Path) -> None:
    need_image(IMAGE)
    with BuildGrid(allow_updates=False) as read_only:
        root = clone(tmp_path / "repo", f'remote = "{read_only.url}"\n    upload = true',
                     f"read only {uuid.uuid4()}\n")
        env = empty_local_cache(tmp_path / "cache")
        finished, events = run(root, "use", env=env)
        assert read_only.action_result(*stored_key(env, root, "make")) is None
    assert not finished["make"]["cached"] and not finished["use"]["cached"]
    said = warnings(events)
    assert len(said) == 1 and "does not take uploads" in said[0], said
    assert (root / ".buildr" / "out" / "use" / "used.txt").read_text().startswith("read only")
