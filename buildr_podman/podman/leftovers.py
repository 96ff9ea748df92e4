"""Finding and removing what runs left behind: labelled pods, containers and workspace volumes,
API services, socket directories and stale agent builds; and stopping this process's own
containers at once.

Ownership comes from the pod label (LABEL = the host pid): a pod whose process is gone is a
leftover. A socket directory or agent build is in use while a live container mounts it.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from buildr_podman.archive.owned import remove_tree
from buildr_podman.podman.agent_build import CHECKED_SUFFIX, DIGEST_SUFFIX
from buildr_podman.podman.connection import socket_accepts
from buildr_podman.podman.container_spec import SOCKET_NAME
from buildr_podman.podman.podman_cli import PodmanCliError, podman, podman_json
from buildr_podman.podman.pods import LABEL
from buildr_podman.processes import own_process_running

if TYPE_CHECKING:
    from buildr_podman.podman.connection import PodmanApi

__all__ = ["EMPTY_DIR_PREFIX", "clean", "empty_directory", "kill_own_containers",
           "sweep_dead_runs"]

API_DIR_PREFIX = "buildr-podman-api-"
# PodmanSession.empty, under the temporary directory: the pid in its name, as for API_DIR_PREFIX.
EMPTY_DIR_PREFIX = "buildr-podman-empty-"
SOCKET_DIR_PREFIX = "buildr-agent-"
# A directory this young may belong to a run that has not mounted it yet.
GRACE_SECONDS = 60.0
# ensure_agent touches a bundle on every use; one used this recently may be about to be
# mounted by a run of another checkout (another agent version).
BUNDLE_GRACE_SECONDS = 600.0


def kill_own_containers(pid: int | None = None, task: str | None = None) -> list[str]:
    """SIGKILLs the running containers of process `pid` (default: this one), only those of
    `task` if it is given; returns their ids.

    The agent is PID 1 of its container, so the task dies with it; the run's own clean-up then
    removes each pod as usual.
    """
    owner = os.getpid() if pid is None else pid
    filters = ["--filter", f"label={LABEL}={owner}"]
    if task is not None:
        filters += ["--filter", f"label={LABEL}.task={task}"]  # label filters must all hold
    try:
        # -a: a container whose pod is being removed is "Stopping", which plain ps omits; its
        # agent may not handle SIGTERM yet, and the removal would wait 10 s for it.
        ids = podman("ps", "-a", "-q", *filters, timeout=20).split()
    except PodmanCliError:
        return []  # Podman is broken: the workers' own clean-up still runs
    if ids:
        try:
            podman("kill", "--signal", "KILL", *ids, timeout=20)
        except PodmanCliError:
            pass  # some were not running (created, or exited already): the rest got it
    return ids


def clean(everything: bool = False) -> Iterator[str]:
    """Removes leftovers, yielding one line per thing removed or kept."""
    kept_mounts: set[str] = set()
    yield from _clean_pods(everything, kept_mounts)
    yield from _clean_volumes(everything)
    runtime = _runtime_dir()
    if runtime is not None:
        yield from _clean_api_services(runtime, everything)
        yield from _clean_socket_dirs(runtime, everything, kept_mounts)
    yield from _clean_empty_dirs(everything)
    yield from _clean_agent_builds(everything, kept_mounts)


def sweep_dead_runs(api: PodmanApi) -> threading.Thread:
    """Removes, in a background thread, the pods and workspace volumes of runs that are gone
    (a host killed with SIGKILL cannot remove its own): the next run tidies up after it, with
    no `clean` needed. Through the run's API connection, not the CLI: a listing costs
    milliseconds there. Best effort: `clean` is the thorough tool, and reports."""
    thread = threading.Thread(target=_sweep, args=(api,), name="sweep-dead-runs",
                              daemon=True)
    thread.start()
    return thread


def _sweep(api: PodmanApi) -> None:
    libpod = api.libpod
    # Pods first: they hold the volumes.
    for kind, remove in (("pods", libpod.remove_pod), ("volumes", libpod.remove_volume)):
        try:
            found = libpod.labelled(kind, LABEL)
        except Exception:  # noqa: BLE001 - best effort, off the run's path; clean reports
            continue
        for item in found:
            if not _run_going(_owner(item.get("Labels") or {})):
                try:
                    remove(item["Name"], force=True)
                except Exception:  # noqa: BLE001, S112 - the next one may still go
                    continue
    runtime = _runtime_dir()
    if runtime is not None:
        for directory in runtime.glob(API_DIR_PREFIX + "*"):
            if _of_dead_run(directory, API_DIR_PREFIX):
                remove_tree(directory)
    for directory in _empty_directories():  # after the pods that mounted them
        if _of_dead_run(directory, EMPTY_DIR_PREFIX):
            remove_tree(directory)


def empty_directory() -> Path:
    """A new empty directory for a session (PodmanSession.empty), named so that the next run
    removes it if this one is killed before it can."""
    return Path(tempfile.mkdtemp(prefix=f"{EMPTY_DIR_PREFIX}{os.getpid()}-"))


def _empty_directories() -> Iterator[Path]:
    """This user's session directories in the (shared) temporary directory."""
    uid = os.getuid()
    for directory in Path(tempfile.gettempdir()).glob(EMPTY_DIR_PREFIX + "*"):
        try:
            if directory.lstat().st_uid == uid and directory.is_dir():
                yield directory
        except OSError:
            continue


