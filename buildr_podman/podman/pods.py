"""The lifecycle of one task's rootless pod: create with the agent mounted, start, remove.

Every pod and container carries LABEL, so that `buildr-podman clean` and later runs can find
what a crashed run left behind. Podman is asked through libpod.py (it says why not podman-py);
what the container is made of is container_spec.py.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from buildr_podman.errors import BackendError
from buildr_podman.model import WORKSPACE, Project, Task
from buildr_podman.podman.agent_build import AgentBundle
from buildr_podman.podman.cache_volumes import cache_volume_mounts
from buildr_podman.podman.container_spec import (
    BASELINE_MOUNT,
    SOCKET_MOUNT,
    SOCKET_NAME,
    ContainerPlace,
    bind,
    container_spec,
    under,
)
from buildr_podman.podman.input_copy import InputCopy
from buildr_podman.podman.input_mapping import MappedDirectories, mapped_directories
from buildr_podman.podman.libpod import Libpod, LibpodError, NotFound

if TYPE_CHECKING:
    from buildr_podman.phases import Phases
    from buildr_podman.podman.connection import PodmanApi
    from buildr_podman.podman.warm_pods import DependencyOutputs

__all__ = ["LABEL", "TaskPod", "hidden_out_dir", "task_pod"]

LABEL = "io.buildr-podman"  # value: the pid of the host process that made it
REMOVE_ATTEMPTS = 25
REMOVE_RETRY_SECONDS = 0.2
EXIT_POLL_SECONDS = 0.005
CONTAINER_CHECK_SECONDS = 0.25  # between asking Podman whether a starting container still runs
RUNNING = ("created", "configured", "running")


@dataclass
class TaskPod:
    """A started pod whose agent will listen on `socket_path` (a host path)."""

    name: str
    container: str  #: its id
    socket_path: Path
    libpod: Libpod
    input_copy: InputCopy | None = None  # inputs = "copy": under way while the agent starts
    _next_check: float = field(init=False, repr=False,
                               default_factory=lambda: time.monotonic() + CONTAINER_CHECK_SECONDS)

    def wait_for_inputs(self) -> None:
        """Returns once the inputs are in the workspace (at once when they are mounted). A
        container that stops meanwhile (a cancelled run kills its containers) stops the copy:
        a big repository must not hold up Ctrl-C."""
        if self.input_copy is None:
            return
        while not self.input_copy.wait(CONTAINER_CHECK_SECONDS):
            self.input_copy.poll()
            if not self.is_running():
                self.input_copy.stop()
                raise BackendError("the container stopped while its inputs were being "
                                   "copied in (the run was cancelled, or it was killed)",
                                   self.name)
        self.input_copy.finish()

    @property
    def workspace_inode(self) -> int:
        """The copied-in workspace's inode, 0 when the inputs are mounted."""
        return self.input_copy.workspace_inode if self.input_copy is not None else 0

    def still_running(self) -> bool:
        """is_running, asked of Podman at most every CONTAINER_CHECK_SECONDS and assumed in
        between: cheap enough for a wait that polls every few milliseconds."""
        now = time.monotonic()
        if now < self._next_check:
            return True
        self._next_check = now + CONTAINER_CHECK_SECONDS
        return self.is_running()

    def is_running(self) -> bool:
        try:
            return self._status() in RUNNING
        except NotFound:
            return False  # removed from outside: a cancelled run's clean-up, or the user

    def _status(self) -> str:
        state = self.libpod.inspect_container(self.container).get("State") or {}
        return str(state.get("Status", ""))

    def wait_exited(self, timeout: float) -> None:
        """Waits until the container's process has ended, up to `timeout`.

        A removal of a running container waits for it in Podman, which looks about every
        100 ms: 120 ms for our no-op pod, a fifth of a cold run. Asking here every 5 ms (each
        inspect also makes Podman read conmon's exit file) and removing an exited container
        takes half that. A container that is gone or cannot be asked about counts as ended:
        the removal that follows reports what is really wrong.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                status = self._status()
            except Exception:  # noqa: BLE001 - removed from outside, or the API is gone
                return
            if status not in ("running", "stopping"):
                return
            time.sleep(EXIT_POLL_SECONDS)

    def logs(self) -> str:
        """The container's own output (the agent's start-up errors), last lines only."""
        try:
            text = self.libpod.container_logs(self.container)
        except Exception:  # noqa: BLE001 - diagnostics only; the caller reports the real error
            return ""
        return " | ".join(text.strip().splitlines()[-3:])


@contextmanager
def task_pod(api: PodmanApi, project: Project, task: Task, agent: AgentBundle,
             outputs: DependencyOutputs = (), empty: Path | None = None,
             phases: Phases | None = None) -> Iterator[TaskPod]:
    """Creates and starts the pod; removes it on exit whatever happened. Copied-in inputs
    (inputs = "copy") go into a volume of the pod's own, from a thread that starts before the
    container does (wait_for_inputs). The dependencies' `outputs` are mounted read-only; the
    out dir, where the inputs hold it, is hidden under the `empty` directory."""
    libpod = api.libpod
    name = f"buildr-{task.name}-{secrets.token_hex(4)}"
    labels = {LABEL: str(os.getpid()), f"{LABEL}.task": task.name}
    directories = mapped_directories(project, task)  # checked first: then nothing to remove
    hidden = hidden_out_dir(project, directories) if empty is not None else []
    try:
        libpod.create_pod(name, labels)
    except LibpodError as exc:
        raise BackendError(f"cannot create the pod: {exc.message}", name) from exc
    volume: str | None = None  # the workspace volume of copied-in inputs
    copy = None
    try:
        if task.container.inputs == "copy":
            volume, volume_path = _workspace_volume(libpod, name, labels)
            copy = InputCopy(task, directories, volume_path, project.root, skip=project.out_dir,
                             phases=phases)
        mounts = (*(bind(path, task.output_mount(module), read_only=True)
                    for module, path in outputs),
                  *(bind(empty, under(root, rel), read_only=True)
                    for rel in hidden for root in (WORKSPACE, BASELINE_MOUNT) if empty))
        place = ContainerPlace(name, labels, directories, volume, mounts,
                               cache_volume_mounts(libpod, project, task))
        container = _create_container(api, task, agent, place)
        libpod.start_container(container)
        yield TaskPod(name, container, _socket_path(libpod, container), libpod, copy)
    except LibpodError as exc:
        raise BackendError(f"cannot start the container: {exc.message}", name) from exc
    finally:
        if copy is not None:
            copy.stop()  # before its volume goes
        _remove(libpod, name)
        if volume is not None:
            _remove_volume(libpod, volume, name)


def _socket_path(libpod: Libpod, container: str) -> Path:
    """The agent's socket as the host reaches it: through the container's init process. A
    container that has exited already has no pid (0): that path never appears, and waiting
    for the agent reports the container's own last words."""
    pid = (libpod.inspect_container(container).get("State") or {}).get("Pid") or 0
    return Path(f"/proc/{pid}/root{SOCKET_MOUNT}/{SOCKET_NAME}")


