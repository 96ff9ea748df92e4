"""Where outputs land: the last good output stays when a task fails; its files go beside it."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from buildr_podman.landing import OutputLanding
from buildr_podman.model import ContainerSpec, Project, Task

TASK = Task(name="t", module_type="script", container=ContainerSpec(image="i"), script="true")


def archive(files: dict[str, bytes]) -> io.BytesIO:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    data.seek(0)
    return data


def tree(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_a_failure_keeps_the_last_good_output_and_a_success_clears_the_failure(
        tmp_path: Path) -> None:
    project = Project(root=tmp_path, out_dir=tmp_path / "out")
    landing = OutputLanding(project)
    good = tmp_path / "out" / "t"
    failed = tmp_path / "out" / ".failed" / "t"
    assert landing.land(TASK, landing.stage(TASK, archive({"a": b"1"})), True) == good
    for attempt in range(2):  # failing again replaces the failed output, never the good one
        staged = landing.stage(TASK, archive({"partial": b"%d" % attempt}))
        assert landing.land(TASK, staged, False) == failed
        assert tree(good) == {"a": b"1"}
        assert tree(failed) == {"partial": b"%d" % attempt}
    assert landing.land(TASK, landing.stage(TASK, archive({"b": b"2"})), True) == good
    assert tree(good) == {"b": b"2"}
    assert not failed.exists(), "a stale failure no longer stands beside the good output"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".failed", "t"]
