"""The task cache with real rootless Podman: an unchanged task is served from the cache (no pod)
with the same files, modes and mtimes a run lands, and every kind of change is a miss that
says what changed. Each repository carries a unique file, and each change makes a unique
content, so no entry of another test (or of an earlier test session) matches."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from test_faults import buildr, need_image

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leaks")]

IMAGE = "localhost/buildr-busybox:latest"
ON = {"BUILDR_CACHE": "on"}  # the other tests turn it off (tests/conftest.py)

CONFIG = '''
task "script" "make" {{
  container {{
    image = "{image}"
    {container}
  }}
  environment = {{ FLAVOUR = "{flavour}" }}
  script = <<-EOT
    echo "ran $(cat /proc/sys/kernel/random/uuid)"
    echo "warning on stderr" >&2
    mkdir -p gen/deep
    cat src/in.txt > gen/copy.txt
    echo "$FLAVOUR" > gen/flavour.txt
    echo '#!/bin/sh' > gen/deep/tool.sh
    chmod 750 gen/deep/tool.sh
    ln -sf copy.txt gen/link
    rm -f src/doomed.txt
  EOT
}}

task "script" "use" {{
  container {{ image = "{image}" }}
  inputs_from = ["make"]
  script = "cat gen/copy.txt gen/flavour.txt > used.txt; cat /proc/sys/kernel/random/uuid"
}}
'''


def make_repo(root: Path, flavour: str = "plain", image: str = IMAGE,
              container: str = "") -> Path:
    (root / ".buildr").mkdir(parents=True, exist_ok=True)
    (root / ".buildr" / "tasks.hcl").write_text(
        CONFIG.format(image=image, flavour=flavour, container=container))
    (root / "src").mkdir(exist_ok=True)
    if not (root / "src" / "in.txt").exists():
        (root / "src" / "in.txt").write_text(f"unique {uuid.uuid4()}\n")
        (root / "src" / "doomed.txt").write_text("to be deleted\n")
    return root


def run(root: Path, *args: str, env: dict[str, str] | None = None
        ) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """`run -v --output json ARGS`: the task_finished events by task, and every event."""
    result = buildr(root, "-v", "run", "-j", "1", "--output", "json", *args,
                    env={**ON, **(env or {})})
    events = [json.loads(line) for line in result.stdout.splitlines()]
    finished = {e["task"]: e for e in events if e["event"] == "task_finished"}
    said = [e for e in events if e["event"] in ("log", "warning", "output")][-12:]
    assert result.returncode == 0, "\n".join([result.stderr, *map(json.dumps, said),
                                              *map(json.dumps, finished.values())])
    return finished, events


def landed(directory: Path) -> dict[str, tuple[str, int, int, int]]:
    """Every path under directory: (content or link target, mode, mtime in ns)."""
    found = {}
    for path in sorted(directory.rglob("*")):
        st = path.lstat()
        if path.is_symlink():
            what = "-> " + os.readlink(path)
        elif path.is_dir():
            what = "dir"
        else:
            what = path.read_text()
        found[str(path.relative_to(directory))] = (what, st.st_mode, st.st_mtime_ns, st.st_uid)
    return found


def output(events: list[dict[str, Any]], task: str, stream: str = "stdout") -> list[str]:
    return [e["line"] for e in events
            if e["event"] == "output" and e["task"] == task and e["stream"] == stream]


def logs(events: list[dict[str, Any]], task: str) -> list[str]:
    return [e["message"] for e in events if e["event"] == "log" and e["task"] == task]


def test_an_unchanged_task_is_served_from_the_cache_three_times(tmp_path: Path) -> None:
    need_image(IMAGE)
    root = make_repo(tmp_path / "repo")
    out = root / ".buildr" / "out"
    first, first_events = run(root, "use")
    assert not first["make"]["cached"] and not first["use"]["cached"]
    assert "no earlier entry" in first["make"]["cache"]
    files = landed(out / "make")
    assert files["gen/deep/tool.sh"][1] & 0o777 == 0o750
    assert files["gen/link"][0] == "-> copy.txt"
    made_output = output(first_events, "make")
    assert made_output[0].startswith("ran ")
    for attempt in range(3):
        again, events = run(root, "use")
        assert again["make"]["cached"] and again["use"]["cached"], attempt
        assert again["make"]["deleted_paths"] == ["src/doomed.txt"]
        assert landed(out / "make") == files, attempt
        # Replayed, not run again: the same uuid; and no pod was started for either task.
        assert output(events, "make") == made_output
        assert output(events, "make", "stderr") == ["warning on stderr"]
        assert not [m for m in logs(events, "make") + logs(events, "use") if "pod " in m]
        assert any("replayed" in m for m in logs(events, "make"))
        assert (out / "use" / "used.txt").read_text() == (root / "src" / "in.txt").read_text() \
            + "plain\n"
    plain = buildr(root, "run", "--output", "plain", "make", env=ON)
    assert "make ok (cached)" in plain.stderr


def test_no_cache_runs_again_and_the_cache_command_shows_the_store(tmp_path: Path) -> None:
    need_image(IMAGE)
    root = make_repo(tmp_path / "repo")
    first, first_events = run(root, "make")
    forced, events = run(root, "--no-cache", "make")
    assert not forced["make"]["cached"]
    assert output(events, "make") != output(first_events, "make")  # a new uuid: it ran
    shown = buildr(root, "cache", env=ON)
    assert shown.returncode == 0 and "entries:" in shown.stdout
    assert "hit rate of the last" in shown.stdout


def test_what_a_no_cache_run_stores_serves_the_next_run(tmp_path: Path) -> None:
    # --no-cache asks the image's id of the API service it starts first thing, the other runs
    # of the podman command line: both must key the task alike, or this is a miss.
    need_image(IMAGE)
    root = make_repo(tmp_path / "repo")
    forced, forced_events = run(root, "--no-cache", "make")
    assert not forced["make"]["cached"]
    served, events = run(root, "make")
    assert served["make"]["cached"], served["make"]["cache"]
    assert output(events, "make") == output(forced_events, "make")


@pytest.mark.parametrize("change, expected", [
    ("input byte", "input workspace/src/in.txt changed"),
    ("input mode", "input workspace/src/in.txt mode changed"),
    ("added file", "input workspace/src/new.txt added"),
    ("deleted file", "input workspace/src/doomed.txt deleted"),
    ("environment", "environment FLAVOUR changed"),
    ("script", "the script changed"),
    ("container setting", "container setting network changed"),
])
def test_each_kind_of_change_is_a_miss_that_says_what_changed(
        tmp_path: Path, change: str, expected: str) -> None:
    need_image(IMAGE)
    root = make_repo(tmp_path / "repo")
    run(root, "make")
    hcl = root / ".buildr" / "tasks.hcl"
    if change == "input byte":
        (root / "src" / "in.txt").write_text(f"another {uuid.uuid4()}\n")
    elif change == "input mode":
        (root / "src" / "in.txt").chmod(0o600)
    elif change == "added file":
        (root / "src" / "new.txt").write_text("new\n")
    elif change == "deleted file":
        (root / "src" / "doomed.txt").unlink()
    elif change == "environment":
        make_repo(root, flavour="spicy")
    elif change == "script":
        hcl.write_text(hcl.read_text().replace('echo "$FLAVOUR"', 'echo "$FLAVOUR!"'))
    elif change == "container setting":
        make_repo(root, container='network = "private"')
    missed, _ = run(root, "make")
    assert not missed["make"]["cached"]
    assert expected in missed["make"]["cache"], missed["make"]["cache"]
    again, _ = run(root, "make")
    assert again["make"]["cached"]


def test_a_changed_dependency_output_is_a_miss_of_its_user(tmp_path: Path) -> None:
    need_image(IMAGE)
    root = make_repo(tmp_path / "repo")
    run(root, "use")
    (root / "src" / "in.txt").write_text(f"changed upstream {uuid.uuid4()}\n")
    missed, _ = run(root, "use")
    assert not missed["make"]["cached"] and not missed["use"]["cached"]
    assert "input .buildr/out/make/gen/copy.txt changed" in missed["use"]["cache"]
    assert (root / ".buildr" / "out" / "use" / "used.txt").read_text().startswith("changed")


def test_new_image_content_under_the_same_tag_is_a_miss(tmp_path: Path) -> None:
    need_image(IMAGE)
    tag = f"localhost/buildr-cache-test-{uuid.uuid4().hex[:8]}:latest"
    context = tmp_path / "image"
    context.mkdir()
    try:
        for label in ("one", "two"):
            (context / "Containerfile").write_text(f"FROM {IMAGE}\nLABEL cache-test={label}\n")
            subprocess.run(["podman", "build", "-q", "-t", tag, str(context)], check=True,
                           capture_output=True)
            root = make_repo(tmp_path / "repo", image=tag)
            finished, _ = run(root, "make")
            assert not finished["make"]["cached"], label
        assert "the image content" in finished["make"]["cache"]
        assert run(root, "make")[0]["make"]["cached"]
    finally:
        subprocess.run(["podman", "rmi", "-f", tag], check=False, capture_output=True)


def test_secrets_never_reach_the_store(tmp_path: Path) -> None:
    need_image(IMAGE)
    secret = f"s3cret-{uuid.uuid4().hex}"
    root = tmp_path / "repo"
    (root / ".buildr").mkdir(parents=True)
    (root / ".buildr" / "tasks.hcl").write_text(f'''
task "script" "deploy" {{
  container {{ image = "{IMAGE}" }}
  secret_environment = {{ TOKEN = env("CACHE_TEST_TOKEN") }}
  script = "echo $TOKEN > token.txt; echo $TOKEN"
}}
''')
    for _ in range(2):
        finished, _ = run(root, "deploy", env={"CACHE_TEST_TOKEN": secret})
        assert not finished["deploy"]["cached"]
        assert "secret_environment" in finished["deploy"]["cache"]
    store = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "buildr-podman"
    found = subprocess.run(["grep", "-rl", secret, str(store)], capture_output=True, text=True,
                           check=False)
    assert found.stdout == ""


def test_a_damaged_entry_is_a_miss_with_a_warning_never_a_wrong_output(tmp_path: Path) -> None:
    need_image(IMAGE)
    root = make_repo(tmp_path / "repo")
    run(root, "make")
    expected = (root / ".buildr" / "out" / "make" / "gen" / "copy.txt").read_text()
    store = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") \
        / "buildr-podman" / "task-cache" / "cas"
    damaged = 0
    for blob in store.rglob("*"):
        if blob.is_file() and expected.encode() in blob.read_bytes():
            blob.write_bytes(blob.read_bytes().replace(b"unique", b"UNIQUE"))
            damaged += 1
    assert damaged
    result = buildr(root, "run", "--output", "plain", "make", env=ON)
    assert result.returncode == 0, result.stderr
    assert "warning: the cache entry was damaged" in result.stderr
    assert (root / ".buildr" / "out" / "make" / "gen" / "copy.txt").read_text() == expected


def test_write_back_from_the_cache_changes_the_repository_as_a_run_does(tmp_path: Path) -> None:
    need_image(IMAGE)
    root = tmp_path / "repo"
    (root / ".buildr").mkdir(parents=True)
    (root / "gen.in").write_text(f"{uuid.uuid4()}\n")
    (root / ".buildr" / "tasks.hcl").write_text(f'''
task "script" "regen" {{
  container {{ image = "{IMAGE}" }}
  write_back = true
  script = "cat gen.in > generated.txt"
}}
''')
    first, _ = run(root, "regen")
    assert not first["regen"]["cached"]
    generated = (root / "generated.txt").read_text()
    (root / "generated.txt").unlink()  # the input tree is back to what the entry was made from
    again, _ = run(root, "regen")
    assert again["regen"]["cached"]
    assert (root / "generated.txt").read_text() == generated


def test_cache_secrets_caches_a_task_with_its_output_masked_in_the_store(tmp_path: Path) -> None:
    need_image(IMAGE)
    secret = f"s3cret-{uuid.uuid4().hex}"
    root = tmp_path / "repo"
    (root / ".buildr").mkdir(parents=True)
    (root / "unique.txt").write_text(f"{uuid.uuid4()}\n")
    (root / ".buildr" / "tasks.hcl").write_text(f'''
task "script" "sign" {{
  container {{ image = "{IMAGE}" }}
  secret_environment = {{ TOKEN = env("CACHE_TEST_TOKEN") }}
  cache_secrets = true
  script = "echo token is $TOKEN; cat unique.txt > signed.txt"
}}
''')
    first, _ = run(root, "sign", env={"CACHE_TEST_TOKEN": secret})
    assert not first["sign"]["cached"]
    again, events = run(root, "sign", env={"CACHE_TEST_TOKEN": secret})
    assert again["sign"]["cached"]
    assert output(events, "sign") == ["token is ***"]
    store = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "buildr-podman"
    found = subprocess.run(["grep", "-rl", secret, str(store)], capture_output=True, text=True,
                           check=False)
    assert found.stdout == ""
