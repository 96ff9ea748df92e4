"""The project's domain types: tasks as configured, and what running one produced."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ContainerSpec", "Project", "Task", "TaskOutcome"]

DEFAULT_SHELL = "/bin/sh"
WORKSPACE = "/workspace"


@dataclass(frozen=True)
class ContainerSpec:
    """Where a task runs: the image and the identity inside the container."""

    image: str
    user: str | None = None  #: "uid:gid" for the task process; None keeps the image's root
    network: str = "none"


@dataclass(frozen=True)
class Task:
    """One `task "TYPE" "NAME"` block, validated."""

    name: str
    module_type: str
    container: ContainerSpec
    script: str  #: the text the shell runs (`inline` lines are joined under `set -e`)
    shell: str = DEFAULT_SHELL
    environment: tuple[tuple[str, str], ...] = ()
    #: (path relative to the repository root, path relative to the workspace); empty = whole repo
    input_mapping: tuple[tuple[str, str], ...] = ()
    working_dir: str = "."
    source: str = ""  #: "file:line" where the block starts, for messages

    def argv(self) -> list[str]:
        """The task process's argv: the configured shell running the script."""
        return [self.shell, "-c", self.script]

    def container_working_dir(self) -> str:
        rel = self.working_dir.strip("/")
        return WORKSPACE if rel in ("", ".") else f"{WORKSPACE}/{rel}"


@dataclass(frozen=True)
class Project:
    """Everything read from one repository's `.buildr/*.hcl`."""

    root: Path
    out_dir: Path
    tasks: dict[str, Task] = field(default_factory=dict)


@dataclass
class TaskOutcome:
    """What running one task produced, as reported to the user and to observers."""

    task: str
    exit_code: int
    error: str = ""
    files_returned: int = 0
    bytes_returned: int = 0
    deleted_paths: tuple[str, ...] = ()
    tracking: str = ""
    timed_out: bool = False
    duration_seconds: float = 0.0
    output_dir: Path | None = None

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and not self.error
