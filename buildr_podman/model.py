"""The project's domain types: modules as configured, and what running them produced."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from buildr_podman.cache.remote_config import RemoteCacheSettings
    from buildr_podman.remote_execution.settings import RemoteExecutionSettings

__all__ = ["CATEGORIES", "BindMount", "ContainerSpec", "Project", "RunReport", "Task",
           "TaskOutcome", "TaskResult", "TmpfsMount"]

DEFAULT_SHELL = "/bin/sh"
WORKSPACE = "/workspace"
#: where, in the container, the outputs of this run's dependencies are (read-only, one
#: directory per module): what `${task.X.out_dir}` expands to
DEPENDENCY_OUTPUTS = "/.buildr/out"
#: The block types a module may be declared with: `task "script" "name" { ... }`.
CATEGORIES = ("task", "build", "tool", "package")


@dataclass(frozen=True)
class BindMount:
    """A host path mounted into the container (`bind_mount { source target read_only }`)."""

    source: Path  #: absolute host path
    target: str  #: absolute path in the container
    read_only: bool = False


@dataclass(frozen=True)
class TmpfsMount:
    """A memory-backed directory in the container (`tmpfs_mount { target size }`)."""

    target: str
    size: str | None = None  #: like "64m"; None leaves Podman's default


@dataclass(frozen=True)
class ContainerSpec:
    """Where a task runs: the image, the identity inside, and what the container may do."""

    image: str
    user: str | None = None  #: "uid:gid" for the task process; None keeps the image's root
    network: str = "none"  #: "none", or "private" for a network namespace of its own
    #: "mount": the inputs under a copy-on-write overlay; "copy": copied into a volume of the
    #: pod's own, for where Podman cannot overlay the repository's file system
    inputs: str = "mount"
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    bind_mounts: tuple[BindMount, ...] = ()
    tmpfs_mounts: tuple[TmpfsMount, ...] = ()
    #: targets of `cache_volume { target }`: a persistent volume per project, task and target
    #: (compiler caches, downloads), never returned, never in the task cache's key
    cache_volumes: tuple[str, ...] = ()
    #: the container's environment; the task's own `environment` wins over it
    environment: tuple[tuple[str, str], ...] = ()
    privileged: bool = False
    #: most processes (and threads) the task may have at once; 0: no limit
    pids_limit: int = 4096
    #: most memory the container may use, like "4g"; "" for the default (3/4 of the machine's),
    #: "none" for no limit
    memory: str = ""
    image_source: str = ""  #: "file:line:col" of the image attribute, for messages


@dataclass(frozen=True)
class Task:
    """One module block (`task "script" "NAME" { ... }`, or build/tool/package), validated."""

    name: str
    module_type: str
    container: ContainerSpec
    script: str  #: the text the shell runs (`inline` lines are joined under `set -e`)
    shell: str = DEFAULT_SHELL
    environment: tuple[tuple[str, str], ...] = ()
    #: like `environment` for the task's process, but the values are never shown: output, logs,
    #: reports and errors carry *** instead; they reach the agent only in its run request
    secret_environment: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    #: (path relative to the repository root, path relative to the workspace); empty = whole repo
    input_mapping: tuple[tuple[str, str], ...] = ()
    working_dir: str = "."
    source: str = ""  #: "file:line" where the block starts, for messages
    category: str = "task"  #: one of CATEGORIES
    depends_on: tuple[str, ...] = ()  #: names of modules that must finish first
    #: modules whose outputs of this run are laid over the inputs, in this order (later wins)
    inputs_from: tuple[str, ...] = ()
    #: modules whose outputs of this run the container shows under DEPENDENCY_OUTPUTS: those
    #: the configuration refers to (`${task.X.out_dir}`) and those of inputs_from
    outputs_used: tuple[str, ...] = ()
    timeout_seconds: float | None = None  #: None: no limit
    write_back: bool = False  #: apply the returned changes to the repository
    continue_on_error: bool = False  #: a failure lets dependents run and does not fail the run
    cache: bool = True  #: False: never served from the task cache nor stored in it
    #: a task with secret_environment is cached only with this: keyed by the secrets' names
    cache_secrets: bool = False
    #: what the returned archive may expand to (`buildr { max_return_size }`); None: the default
    max_return_bytes: int | None = None
    #: how many entries the returned archive may hold (`buildr { max_return_entries }`)
    max_return_entries: int | None = None
    #: the module type's own attributes, defaults filled in (what its plugin expanded)
    spec: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def argv(self) -> list[str]:
        """The task process's argv: the configured shell running the script."""
        return [self.shell, "-c", self.script]

    def output_mount(self, module: str) -> str:
        """Where the container shows this run's outputs of `module` (one of outputs_used)."""
        return f"{DEPENDENCY_OUTPUTS}/{module}"

    def container_working_dir(self) -> str:
        rel = self.working_dir.strip("/")
        return WORKSPACE if rel in ("", ".") else f"{WORKSPACE}/{rel}"


