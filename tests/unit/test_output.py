"""Reporters and logs: line splitting, prefixes, verdicts, the summary, task log notes."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from rich.console import Console

from buildr_podman.model import ContainerSpec, Project, RunReport, Task, TaskOutcome
from buildr_podman.output.jsonl import JsonReporter
from buildr_podman.output.lines import MAX_LINE, LineSplitter, shown_path
from buildr_podman.output.live import RichReporter
from buildr_podman.output.plain import PlainReporter
from buildr_podman.output.summary import counts_line, phase_counts, rows, verdict
from buildr_podman.output.tasklog import TaskLogs
from buildr_podman.phases import PhaseUpdate


def task(name: str) -> Task:
    return Task(name=name, module_type="script", container=ContainerSpec(image="img"),
                script="true")


def test_lines_are_split_across_chunks_and_flushed_at_the_end() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"one\ntw") == [b"one\n"]
    assert splitter.feed(b"o\r\nthree\rfour") == [b"two\n", b"three\n"]
    assert splitter.flush() == b"four\n"
    assert splitter.flush() == b""
    assert len(splitter.feed(b"x" * (MAX_LINE + 1))) == 1, "an endless line still shows"


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return False


def reporter() -> tuple[PlainReporter, io.BytesIO, io.StringIO]:
    out, err = io.BytesIO(), Tty()
    return PlainReporter(out=out, err=err), out, err


def test_one_task_passes_output_through_untouched(tmp_path: Path) -> None:
    plain, out, _ = reporter()
    project = Project(root=tmp_path, out_dir=tmp_path / "out")
    plain.buildr_run_started(project=project, tasks=[task("a")], jobs=4)
    plain.buildr_task_output(task=task("a"), stream="stdout", data=b"no newline")
    assert out.getvalue() == b"no newline"


class TtyBytes(io.BytesIO):
    def isatty(self) -> bool:
        return True


def test_a_line_left_open_on_a_terminal_is_ended_before_our_next_line(tmp_path: Path) -> None:
    project = Project(root=tmp_path, out_dir=tmp_path / "out")
    for out, expected in ((TtyBytes(), b"no newline\n"), (io.BytesIO(), b"no newline")):
        plain = PlainReporter(out=out, err=Tty())
        plain.buildr_run_started(project=project, tasks=[task("a")], jobs=1)
        plain.buildr_task_output(task=task("a"), stream="stdout", data=b"no newline")
        plain.buildr_task_finished(task=task("a"), outcome=TaskOutcome(task="a", exit_code=0))
        assert out.getvalue() == expected  # piped output is never changed


def test_several_at_once_get_aligned_prefixes(tmp_path: Path) -> None:
    plain, out, _ = reporter()
    project = Project(root=tmp_path, out_dir=tmp_path / "out")
    plain.buildr_run_started(project=project, tasks=[task("a"), task("long")], jobs=2)
    plain.buildr_task_output(task=task("long"), stream="stdout", data=b"1\n2")
    plain.buildr_task_output(task=task("a"), stream="stdout", data=b"x\n")
    plain.buildr_task_finished(task=task("long"), outcome=TaskOutcome(task="long", exit_code=0))
    assert out.getvalue() == b"long | 1\na    | x\nlong | 2\n"


def test_a_deleted_name_that_is_not_utf8_is_shown_and_put_in_json_as_escapes() -> None:
    import json

    from buildr_podman.output.jsonl import outcome_fields

    outcome = TaskOutcome(task="t", exit_code=0, deleted_paths=("caf\udce9.txt", "ok.txt"))
    assert shown_path(outcome.deleted_paths[0]) == "caf\\xe9.txt"
    assert json.loads(json.dumps(outcome_fields(outcome)))["deleted_paths"] == [
        "caf\\xe9.txt", "ok.txt"]  # json.dumps refuses no surrogate, but a UTF-8 stream would
    out, err = io.BytesIO(), Tty()
    PlainReporter(out=out, err=err, verbose=True).buildr_task_finished(task("t"), outcome)
    assert "deleted caf\\xe9.txt" in err.getvalue()


def test_verdicts_and_the_summary() -> None:
    outcomes = [
        TaskOutcome(task="a", exit_code=0, duration_seconds=1.25, files_returned=3,
                    output_dir=Path("/r/out/a")),
        TaskOutcome(task="b", exit_code=2, duration_seconds=0.5),
        TaskOutcome(task="c", exit_code=-1, skipped="dependency b failed"),
        TaskOutcome(task="d", exit_code=137, timed_out=True),
        TaskOutcome(task="e", exit_code=-1, error="cancelled", cancelled=True),
        TaskOutcome(task="f", exit_code=1),
    ]
    assert [verdict(o) for o in outcomes] == [
        "ok", "failed with exit code 2", "skipped (dependency b failed)", "timed out",
        "cancelled", "failed with exit code 1"]
    assert verdict(outcomes[5], tolerated=True) == "failed with exit code 1 (continue_on_error)"
    report = RunReport(outcomes=outcomes, duration_seconds=3.0, exit_code=1, tolerated=("f",))
    table = rows(report)
    assert [(r.name, r.status, r.time, r.files) for r in table] == [
        ("a", "ok", "1.2 s", "3"), ("b", "failed (2)", "0.5 s", "-"),
        ("c", "skipped", "-", "-"), ("d", "timed-out", "0.0 s", "-"),
        ("e", "cancelled", "0.0 s", "-"), ("f", "failed (tolerated)", "0.0 s", "-")]
    assert counts_line(report) == "1 ok, 2 failed, 1 timed-out, 1 cancelled, 1 skipped in 3.0 s"


def test_task_logs_put_notes_on_their_own_lines(tmp_path: Path) -> None:
    project = Project(root=tmp_path, out_dir=tmp_path / "out")
    logs = TaskLogs(project)
    logs.buildr_task_started(task=task("a"))
    logs.buildr_task_output(task=task("a"), stream="stdout", data=b"partial")
    logs.buildr_task_log(task=task("a"), message="pod started")
    logs.buildr_task_output(task=task("a"), stream="stderr", data=b"rest\n")
    logs.buildr_task_phase(task=task("a"), phase=PhaseUpdate(
        "finished", "extract_outputs", "extracting outputs", 75.5, done=3, unit="files"))
    logs.buildr_task_finished(task=task("a"), outcome=TaskOutcome(task="a", exit_code=0))
    lines = (tmp_path / "out" / ".logs" / "a.log").read_text().splitlines()
    assert lines[1:] == ["partial", "# buildr: pod started", "rest",
                         "# buildr: extracting outputs took 1 min 15 s (3 files)",
                         "# buildr: a ok in 0.0 s"]


@pytest.mark.parametrize(("planted", "out"), [("log", ".buildr/out"), ("log", "build"),
                                             ("out dir", ".buildr/out")])
def test_a_task_log_is_never_written_through_a_planted_symlink(tmp_path: Path, planted: str,
                                                               out: str) -> None:
    """A task with write_back could leave `<out>/a.log -> ~/.bashrc` (or make the out dir a
    link): the next run's log replaces the link in .buildr/, where all is the tool's; in an
    out dir of the user's it is left alone, as any file this tool did not make; through a
    linked out dir nothing is written."""
    outside = tmp_path / "home"
    outside.mkdir()
    (outside / "a.log").write_text("the user's file\n")
    root = tmp_path / "repo"
    (root / out).parent.mkdir(parents=True)
    if planted == "log":
        (root / out / ".logs").mkdir(parents=True)
        os.symlink(outside / "a.log", root / out / ".logs" / "a.log")
    else:
        os.symlink(outside, root / out)
    logs = TaskLogs(Project(root=root, out_dir=root / out))
    logs.buildr_task_started(task=task("a"))
    logs.buildr_task_output(task=task("a"), stream="stdout", data=b"task output\n")
    logs.buildr_task_finished(task=task("a"), outcome=TaskOutcome(task="a", exit_code=0))
    assert (outside / "a.log").read_text() == "the user's file\n"
    if planted == "log" and out == ".buildr/out":
        assert "task output" in (root / out / ".logs" / "a.log").read_text()
    elif planted == "log":
        assert (root / out / ".logs" / "a.log").is_symlink()


def phase_update(state: str, elapsed: float, **counts: object) -> PhaseUpdate:
    return PhaseUpdate(state=state, name="extract_outputs", title="extracting outputs",
                       elapsed_seconds=elapsed, unit="files", **counts)  # type: ignore[arg-type]


def test_plain_output_says_a_long_phase_twice_and_never_its_progress() -> None:
    plain, _, err = reporter()
    plain.buildr_task_phase(task=task("big"), phase=phase_update("started", 1.0, done=5))
    for second in range(2, 200):
        plain.buildr_task_phase(task=task("big"), phase=phase_update("progress", second))
    plain.buildr_task_phase(task=task("big"), phase=phase_update(
        "finished", 211.4, done=1_000_000, bytes=1_234_567_890))
    remove = PhaseUpdate(state="finished", name="remove_pod", title="removing pod buildr-big-1",
                         elapsed_seconds=3.25)
    plain.buildr_task_phase(task=task("big"), phase=remove)
    assert err.getvalue().splitlines() == [
        "buildr: big: extracting outputs...",
        "buildr: big: extracting outputs took 3 min 31 s (1,000,000 files, 1.2 GB)",
        "buildr: big: removing pod buildr-big-1 took 3.2 s",
    ]


def test_phase_counts_in_words() -> None:
    assert phase_counts(phase_update("progress", 1, done=3, total=10)) == "3 of 10 files"
    assert phase_counts(phase_update("progress", 1, done=1234, bytes=999)) == \
        "1,234 files, 999 bytes"
    assert phase_counts(PhaseUpdate("started", "remove_pod", "removing pod p", 1.0)) == ""


def test_json_phase_events_carry_the_counts() -> None:
    out = io.StringIO()
    reporter = JsonReporter(out=out)
    for state in ("started", "progress", "finished"):
        reporter.buildr_task_phase(task=task("big"), phase=phase_update(
            state, 2.5, done=10, total=None, bytes=2048))
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["phase_started", "phase_progress", "phase_finished"]
    assert {k: v for k, v in events[-1].items() if k != "time"} == {
        "event": "phase_finished", "task": "big", "phase": "extract_outputs",
        "title": "extracting outputs", "elapsed_seconds": 2.5, "done": 10, "total": None,
        "bytes": 2048, "unit": "files"}


def test_the_rich_panel_shows_a_phase_while_it_lasts() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120)
    rich = RichReporter(console=console)
    rich.buildr_run_started(project=Project(root=Path("/r"), out_dir=Path("/r/out")),
                            tasks=[task("big")], jobs=1)
    rich.buildr_task_phase(task=task("big"), phase=phase_update("progress", 4.0, done=12_345,
                                                                bytes=2_000_000))
    panel = io.StringIO()
    Console(file=panel, width=120).print(rich._render())
    assert "extracting outputs: 12,345 files, 2.0 MB" in panel.getvalue()
    assert "4." in panel.getvalue()  # its own elapsed time
    rich.buildr_task_phase(task=task("big"), phase=phase_update("finished", 6.0, done=20_000))
    panel = io.StringIO()
    Console(file=panel, width=120).print(rich._render())
    assert "extracting" not in panel.getvalue()
    rich.close()
    assert "big: extracting outputs took 6.0 s (20,000 files)" in buffer.getvalue()


def test_after_a_long_pod_removal_even_one_task_gets_the_runs_total() -> None:
    outcome = TaskOutcome(task="big", exit_code=0, duration_seconds=277.9)
    report = RunReport(outcomes=[outcome], duration_seconds=489.0, exit_code=0)
    plain, _, err = reporter()
    plain.buildr_run_finished(report=report)
    assert err.getvalue() == "", "a fast run ends with its task's line"
    plain.buildr_task_phase(task=task("big"), phase=PhaseUpdate(
        "finished", "remove_pod", "removing pod buildr-big-1", 211.0))
    plain.buildr_run_finished(report=report)
    assert err.getvalue().splitlines()[-1] == "buildr: 1 ok in 489.0 s"
