"""The lifecycle of one task's rootless pod: create with the agent mounted, start, remove.

Every pod and container carries LABEL, so that `buildr-podman clean` and later runs can find
what a crashed run left behind.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from buildr_podman.errors import BackendError
from buildr_podman.model import WORKSPACE, ContainerSpec, Project, Task
from buildr_podman.podman.agent_build import AGENT_MOUNT, AgentBundle
from buildr_podman.podman.cache_volumes import cache_volume_mounts
from buildr_podman.podman.input_copy import InputCopy
from buildr_podman.podman.input_mapping import MappedDirectories, mapped_directories
from buildr_podman.podman.limits import container_limits

if TYPE_CHECKING:
    import podman

    from buildr_podman.phases import Phases
    from buildr_podman.podman.warm_pods import DependencyOutputs

__all__ = ["BASELINE_MOUNT", "LABEL", "SOCKET_MOUNT", "TaskPod", "may_remount", "task_pod"]

LABEL = "io.buildr-podman"  # value: the pid of the host process that made it
# The agent's socket lives on a small tmpfs of the container's own, and the host reaches it
# through /proc/PID/root: nothing of the host is mounted writable for it, so a task cannot
# leave files on the host (a bind-mounted directory under $XDG_RUNTIME_DIR, a small tmpfs
# on a workstation, took a task's 20 MB, chowned so that the user could not delete them).
# The host may open /proc/PID/root of the agent although the agent is not dumpable
# (agent/hardening.py): the user owns the container's user namespace.
SOCKET_MOUNT = "/.buildr/sock"
SOCKET_TMPFS_SIZE = "1m"
BASELINE_MOUNT = "/.buildr/base"  # the inputs again, read-only: what the workspace started as
SOCKET_NAME = "agent.sock"
REMOVE_ATTEMPTS = 25
REMOVE_RETRY_SECONDS = 0.2
EXIT_POLL_SECONDS = 0.005
CONTAINER_CHECK_SECONDS = 0.25  # between asking Podman whether a starting container still runs


@dataclass
class TaskPod:
    """A started pod whose agent will listen on `socket_path` (a host path)."""

    name: str
    pod: Any
    container: Any
    socket_path: Path
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
        self.container.reload()
        return self.container.status in ("created", "configured", "running")

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
                self.container.reload()
            except Exception:  # noqa: BLE001 - removed from outside, or the API is gone
                return
            if self.container.status not in ("running", "stopping"):
                return
            time.sleep(EXIT_POLL_SECONDS)

    def logs(self) -> str:
        """The container's own output (the agent's start-up errors), last lines only."""
        try:
            raw = self.container.logs(stdout=True, stderr=True)
            text = b"".join(raw if not isinstance(raw, bytes) else [raw]).decode(errors="replace")
        except Exception:  # noqa: BLE001 - diagnostics only; the caller reports the real error
            return ""
        return " | ".join(text.strip().splitlines()[-3:])


@contextmanager
def task_pod(client: podman.PodmanClient, project: Project, task: Task, agent: AgentBundle,
             outputs: DependencyOutputs = (), empty: Path | None = None,
             phases: Phases | None = None) -> Iterator[TaskPod]:
    """Creates and starts the pod; removes it on exit whatever happened. Copied-in inputs
    (inputs = "copy") go into a volume of the pod's own, from a thread that starts before the
    container does (wait_for_inputs). The dependencies' `outputs` are mounted read-only; the
    out dir, where the inputs hold it, is hidden under the `empty` directory."""
    import podman.errors

    name = f"buildr-{task.name}-{secrets.token_hex(4)}"
    labels = {LABEL: str(os.getpid()), f"{LABEL}.task": task.name}
    directories = mapped_directories(project, task)  # checked first: then nothing to remove
    hidden = hidden_out_dir(project, directories) if empty is not None else []
    try:
        pod = client.pods.create(name, labels=labels, no_infra=True)
    except podman.errors.APIError as exc:
        raise BackendError(f"cannot create the pod: {exc.explanation or exc}", name) from exc
    volume = None
    copy = None
    try:
        if task.container.inputs == "copy":
            volume = _workspace_volume(client, name, labels)
            copy = InputCopy(task, directories, Path(volume.attrs["Mountpoint"]), project.root,
                             skip=project.out_dir, phases=phases)
        mounts = [*(_bind(path, task.output_mount(module), read_only=True)
                    for module, path in outputs),
                  *(_bind(empty, _under(root, rel), read_only=True)
                    for rel in hidden for root in (WORKSPACE, BASELINE_MOUNT) if empty)]
        container = _create_container(client, directories, task, agent, name, labels, volume,
                                      mounts,
                                      cache_volume_mounts(client, project, task))
        container.start()
        yield TaskPod(name, pod, container, _socket_path(container), copy)
    except podman.errors.APIError as exc:
        raise BackendError(f"cannot start the container: {exc.explanation or exc}", name) from exc
    finally:
        if copy is not None:
            copy.stop()  # before its volume goes
        _remove(pod)
        if volume is not None:
            _remove_volume(volume, name)


def _socket_path(container: Any) -> Path:
    """The agent's socket as the host reaches it: through the container's init process. A
    container that has exited already has no pid (0): that path never appears, and waiting
    for the agent reports the container's own last words."""
    container.reload()
    pid = (container.attrs.get("State") or {}).get("Pid") or 0
    return Path(f"/proc/{pid}/root{SOCKET_MOUNT}/{SOCKET_NAME}")


