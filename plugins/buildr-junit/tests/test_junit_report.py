"""The JUnit report: driven through the documented hooks with the host's own types."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import buildr_junit
import pytest

from buildr_podman.model import ContainerSpec, Project, RunReport, Task, TaskOutcome
from buildr_podman.plugins import make_plugin_manager


def task(name: str, category: str = "task") -> Task:
    return Task(name=name, module_type="script", container=ContainerSpec(image="i"),
                script="true", category=category)


def run(tmp_path: Path, pm_hook: object, outcomes: list[TaskOutcome],
        tolerated: tuple[str, ...] = ()) -> ET.Element:
    project = Project(root=tmp_path, out_dir=tmp_path / "out")
    tasks = [task("lib", "build"), task("app"), task("docs"), task("lint")]
    hook = pm_hook
    hook.buildr_run_started(project=project, tasks=tasks, jobs=2)
    hook.buildr_task_output(task=tasks[1], stream="stdout", data=b"compiling\x1b[0m\n")
    hook.buildr_run_finished(report=RunReport(outcomes=outcomes, duration_seconds=3.5,
                                              exit_code=1, tolerated=tolerated))
    return ET.parse(tmp_path / "out" / ".reports" / "junit.xml").getroot()


@pytest.fixture
def hook() -> object:
    pm = make_plugin_manager()
    assert pm.get_plugin("junit") is buildr_junit, "installed: found by its entry point"
    return pm.hook


def test_one_case_per_module_with_failures_and_skips(tmp_path: Path, hook: object) -> None:
    root = run(tmp_path, hook, [
        TaskOutcome(task="lib", exit_code=0, duration_seconds=1.0),
        TaskOutcome(task="app", exit_code=2, duration_seconds=2.0),
        TaskOutcome(task="docs", exit_code=-1, skipped="dependency app failed"),
        TaskOutcome(task="lint", exit_code=1, duration_seconds=0.5),
    ], tolerated=("lint",))
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("4", "1", "1")
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert cases["lib"].get("classname") == "buildr.build"
    assert cases["app"].find("failure").get("message") == "exit code 2"
    assert cases["app"].find("system-out").text == "compiling\ufffd[0m\n"
    assert cases["docs"].find("skipped").get("message") == "dependency app failed"
    assert cases["lint"].find("failure") is None, "continue_on_error: not a failure"


def test_the_path_can_be_moved_or_the_report_turned_off(tmp_path: Path, hook: object,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUILDR_JUNIT_XML", "")
    project = Project(root=tmp_path, out_dir=tmp_path / "out")
    hook.buildr_run_started(project=project, tasks=[task("a")], jobs=1)
    hook.buildr_run_finished(report=RunReport(outcomes=[], duration_seconds=0, exit_code=0))
    assert not (tmp_path / "out").exists()
    monkeypatch.setenv("BUILDR_JUNIT_XML", str(tmp_path / "elsewhere.xml"))
    hook.buildr_run_started(project=project, tasks=[task("a")], jobs=1)
    hook.buildr_run_finished(report=RunReport(
        outcomes=[TaskOutcome(task="a", exit_code=0)], duration_seconds=0, exit_code=0))
    assert ET.parse(tmp_path / "elsewhere.xml").getroot().find("testsuite").get("tests") == "1"
