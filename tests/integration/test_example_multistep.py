"""examples/multistep: configure generates a header, build compiles over it, test runs the
tests over both, chained by inputs_from. Three runs in a row in both input modes: every step
must see this run's outputs of the one before, and bring back only what it made."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from test_faults import buildr, need_image

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leaks")]

GCC = "localhost/buildr-gcc:bookworm"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "multistep"


def files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


@pytest.mark.parametrize("inputs", ["mount", "copy"])
def test_the_multistep_example_builds_this_runs_configuration(tmp_path: Path,
                                                              inputs: str) -> None:
    need_image(GCC)
    root = tmp_path / "multistep"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("out"))
    out = root / ".buildr" / "out"
    ids = set()
    for attempt in range(3):
        result = buildr(root, "run", "--output", "plain", env={"EXAMPLE_INPUTS": inputs})
        assert result.returncode == 0, (attempt, result.stderr)
        found = re.search(r'#define BUILD_ID "([0-9a-f-]{36})"',
                          (out / "configure" / "config.h").read_text())
        assert found, attempt
        build_id = found.group(1)
        ids.add(build_id)
        assert files(out / "configure") == ["config.h"]
        assert files(out / "build") == ["greet", "greet.o", "main.o"], "config.h not returned"
        assert files(out / "test") == ["test-report.txt", "test_greet"], "nothing laid in"
        assert (out / "test" / "test-report.txt").read_text() == (
            f"ok build {build_id}\nHello from a configured build (build {build_id})\n"), attempt
        assert f"ok build {build_id}" in result.stdout
    assert len(ids) == 3, "configure ran anew each time, and every later step saw it"