@dataclass(frozen=True)
class Project:
    """Everything read from one repository's `.buildr/*.hcl`."""

    root: Path
    out_dir: Path
    tasks: dict[str, Task] = field(default_factory=dict)  #: every module, by name
    #: the bound of the local task cache (`buildr { cache { max_size } }`); None: the default
    cache_max_bytes: int | None = None
    #: the remote task cache (`buildr { cache { remote } }`); None: only the local one
    cache_remote: RemoteCacheSettings | None = None
    #: where tasks run (`buildr { remote { execution } }`, `run --remote`); None: here
    remote_execution: RemoteExecutionSettings | None = None
    #: modules that cannot run, with why (an environment variable they need is not set): an
    #: error only when one of them is to run
    unavailable: dict[str, str] = field(default_factory=dict)
    default: tuple[str, ...] = ()  #: what `run` with no names runs (`buildr { default }`)

    # Beside the modules' out dirs, under names no module can have (a module name starts with
    # a letter or digit): a task named "a.log" or "junit.xml" collides with nothing.

    def output_dir(self, name: str) -> Path:
        """Where the last good outputs of module `name` are."""
        return self.out_dir / name

    def failed_dir(self, name: str) -> Path:
        """Where the outputs of module `name` go when it failed (its last good ones stay)."""
        return self.out_dir / ".failed" / name

    def log_path(self, name: str) -> Path:
        """Where the full log of module `name` is kept."""
        return self.out_dir / ".logs" / f"{name}.log"

    def report_path(self, file_name: str) -> Path:
        """Where a report of the whole run (junit.xml, say) is written."""
        return self.out_dir / ".reports" / file_name

    def out_dir_anchor(self) -> Path:
        """The directory trusted as given, from which the out dir is reached without following
        a symlink: the repository root (tasks decide what lies in it, with write_back), or,
        for an out dir outside the repository, the out dir's parent (made as needed)."""
        if self.out_dir.is_relative_to(self.root):
            return self.root
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        return self.out_dir.parent

    def open_out_dir(self, *below: str) -> int:
        """An fd of the out dir, or of a directory `below` it (".logs"), made as needed; the
        caller closes it. Every directory from out_dir_anchor down is opened without following
        a symlink (OSError ELOOP or ENOTDIR for one that is a symlink or file), and whatever is
        written in it must be reached from this fd, never by a path."""
        from buildr_podman.archive.beneath import open_directory_beneath

        anchor = self.out_dir_anchor()
        return open_directory_beneath(anchor, (*self.out_dir.relative_to(anchor).parts, *below),
                                      create=True)

    @property
    def out_dir_is_ours(self) -> bool:
        """Whether the out dir lies in .buildr/, the tool's own directory: what it holds is the
        tool's even unmarked (made by a version that did not mark). Elsewhere only what
        carries the mark (archive.beneath.mark) is ever replaced."""
        return self.out_dir.is_relative_to(self.root) and \
            self.out_dir.relative_to(self.root).parts[:1] == (".buildr",)

    def write_in_out_dir(self, rel: str, data: bytes) -> Path:
        """Writes a report file at `rel` in the out dir (".reports/junit.xml") whole (a new
        file renamed into place: a symlink or hard link a task planted there is replaced,
        never written through) and returns its path. Raises OSError, FileExistsError for a
        file there that this tool did not make (outside .buildr/, it may be the user's)."""
        from buildr_podman.archive.beneath import create_file_at, is_marked, lstat_at
        from buildr_podman.archive.owned import write_all

        *below, name = rel.split("/")
        out_fd = self.open_out_dir(*below)
        try:
            if not self.out_dir_is_ours and lstat_at(name, out_fd) is not None \
                    and not is_marked(name, out_fd):
                raise FileExistsError(errno.EEXIST, "not made by buildr-podman",
                                      str(self.out_dir / name))
            temporary = f".{name}.{os.getpid()}.tmp"
            fd = create_file_at(temporary, out_fd)
            try:
                write_all(fd, data)
            finally:
                os.close(fd)
            os.rename(temporary, name, src_dir_fd=out_fd, dst_dir_fd=out_fd)
        finally:
            os.close(out_fd)
        return self.out_dir / rel


@dataclass(frozen=True)
class TaskResult:
    """What a backend returns for a task it ran: the facts of that run, never changed after.
    The runner makes the TaskOutcome of it, once (adding what only it knows: the time the
    user waited, a cancellation, where write_back put the changes)."""

    exit_code: int
    error: str = ""  #: the backend could not run the task at all
    files_returned: int = 0
    bytes_returned: int = 0
    deleted_paths: tuple[str, ...] = ()
    tracking: str = ""
    timed_out: bool = False
    duration_seconds: float = 0.0  #: the task's own time, as the backend measured it
    output_dir: Path | None = None  #: where its outputs landed (landing.py)
    watched_directories: int = 0
    tracking_setup_seconds: float = 0.0
    tracking_resolve_seconds: float = 0.0

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and not self.error and not self.timed_out


@dataclass(frozen=True)
class TaskOutcome:
    """What running one task produced, as reported to the user and to observers (built once,
    by the runner, from the backend's TaskResult)."""

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
    cancelled: bool = False  #: stopped by Ctrl-C or by another module's failure
    watched_directories: int = 0  #: inotify watches the agent held during the task
    tracking_setup_seconds: float = 0.0  #: watching, before the task started
    tracking_resolve_seconds: float = 0.0  #: finding the change set, after it ended
    skipped: str = ""  #: why it never ran (a dependency failed, the run was cancelled)
    cached: bool = False  #: served from the task cache: no container ran
    #: what the cache said: why it was not cached, or what changed since its last entry
    cache_note: str = ""

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and not self.error and not self.skipped \
            and not self.cancelled and not self.timed_out

    @property
    def status(self) -> str:
        """One word for tables and JSON: ok, failed, timed-out, cancelled or skipped."""
        if self.skipped:
            return "skipped"
        if self.cancelled:
            return "cancelled"
        if self.timed_out:
            return "timed-out"
        return "ok" if self.succeeded else "failed"


@dataclass
class RunReport:
    """A whole `run`: every selected module's outcome in plan order, and how it ended."""

    outcomes: list[TaskOutcome]
    duration_seconds: float
    exit_code: int  #: 0 ok, 1 a module failed, 130 interrupted
    interrupted: bool = False
    #: names of failed modules whose failure was tolerated (continue_on_error)
    tolerated: tuple[str, ...] = ()