def _workspace_volume(libpod: Libpod, name: str, labels: dict[str, str]) -> tuple[str, Path]:
    """The volume that holds a copied-in workspace (inputs = "copy"): its name and where it is.
    Not the container's own layer: that is an overlay, where creating a file costs half as
    much again (20,000 small files: GNU tar 0.65 s into the layer, 0.41 s into a volume,
    here), and only a volume is a directory this process can fill before the container starts
    (rootless: the user's own). Labelled like the pod, so that `clean` finds it if a run dies
    before removing it."""
    volume = libpod.create_volume(f"{name}-workspace", labels)
    return str(volume["Name"]), Path(volume["Mountpoint"])


def _create_container(api: PodmanApi, task: Task, agent: AgentBundle,
                      place: ContainerPlace) -> str:
    try:
        return api.libpod.create_container(container_spec(task, agent, place))
    except LibpodError as exc:
        missing = (isinstance(exc, NotFound) or "image not known" in exc.message
                   or "no such image" in exc.message.lower())
        if missing:
            raise BackendError(_missing_image(task, api), place.name) from exc
        raise


def _missing_image(task: Task, api: PodmanApi) -> str:
    where = f" ({task.container.image_source})" if task.container.image_source else ""
    return (f"image {task.container.image!r} of task {task.name!r}{where} is not here"
            f"{_nearest_image(api, task.container.image)}: build or pull it (podman images "
            "lists what is)")


def _nearest_image(api: PodmanApi, image: str) -> str:
    """' (did you mean 'NAME'?)' for the closest name of an image this user has, or nothing."""
    import difflib

    try:
        names = [tag for found in api.client.images.list() for tag in found.tags]
    except Exception:  # noqa: BLE001 - only a hint: the error it adds to stands without it
        return ""
    # Each name also as written without its registry and without ":latest" ("buildr-busybox"
    # for localhost/buildr-busybox:latest); a high cutoff, as names share "localhost/".
    spellings: dict[str, str] = {}
    for name in names:
        short = name.split("/", 1)[1] if "/" in name else name
        for spelling in (name, short, short.removesuffix(":latest")):
            spellings.setdefault(spelling, name)
    close = difflib.get_close_matches(image, list(spellings), n=1, cutoff=0.8)
    return f" (did you mean {spellings[close[0]]!r}?)" if close else ""


def hidden_out_dir(project: Project, directories: MappedDirectories) -> list[str]:
    """Where the inputs hold the out dir (relative to the workspace): there the container shows
    an empty, read-only directory instead, in the workspace and in the baseline alike. Outputs
    are no inputs: a task sees its dependencies' outputs of this run under /.buildr/out, never
    what the out dir holds (earlier runs, other tasks, logs); they are not copied in, and
    nothing there is tracked. The directory is made first: a mount needs its mount point."""
    out_dir = project.out_dir.resolve()
    hidden = []
    for source, target in directories:
        if out_dir.is_relative_to(source):
            rel = out_dir.relative_to(source).as_posix()
            hidden.append(f"{target}/{rel}" if target else rel)
    if hidden:
        out_dir.mkdir(parents=True, exist_ok=True)
    return hidden


def _remove_volume(libpod: Libpod, volume: str, pod_name: str) -> None:
    """Removes the workspace volume once its pod is gone; without force, so that a volume a
    container still uses (the pod's removal failed) stays for `clean` rather than killing it."""
    try:
        libpod.remove_volume(volume)
    except NotFound:
        pass
    except LibpodError as exc:
        raise BackendError(f"cannot remove the workspace volume ({exc.message}): run "
                           "buildr-podman clean", pod_name) from exc


def _remove(libpod: Libpod, name: str) -> None:
    """Removes the pod and its container. Podman 4.3 calls a container whose process has just
    died "stopped" until conmon's clean-up has run, and `pod rm -f` fails on it with
    "container state improper" meanwhile: so try again, briefly."""
    for attempt in range(REMOVE_ATTEMPTS):
        try:
            libpod.remove_pod(name)  # stop timeout 0: SIGKILL at once
            return
        except NotFound:
            return  # already gone: removed from outside, which is what we wanted anyway
        except LibpodError as exc:
            if attempt == REMOVE_ATTEMPTS - 1:
                detail = " ".join(exc.message.split())
                raise BackendError(f"cannot remove the pod ({detail}): run buildr-podman "
                                   "clean", name) from exc
            time.sleep(REMOVE_RETRY_SECONDS)