def _workspace_volume(client: podman.PodmanClient, name: str, labels: dict[str, str]) -> Any:
    """The volume that holds a copied-in workspace (inputs = "copy"). Not the container's own
    layer: that is an overlay, where creating a file costs half as much again (20,000 small
    files: GNU tar 0.65 s into the layer, 0.41 s into a volume, here), and only a volume is a
    directory this process can fill before the container starts (rootless: the user's own).
    Labelled like the pod, so that `clean` finds it if a run dies before removing it."""
    return client.volumes.create(f"{name}-workspace", labels=labels)


def _create_container(client: podman.PodmanClient, directories: MappedDirectories,
                      task: Task, agent: AgentBundle, name: str, labels: dict[str, str],
                      workspace_volume: Any, extra_mounts: list[dict[str, Any]],
                      cache_volumes: dict[str, dict[str, Any]] | None = None) -> Any:
    import podman.errors

    spec = task.container
    remounts = may_remount(spec)
    limits, limit_variables = container_limits(spec)
    # nocopy: the image's own files at the workspace path (if any) stay out of the volume, as
    # the overlay hides them in the other mode.
    volumes = ({workspace_volume.name: {"bind": WORKSPACE, "extended_mode": ["nocopy"]}}
               if workspace_volume is not None else {})
    volumes.update(cache_volumes or {})  # cache_volume { target }: kept across runs
    try:
        return client.containers.create(
            task.container.image,
            name=f"{name}-task",
            pod=name,
            labels=labels,
            entrypoint=list(agent.command),
            command=["serve", "--socket", f"{SOCKET_MOUNT}/{SOCKET_NAME}"],
            working_dir=WORKSPACE,
            # Nothing in the container needs a graceful stop (the agent keeps no state), and
            # a stop that waits 10 s for an agent not yet handling SIGTERM is a leak in time.
            stop_timeout=0,
            # "private": a network namespace of the container's own, with Podman's rootless
            # user-mode networking (slirp4netns or pasta); "none": loopback only.
            network_mode=task.container.network,
            privileged=spec.privileged,
            no_new_privileges=not spec.privileged,
            cap_add=list(spec.cap_add),
            cap_drop=list(spec.cap_drop),
            environment={**dict(spec.environment), **_agent_knobs(), **limit_variables},
            mounts=[*([] if remounts else [_bind(agent.path, AGENT_MOUNT, read_only=True)]),
                    _tmpfs(SOCKET_MOUNT, SOCKET_TMPFS_SIZE),
                    *([] if remounts else [*_baseline_mounts(directories), *extra_mounts]),
                    *(_bind(m.source, m.target, m.read_only) for m in spec.bind_mounts),
                    *(_tmpfs(m.target, m.size) for m in spec.tmpfs_mounts)],
            overlay_volumes=[*_workspace_volumes(task, directories),
                             *(_overlaid_host_mounts(agent, directories, extra_mounts)
                               if remounts else [])],
            volumes=volumes,
            **limits,
        )
    except podman.errors.ImageNotFound as exc:
        raise BackendError(_missing_image(task, client), name) from exc
    except podman.errors.APIError as exc:
        if "image not known" in str(exc) or "no such image" in str(exc).lower():
            raise BackendError(_missing_image(task, client), name) from exc
        raise


def _agent_knobs() -> dict[str, str]:
    """BUILDR_AGENT_* variables of the host reach the agent: the knobs that let tests and
    benchmarks force the change tracker's safety nets (see agent/watcher.TrackerLimits)."""
    return {key: value for key, value in os.environ.items() if key.startswith("BUILDR_AGENT_")}


