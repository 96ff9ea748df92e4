"""What reaches the terminal from a task (issue 13, class 9): the rich display keeps colours and
drops every other control; the plain output is the task's bytes unchanged; our own messages
show names a task chose with their controls escaped."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from buildr_podman.errors import UnsafeArchiveMember, printable
from buildr_podman.model import ContainerSpec, Project, Task, TaskOutcome
from buildr_podman.output.live import RichReporter
from buildr_podman.output.plain import PlainReporter
from buildr_podman.output.sanitize import terminal_safe

HOSTILE = (b"\x1bc"                                  # full reset
           b"\xc2\x9b2J"                             # 8-bit CSI (U+009B) erase display
           b"\x1b]8;;https://evil.example/\x1b\\click me\x1b]8;;\x1b\\"  # OSC 8 link
           b"\x1b]0;owned\x07"                       # window title
           b"\x1b]52;c;ZXZpbA==\x07"                 # clipboard
           b"\x1bP+q\x1b\\"                          # DCS
           b"\x1b[?1049h\x1b[2J\x1b[H"               # alternate screen, erase, home
           b"\x1b[31mred\x1b[0m plain\x07\x08\n")    # colour (kept), bell, backspace


@pytest.mark.parametrize(("raw", "shown"), [
    ("\x1bc reset", " reset"),
    ("a\x9b31mX", "a31mX"),
    ("\x1b]8;;https://evil/\x1b\\link\x1b]8;;\x1b\\", "link"),
    ("\x1b]0;title\x07rest", "rest"),
    ("\x1b[31mred\x1b[0m", "\x1b[31mred\x1b[0m"),
    ("\x1b[1;38;5;208mbold orange\x1b[m", "\x1b[1;38;5;208mbold orange\x1b[m"),
    ("tab\tstays, é 日本 too", "tab\tstays, é 日本 too"),
    ("cut \x1b", "cut "),
])
def test_only_colours_survive(raw: str, shown: str) -> None:
    assert terminal_safe(raw) == shown


def task(name: str = "t") -> Task:
    return Task(name=name, module_type="script", container=ContainerSpec(image="i"),
                script="true")


def rich_output(data: bytes) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, color_system="truecolor", width=200)
    reporter = RichReporter(console=console)
    project = Project(root=Path("/r"), out_dir=Path("/r/out"))
    reporter.buildr_run_started(project=project, tasks=[task()], jobs=1)
    reporter.buildr_task_started(task=task())
    reporter.buildr_task_output(task=task(), stream="stdout", data=data)
    reporter.buildr_task_finished(task=task(), outcome=TaskOutcome(task="t", exit_code=0))
    reporter.close()
    return buffer.getvalue()


def test_the_rich_display_passes_colours_and_nothing_else() -> None:
    shown = rich_output(HOSTILE)
    for forbidden in ("\x1bc", "\x9b", "\x1b]", "\x1bP", "evil.example", "\x07", "\x08",
                      "\x1b[?1049h", "\x1b[2J", "\x1b[H"):
        assert forbidden not in shown, repr(forbidden)
    assert "click me" in shown and "red" in shown and "plain" in shown
    assert "\x1b[31m" in shown  # the task's colour, as rich writes it


def test_the_plain_output_is_the_tasks_bytes_unchanged() -> None:
    out, err = io.BytesIO(), io.StringIO()
    plain = PlainReporter(out=out, err=err)
    project = Project(root=Path("/r"), out_dir=Path("/r/out"))
    plain.buildr_run_started(project=project, tasks=[task()], jobs=1)
    plain.buildr_task_output(task=task(), stream="stdout", data=HOSTILE)
    assert out.getvalue() == HOSTILE


def test_names_a_task_chose_are_escaped_in_messages() -> None:
    name = "evil\x1b]0;owned\x07\x9b2J\nname"
    assert "\x1b" not in str(UnsafeArchiveMember(name, "why"))
    assert printable(name) == "evil\\x1b]0;owned\\x07\\x9b2J\\nname"
    assert printable("a\nb", keep="\n") == "a\nb"
    assert printable("plain é 日本") == "plain é 日本"
