"""A run observer for buildr-podman: a JUnit-style XML report of each run, for CI.

Registered through the entry point `junit` of group `buildr`; it uses only the documented
run-event hooks. The host calls them one at a time, so no locking is needed here.
"""

from __future__ import annotations

import io
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from buildr_podman import hookimpl

__all__ = ["JunitReport", "buildr_run_finished", "buildr_run_started", "buildr_task_output"]
__version__ = "0.1.0"

ENV_PATH = "BUILDR_JUNIT_XML"
# In the project's out dir unless ENV_PATH says otherwise; in .reports/, where no module can be
# named (a task named "junit.xml" collides with nothing).
REPORT_NAME = ".reports/junit.xml"
KEEP_OUTPUT = 64 * 1024  # the end of each task's output goes into the report


class JunitReport:
    """One run's report: where it goes, each module's kind and the end of its output."""

    def __init__(self, path: Path | None, kinds: dict[str, str], project: Any) -> None:
        self.path = path  # None: junit.xml in the project's out dir
        self.kinds = kinds
        self.project = project
        self.output: dict[str, bytearray] = {}

    def add_output(self, name: str, data: bytes) -> None:
        kept = self.output.setdefault(name, bytearray())
        kept += data
        del kept[:-KEEP_OUTPUT]

    def write(self, report: Any) -> None:
        tree = ET.ElementTree(self.document(report))
        ET.indent(tree)
        data = io.BytesIO()
        tree.write(data, encoding="utf-8", xml_declaration=True)
        if self.path is None:  # the out dir: a task may have planted a symlink there
            self.project.write_in_out_dir(REPORT_NAME, data.getvalue())
        else:  # a path the user chose, written as given
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_bytes(data.getvalue())

    def document(self, report: Any) -> ET.Element:
        outcomes = list(report.outcomes)
        failures = sum(1 for o in outcomes if o.status in ("failed", "timed-out")
                       and o.task not in report.tolerated)
        skipped = sum(1 for o in outcomes if o.status in ("skipped", "cancelled"))
        suites = ET.Element("testsuites")
        suite = ET.SubElement(suites, "testsuite", name="buildr", tests=str(len(outcomes)),
                              failures=str(failures), errors="0", skipped=str(skipped),
                              time=f"{report.duration_seconds:.3f}")
        for outcome in outcomes:
            self._case(suite, outcome, outcome.task in report.tolerated)
        return suites

    def _case(self, suite: ET.Element, outcome: Any, tolerated: bool) -> None:
        kind = self.kinds.get(outcome.task, "task")
        case = ET.SubElement(suite, "testcase", classname=f"buildr.{kind}", name=outcome.task,
                             time=f"{outcome.duration_seconds:.3f}")
        status = outcome.status
        if status in ("skipped", "cancelled"):
            ET.SubElement(case, "skipped", message=outcome.skipped or "cancelled")
        elif status in ("failed", "timed-out") and not tolerated:
            message = outcome.error or ("timed out" if outcome.timed_out
                                        else f"exit code {outcome.exit_code}")
            ET.SubElement(case, "failure", message=message, type=status)
        output = self.output.get(outcome.task)
        if output:
            ET.SubElement(case, "system-out").text = _xml_safe(output.decode(errors="replace"))


def _xml_safe(text: str) -> str:
    """XML 1.0 cannot hold most control characters; a terminal's escapes would break it."""
    return "".join(c if c in "\t\n\r" or ord(c) >= 0x20 else "\ufffd" for c in text)


# The run in progress. Module state is enough: one run per process, and the host calls
# run-event hooks one at a time.
_current: JunitReport | None = None


@hookimpl
def buildr_run_started(project: Any, tasks: Sequence[Any], jobs: int) -> None:
    global _current
    setting = os.environ.get(ENV_PATH)
    if setting == "":
        _current = None
        return
    _current = JunitReport(Path(setting) if setting else None,
                           {task.name: task.category for task in tasks}, project)


@hookimpl
def buildr_task_output(task: Any, stream: str, data: bytes) -> None:
    if _current is not None:
        _current.add_output(task.name, data)


@hookimpl
def buildr_run_finished(report: Any) -> None:
    global _current
    if _current is not None:
        _current.write(report)
        _current = None
