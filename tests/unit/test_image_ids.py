"""The run's image ids, asked of the podman CLI when the run starts, or of the API service a
`run --no-cache` starts first thing (cache/image_ids.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from buildr_podman.cache.image_ids import ImageIds
from buildr_podman.podman import connection
from buildr_podman.podman.libpod import LibpodError, NotFound
from buildr_podman.podman.podman_cli import PodmanCliError

# A stand-in `podman` on PATH: logs each call, knows one image, fails for the others as
# podman does (a message on stderr, status 125).
FAKE_PODMAN = """#!/bin/sh
echo "$*" >> "$CALLS"
if [ "$5" = known ]; then echo sha256abc; exit 0; fi
echo "Error: $5: image not known" >&2
exit 125
"""


@pytest.fixture
def calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    podman = tmp_path / "bin" / "podman"
    podman.parent.mkdir()
    podman.write_text(FAKE_PODMAN)
    podman.chmod(podman.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "calls"
    monkeypatch.setenv("PATH", f"{podman.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CALLS", str(log))
    return log


def test_each_image_is_asked_once_at_the_start_and_read_when_looked_up(calls: Path) -> None:
    ids = ImageIds(["known", "known"])
    assert ids("known") == "sha256abc"
    ids.close()
    assert calls.read_text().splitlines() == ["image inspect --format {{.Id}} known"]


def test_a_missing_image_fails_its_lookup_with_podmans_error(calls: Path) -> None:
    ids = ImageIds(["missing"])
    with pytest.raises(PodmanCliError, match="missing: image not known"):
        ids("missing")
    ids.close()


def test_an_image_not_named_at_the_start_is_asked_when_looked_up(calls: Path) -> None:
    ids = ImageIds([])
    assert ids("known") == "sha256abc"
    ids.close()


def test_close_reaps_the_questions_nobody_needed(calls: Path) -> None:
    ids = ImageIds(["known", "missing"])
    ids.close()
    assert ids._asked == {}  # noqa: SLF001 - nothing left running or unreaped


class FakeApi:
    """Stands in for connection.early_api()'s PodmanApi: knows one image, or fails."""

    def __init__(self, failure: Exception | None = None) -> None:
        self.libpod = self
        self.failure = failure
        self.asked: list[str] = []
        self.waited = 0

    def wait_until_answers(self) -> None:
        self.waited += 1

    def image_id(self, name: str) -> str:
        self.asked.append(name)
        if self.failure is not None:
            raise self.failure
        if name != "known":
            raise NotFound(404, f"failed to find image {name}: image not known")
        return "sha256abc"


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    fake = FakeApi()
    monkeypatch.setattr(connection, "early_api", lambda: fake)
    return fake


def test_a_run_with_an_early_api_asks_it_and_starts_no_podman_process(
        calls: Path, api: FakeApi) -> None:
    ids = ImageIds(["known", "missing"], early_api=True)
    assert ids("known") == "sha256abc"
    with pytest.raises(PodmanCliError, match="missing: image not known"):
        ids("missing")
    ids.close()
    assert api.asked == ["known", "missing"] and api.waited == 2
    assert not calls.exists()


def test_an_api_that_fails_otherwise_hands_the_question_to_the_command_line(
        calls: Path, api: FakeApi) -> None:
    api.failure = LibpodError(500, "database is locked")
    ids = ImageIds(["known"], early_api=True)
    assert ids("known") == "sha256abc"
    assert calls.read_text().splitlines() == ["image inspect --format {{.Id}} known"]


def test_without_an_early_api_the_command_line_is_asked_at_the_start(
        calls: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection, "early_api", lambda: None)
    ids = ImageIds(["known"], early_api=True)
    assert ids._asked  # noqa: SLF001 - asked at once, as without early_api
    assert ids("known") == "sha256abc"
