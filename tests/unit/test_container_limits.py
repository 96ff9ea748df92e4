"""container { pids_limit, memory }: read from the configuration, and turned into Podman's
limits or the agent's where cgroups cannot (the fork bomb itself is in the integration tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from buildr_podman.agent.limits import PIDS_LIMIT_VARIABLE, LimitWatch
from buildr_podman.config import load_project
from buildr_podman.errors import ConfigError
from buildr_podman.model import ContainerSpec
from buildr_podman.podman import limits


def project_with(tmp_path: Path, lines: str) -> ContainerSpec:
    (tmp_path / ".buildr").mkdir(exist_ok=True)
    (tmp_path / ".buildr" / "tasks.hcl").write_text(
        f'task "script" "x" {{\n  container {{\n    image = "i"\n{lines}  }}\n'
        '  script = "t"\n}\n')
    return load_project(tmp_path, environ={}).tasks["x"].container


def test_defaults_and_settings(tmp_path: Path) -> None:
    spec = project_with(tmp_path, "")
    assert spec.pids_limit == 4096 and spec.memory == ""
    spec = project_with(tmp_path, '    pids_limit = 0\n    memory = "512M"\n')
    assert spec.pids_limit == 0 and spec.memory == "512m"


@pytest.mark.parametrize(("lines", "expected"), [
    ("    pids_limit = 8\n", (r":4:18: pids_limit must be a whole number of processes, at "
                            r"least 16 \(or 0 for no limit\), like 4096, not 8")),
    ('    pids_limit = "lots"\n', r"pids_limit must be a whole number"),
    ('    memory = "4"\n', (r':4:14: memory must be a size with a unit, like "512m" or "4g" '
                          r'\(or "none" for no limit\), not "4"')),
    ("    memory = 4\n", r"memory must be a size with a unit"),
])
def test_mistakes_are_one_located_line(tmp_path: Path, lines: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        project_with(tmp_path, lines)


def test_memory_in_bytes() -> None:
    assert limits.memory_bytes(ContainerSpec(image="i", memory="512m")) == 512 << 20
    assert limits.memory_bytes(ContainerSpec(image="i", memory="none")) is None
    default = limits.memory_bytes(ContainerSpec(image="i"))
    assert default is not None and default > 64 << 20  # three quarters of this machine


def test_cgroups_set_the_limits_where_they_can(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = ContainerSpec(image="i", pids_limit=100, memory="1g")
    monkeypatch.setattr(limits, "cgroup_controllers", lambda: frozenset({"pids", "memory"}))
    assert limits.container_limits(spec) == ({"pids_limit": 100, "mem_limit": 1 << 30}, {})
    assert limits.unenforced() == []


def test_without_cgroups_the_agent_limits_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = ContainerSpec(image="i", pids_limit=100, memory="1g")
    monkeypatch.setattr(limits, "cgroup_controllers", lambda: frozenset())
    assert limits.container_limits(spec) == ({}, {PIDS_LIMIT_VARIABLE: "100"})
    assert limits.container_limits(ContainerSpec(image="i", pids_limit=0)) == ({}, {})
    assert [phrase.split()[0] for phrase in limits.unenforced()] == ["pids_limit", "memory"]


def test_the_agent_reports_a_limit_reached(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("buildr_podman.agent.limits.SAMPLE_SECONDS", 0.0)
    watch = LimitWatch({PIDS_LIMIT_VARIABLE: "64"})
    assert watch.rlimit == 64
    monkeypatch.setattr("buildr_podman.agent.limits._threads", lambda: 10)
    watch.sample()
    assert watch.verdict() == ""
    monkeypatch.setattr("buildr_podman.agent.limits._threads", lambda: 55)
    watch.sample()
    assert "reached its limit of 64 processes" in watch.verdict()
    assert LimitWatch({}).rlimit == 0
