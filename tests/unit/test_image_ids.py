"""The run's image ids, asked of the podman CLI when the run starts (cache/image_ids.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from buildr_podman.cache.image_ids import ImageIds
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
