"""A real task through the real executor, for `doctor`: pod, agent, workspace and files back."""

from __future__ import annotations

import tempfile
from pathlib import Path

from buildr_podman.errors import BuildrError
from buildr_podman.model import ContainerSpec, Project, Task

__all__ = ["round_trip"]

TASK_NAME = "doctor-round-trip"
EXPECTED = "round trip ok\n"


def round_trip(image: str) -> str:
    """Runs a tiny task in `image`; returns "" when its file came back, else what went wrong."""
    from buildr_podman.podman.executor import PodmanExecutor

    with tempfile.TemporaryDirectory(prefix="buildr-doctor-") as directory:
        root = Path(directory)
        (root / "input.txt").write_text("round trip ok\n")
        project = Project(root=root, out_dir=root / "out")
        task = Task(name=TASK_NAME, module_type="script", container=ContainerSpec(image=image),
                    script="cat input.txt > back.txt")
        observer = _Observer()
        try:
            with PodmanExecutor().open_session(project) as session:
                outcome = session.run_task(task, observer)
        except BuildrError as exc:
            return str(exc)
        if not outcome.succeeded:
            said = observer.text()
            return (f"the task failed ({outcome.error or f'exit code {outcome.exit_code}'})"
                    + (f": {said}" if said else ""))
        back = root / "out" / TASK_NAME / "back.txt"
        if not back.is_file() or back.read_text() != EXPECTED:
            return f"the task ran, but its file did not come back into {back.parent}"
        return ""


class _Observer:
    """Keeps the task's output, to show it when the round trip fails."""

    def __init__(self) -> None:
        self._data = bytearray()

    def output(self, task: Task, stream: str, data: bytes) -> None:
        self._data += data[: 4096 - len(self._data)]

    def log(self, task: Task, message: str) -> None:
        pass

    def text(self) -> str:
        return " | ".join(self._data.decode(errors="replace").strip().splitlines()[-3:])