def _of_dead_run(directory: Path, prefix: str) -> bool:
    """Whether the directory's name holds the pid of its run (PREFIX-PID-...), one gone."""
    owner = directory.name[len(prefix):].split("-", 1)[0]
    return owner.isdigit() and not _run_going(int(owner))


# -- pods and containers ---------------------------------------------------------------------

def _clean_pods(everything: bool, kept_mounts: set[str]) -> Iterator[str]:
    try:
        pods = podman_json("pod", "ps", "--filter", f"label={LABEL}") or []
        containers = podman_json("ps", "-a", "--filter", f"label={LABEL}") or []
    except PodmanCliError as exc:
        yield f"could not list pods and containers ({exc}): run buildr-podman doctor"
        return
    kept_pods = set()
    for pod in pods:
        owner = _owner(pod.get("Labels") or {})
        name = pod.get("Name") or pod.get("Id", "?")[:12]
        if _run_going(owner) and not everything:
            kept_pods.add(pod.get("Id"))
            yield (f"kept pod {name}: its run (pid {owner}) is still going "
                   "(clean --all removes it anyway)")
            continue
        yield _remove_pod(pod, name, owner, everything)
    for container in containers:
        if container.get("Pod") in kept_pods:
            kept_mounts.update(_mount_sources(container.get("Id", "")))
            continue
        if container.get("Pod"):
            continue  # removed with its pod
        yield _remove_container(container)


def _remove_pod(pod: dict[str, Any], name: str, owner: int | None, everything: bool) -> str:
    why = (f"its run, pid {owner}, is gone" if owner is not None and not _run_going(owner)
           else "--all" if everything else "it has no owner")
    try:
        podman("pod", "rm", "-f", "-t", "0", str(pod.get("Id") or name))
    except PodmanCliError as exc:
        return f"could not remove pod {name}: {exc}"
    return f"removed pod {name} ({why})"


def _remove_container(container: dict[str, Any]) -> str:
    names = container.get("Names") or [container.get("Id", "?")[:12]]
    name = names[0] if isinstance(names, list) else str(names)
    try:
        podman("rm", "-f", "-t", "0", str(container.get("Id") or name))
    except PodmanCliError as exc:
        return f"could not remove container {name}: {exc}"
    return f"removed container {name} (outside any pod)"


def _clean_volumes(everything: bool) -> Iterator[str]:
    """Workspace volumes (inputs = "copy") whose run is gone. After the pods: a volume is
    removed without force, so one that a kept container still uses stays."""
    try:
        volumes = podman_json("volume", "ls", "--filter", f"label={LABEL}") or []
    except PodmanCliError as exc:
        yield f"could not list volumes ({exc}): run buildr-podman doctor"
        return
    for volume in volumes:
        name = volume.get("Name", "?")
        owner = _owner(volume.get("Labels") or {})
        if _run_going(owner) and not everything:
            continue  # its run's own clean-up removes it with its pod
        try:
            podman("volume", "rm", name)
        except PodmanCliError as exc:
            yield f"could not remove volume {name}: {exc}"
            continue
        yield f"removed volume {name}"


def _mount_sources(container_id: str) -> set[str]:
    try:
        inspected = podman_json("container", "inspect", container_id) or []
    except PodmanCliError:
        return set()
    return {mount.get("Source", "") for item in inspected for mount in item.get("Mounts", [])}


def _run_going(owner: int | None) -> bool:
    """Whether the run that labelled something with its pid still goes."""
    return owner is not None and own_process_running(owner)


def _owner(labels: dict[str, Any]) -> int | None:
    try:
        return int(labels.get(LABEL, ""))
    except ValueError:
        return None


# -- API services and socket directories ------------------------------------------------------

def _runtime_dir() -> Path | None:
    value = os.environ.get("XDG_RUNTIME_DIR")
    return Path(value) if value and os.path.isdir(value) else None


def _clean_api_services(runtime: Path, everything: bool) -> Iterator[str]:
    served: set[Path] = set()
    for pid, directory in _api_services(runtime):
        if _owner_alive(pid) and not everything:
            served.add(directory)
            continue
        _stop_process(pid)
        shutil.rmtree(directory, ignore_errors=True)
        served.discard(directory)
        yield f"stopped podman API service pid {pid} (its run is gone) and removed {directory}"
    for directory in sorted(runtime.glob(API_DIR_PREFIX + "*")):
        sock = directory / "podman.sock"
        if directory in served or (not everything and (socket_accepts(sock) or (
                _young(directory) and not sock.exists()
                and not _of_dead_run(directory, API_DIR_PREFIX)))):
            continue
        shutil.rmtree(directory, ignore_errors=True)
        yield f"removed API socket directory {directory} (no service behind it)"


