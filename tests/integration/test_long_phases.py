"""Long phases are said while they last, and the durations reported cover them (issue 14, item 6).

A real run in real pods, with the test knob BUILDR_PHASE_THRESHOLD=0 so that every phase is
said however fast this machine is: the JSON events must carry each phase with the counts of
what really moved, inside the time of its task, and the removal of the pods kept warm inside
the time of the run.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from test_faults import buildr, need_image

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leaks")]

IMAGE = "localhost/buildr-busybox:latest"
INPUT_FILES = 300
MADE_FILES = 400
WRITTEN_BACK = 40
TASKS = f"""
task "script" "gen" {{
  container {{
    image = "{IMAGE}"
    inputs = "copy"
  }}
  script = <<-EOT
    mkdir made && cd made && i=0
    while [ $i -lt {MADE_FILES} ]; do echo "file $i" > f$i.txt; i=$((i+1)); done
  EOT
}}

task "script" "back" {{
  write_back = true
  container {{ image = "{IMAGE}" }}
  script = <<-EOT
    mkdir gen2 && i=0
    while [ $i -lt {WRITTEN_BACK} ]; do echo "gen $i" > gen2/g$i.txt; i=$((i+1)); done
    rm src/gone.txt
  EOT
}}
"""


def make_repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "src").mkdir(parents=True)
    for n in range(INPUT_FILES):
        (root / "src" / f"in{n}.txt").write_text(f"input {n}\n")
    (root / "src" / "gone.txt").write_text("deleted by back\n")
    (root / "src" / "unique.txt").write_text(f"{uuid.uuid4()}\n")  # no hit of another test's
    (root / ".buildr").mkdir()
    (root / ".buildr" / "tasks.hcl").write_text(TASKS)
    return root


def events_of(root: Path, *names: str, args: tuple[str, ...] = (),
              cache: str = "off") -> list[dict[str, Any]]:
    result = buildr(root, "run", *names, "--output", "json", *args,
                    env={"BUILDR_PHASE_THRESHOLD": "0", "BUILDR_CACHE": cache})
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def finished_phases(events: list[dict[str, Any]], task: str) -> dict[str, dict[str, Any]]:
    return {e["phase"]: e for e in events if e["event"] == "phase_finished" and e["task"] == task}


def one(events: list[dict[str, Any]], kind: str, task: str | None = None) -> dict[str, Any]:
    found = [e for e in events if e["event"] == kind and task in (None, e.get("task"))]
    assert len(found) == 1, (kind, task, found)
    return found[0]


def test_long_phases_come_as_json_events_with_true_counts_inside_the_durations(
        tmp_path: Path) -> None:
    need_image()
    root = make_repo(tmp_path)
    inputs = sum(1 for p in root.rglob("*") if p.is_file())
    events = events_of(root, "gen", "back", args=("-j", "1"))

    gen = finished_phases(events, "gen")
    # Every file of the repository copied in (the out dir is no input), its bytes counted.
    assert gen["copy_inputs"]["done"] == inputs
    assert gen["copy_inputs"]["bytes"] >= INPUT_FILES * len("input 0\n")
    gen_done = one(events, "task_finished", "gen")
    assert gen_done["files_returned"] == MADE_FILES
    assert gen["extract_outputs"]["done"] == gen_done["files_returned"]
    assert gen["extract_outputs"]["bytes"] == gen_done["bytes_returned"] > 0
    assert gen["extract_outputs"]["unit"] == "files"
    assert "land_outputs" in gen

    back = finished_phases(events, "back")
    assert (back["write_back"]["done"], back["write_back"]["total"]) == (
        WRITTEN_BACK + 1, WRITTEN_BACK + 1), "every file written and the deletion"
    assert not (root / "src" / "gone.txt").exists()
    assert len(list((root / "gen2").iterdir())) == WRITTEN_BACK

    # Each phase of a task lies inside the time its task reports, and every phase started
    # is finished.
    for name in ("gen", "back"):
        started = one(events, "task_started", name)["time"]
        done = one(events, "task_finished", name)
        inside = [e for e in events if e["event"].startswith("phase_") and e["task"] == name
                  and e["phase"] != "remove_pod"]
        assert inside, name
        assert all(started <= e["time"] <= done["time"] for e in inside), name
        spent = sum(e["elapsed_seconds"] for e in inside if e["event"] == "phase_finished")
        assert spent <= done["duration_seconds"] + 0.01, name
        begun = {e["phase"] for e in inside if e["event"] == "phase_started"}
        assert begun == {e["phase"] for e in inside if e["event"] == "phase_finished"}

    # The pods kept warm go at the end: said, and inside the run's reported time.
    run_started, run_finished = one(events, "run_started"), one(events, "run_finished")
    removals = [e for e in events if e["event"] == "phase_finished" and e["phase"] == "remove_pod"]
    assert {e["task"] for e in removals} == {"gen", "back"}
    last_task = max(e["time"] for e in events if e["event"] == "task_finished")
    assert all(last_task <= e["time"] <= run_finished["time"] for e in removals)
    assert all(e["title"].startswith("removing pod buildr-") for e in removals)
    assert run_finished["duration_seconds"] + 0.01 >= max(e["time"] for e in removals) \
        - run_started["time"]
    assert events[-1]["event"] == "run_finished"


def test_a_cache_hit_lands_with_the_same_phase_counts(tmp_path: Path) -> None:
    need_image()
    root = make_repo(tmp_path)
    first = events_of(root, "gen", cache="on")
    again = events_of(root, "gen", cache="on")
    assert one(again, "task_finished", "gen")["cached"] is True
    assert "cache_store" in finished_phases(first, "gen")
    assert "cache_store" not in finished_phases(again, "gen")
    for events in (first, again):
        assert "cache_lookup" in finished_phases(events, "gen")
        extracted = finished_phases(events, "gen")["extract_outputs"]
        assert (extracted["done"], extracted["bytes"]) == (
            MADE_FILES, one(first, "task_finished", "gen")["bytes_returned"])
    assert not [e for e in again if e.get("phase") in ("copy_inputs", "remove_pod")], \
        "a hit starts no pod"