def _missing_image(task: Task, client: podman.PodmanClient) -> str:
    where = f" ({task.container.image_source})" if task.container.image_source else ""
    return (f"image {task.container.image!r} of task {task.name!r}{where} is not here"
            f"{_nearest_image(client, task.container.image)}: build or pull it (podman images "
            "lists what is)")


def _nearest_image(client: podman.PodmanClient, image: str) -> str:
    """' (did you mean 'NAME'?)' for the closest name of an image this user has, or nothing."""
    import difflib

    try:
        names = [tag for found in client.images.list() for tag in found.tags]
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


def _tmpfs(target: str, size: str | None) -> dict[str, Any]:
    mount: dict[str, Any] = {"type": "tmpfs", "source": "tmpfs", "target": target}
    if size:
        mount["size"] = size
    return mount


def _bind(source: Path, target: str, read_only: bool) -> dict[str, Any]:
    return {"type": "bind", "source": str(source), "target": target, "read_only": read_only}


def _workspace_volumes(task: Task, directories: MappedDirectories) -> list[dict[str, Any]]:
    """The repository (or each mapped directory) under a copy-on-write overlay: the task sees
    and may change it, but its writes land in the container's layer, never in the repo.
    Empty when the inputs are copied in instead (into the pod's workspace volume)."""
    if task.container.inputs != "mount":
        return []
    return [{"destination": _under(WORKSPACE, target), "source": str(source), "options": []}
            for source, target in directories]


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


def may_remount(spec: ContainerSpec) -> bool:
    """Whether the task may remount its read-only binds read-write (CAP_SYS_ADMIN in the
    container's user namespace: privileged, or asked for)."""
    return spec.privileged or bool({"ALL", "SYS_ADMIN"} & set(spec.cap_add))


def _overlaid_host_mounts(agent: AgentBundle, directories: MappedDirectories,
                          extra_mounts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The agent bundle, the baseline and the other read-only binds (the dependencies'
    outputs) for a task that could remount a read-only bind read-write and write through it
    (into the agent every later run uses, the repository, or another task's outputs): each
    under a copy-on-write overlay instead, whose writes land in the container's own layer.
    Such a pod serves no other task (warm_pods.reusable)."""
    sources = [(agent.path, AGENT_MOUNT),
               *((source, _under(BASELINE_MOUNT, target)) for source, target in directories),
               *((Path(m["source"]), m["target"]) for m in extra_mounts)]
    return [{"destination": target, "source": str(source), "options": []}
            for source, target in sources]


def _baseline_mounts(directories: MappedDirectories) -> list[dict[str, Any]]:
    """Read-only binds of the same inputs at BASELINE_MOUNT, so the agent can compare a
    rewritten file with its original (a bind costs nothing; nothing is copied)."""
    return [_bind(source, _under(BASELINE_MOUNT, target), read_only=True)
            for source, target in directories]


def _under(mount: str, target: str) -> str:
    return f"{mount}/{target}" if target else mount


def _remove_volume(volume: Any, pod_name: str) -> None:
    """Removes the workspace volume once its pod is gone; without force, so that a volume a
    container still uses (the pod's removal failed) stays for `clean` rather than killing it."""
    import podman.errors

    try:
        volume.remove()
    except podman.errors.NotFound:
        pass
    except podman.errors.APIError as exc:
        raise BackendError(f"cannot remove the workspace volume ({exc.explanation or exc}): run "
                           "buildr-podman clean", pod_name) from exc


def _remove(pod: Any) -> None:
    """Removes the pod and its container. Podman 4.3 calls a container whose process has just
    died "stopped" until conmon's clean-up has run, and `pod rm -f` fails on it with
    "container state improper" meanwhile: so try again, briefly."""
    import podman.errors

    for attempt in range(REMOVE_ATTEMPTS):
        try:
            pod.remove(force=True)  # stop timeout 0: SIGKILL at once
            return
        except podman.errors.NotFound:
            return  # already gone: removed from outside, which is what we wanted anyway
        except podman.errors.APIError as exc:
            if attempt == REMOVE_ATTEMPTS - 1:
                detail = " ".join(str(exc.explanation or exc).split())
                raise BackendError(f"cannot remove the pod ({detail}): run buildr-podman "
                                   "clean", pod.name) from exc
            time.sleep(REMOVE_RETRY_SECONDS)