def _api_services(runtime: Path) -> Iterator[tuple[int, Path]]:
    """(pid, socket directory) of every `podman system service` of ours on such a directory."""
    uid = os.getuid()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if proc.stat().st_uid != uid:
                continue
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"system" not in argv or b"service" not in argv:
            continue
        for arg in argv:
            text = arg.decode(errors="replace").removeprefix("unix://")
            path = Path(text)
            if path.name == "podman.sock" and path.parent.name.startswith(API_DIR_PREFIX) \
                    and path.parent.parent == runtime:
                yield int(proc.name), path.parent


def _owner_alive(pid: int) -> bool:
    """Whether the process that started service `pid` still runs: an orphan is reparented to
    init or a subreaper, which is not a Python process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        parent_argv = Path(f"/proc/{parent}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return False
    return parent > 1 and (b"python" in parent_argv or b"buildr" in parent_argv)


def _stop_process(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            time.sleep(0.1)
            os.kill(pid, 0)
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _clean_empty_dirs(everything: bool) -> Iterator[str]:
    for directory in _empty_directories():
        # Before the pid was in their names (0.x runs killed with SIGKILL): by their age.
        unowned = not directory.name[len(EMPTY_DIR_PREFIX):].split("-", 1)[0].isdigit()
        if everything or _of_dead_run(directory, EMPTY_DIR_PREFIX) \
                or (unowned and not _young(directory)):
            remove_tree(directory)
            yield f"removed {directory} (an empty directory of a run that is gone)"


def _clean_socket_dirs(runtime: Path, everything: bool, kept_mounts: set[str]) -> Iterator[str]:
    for directory in sorted(runtime.glob(SOCKET_DIR_PREFIX + "*")):
        if not everything and _socket_dir_in_use(directory, kept_mounts):
            continue
        yield _remove_socket_dir(directory)


def _remove_socket_dir(directory: Path) -> str:
    """Removes a socket directory of an older version, which mounted it into the container:
    a task could leave files there owned by a subordinate uid, which only `podman unshare`
    (root of the user's namespace) can delete."""
    shutil.rmtree(directory, ignore_errors=True)
    if directory.exists():
        try:
            podman("unshare", "rm", "-rf", "--", str(directory), timeout=60)
        except PodmanCliError as exc:
            return f"could not remove agent socket directory {directory} ({exc})"
    return f"removed agent socket directory {directory}"


def _socket_dir_in_use(directory: Path, kept_mounts: set[str]) -> bool:
    """Mounted by a live run's container, its agent answers, or so new that its run has not
    started the agent yet."""
    sock = directory / SOCKET_NAME
    if str(directory) in kept_mounts or socket_accepts(sock):
        return True
    return _young(directory) and not sock.exists()


def _young(path: Path) -> bool:
    return _age(path) < GRACE_SECONDS


def _age(path: Path) -> float:
    """Seconds since the last change; a vanished path counts as old."""
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return float("inf")


# -- agent builds ------------------------------------------------------------------------------

def _clean_agent_builds(everything: bool, kept_mounts: set[str]) -> Iterator[str]:
    import fcntl

    from buildr_podman.cache_root import cache_root
    from buildr_podman.podman.agent_build import bundle_key

    agent_dir = cache_root() / "agent"
    if not agent_dir.is_dir():
        return
    current = bundle_key()
    try:
        lock = open(agent_dir / ".lock", "a")  # noqa: SIM115 - closed below
    except OSError as exc:
        yield f"could not open {agent_dir / '.lock'}: {exc.strerror}"
        return
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield f"left the agent builds in {agent_dir} alone: an agent is being built now"
            return
        for path in sorted(agent_dir.iterdir()):
            line = _remove_build(path, current, everything, kept_mounts)
            if line:
                yield line


def _remove_build(path: Path, current: str, everything: bool,
                  kept_mounts: set[str]) -> str | None:
    if not path.is_dir() or path.name == ".lock" or str(path) in kept_mounts:
        return None
    if path.name.startswith(".build-"):
        reason = "an unfinished build"
    elif path.name != current:
        if _age(path) < BUNDLE_GRACE_SECONDS and not everything:
            return None
        reason = "another agent version, unused for a while"
    elif everything:
        reason = "--all; it is rebuilt on the next run"
    else:
        return None
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    shutil.rmtree(path, ignore_errors=True)
    for suffix in (DIGEST_SUFFIX, CHECKED_SUFFIX):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    return f"removed agent build {path} ({reason}, {size / 1e6:.0f} MB)"
