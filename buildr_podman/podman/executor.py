"""The Podman executor: runs tasks in rootless pods, kept warm across a run, through the agent."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from buildr_podman.errors import AgentError
from buildr_podman.executor import RunObserver
from buildr_podman.landing import OutputLanding
from buildr_podman.model import WORKSPACE, Project, Task, TaskResult
from buildr_podman.phases import Phases
from buildr_podman.podman.deadline import AgentTimeout
from buildr_podman.podman.warm_pods import reusable

if TYPE_CHECKING:
    from buildr_podman.podman.agent_build import AgentBundle
    from buildr_podman.podman.agent_client import AgentClient, RunSpec
    from buildr_podman.podman.connection import PodmanApi
    from buildr_podman.podman.pods import TaskPod
    from buildr_podman.podman.warm_pods import DependencyOutputs, WarmPod

__all__ = ["PodmanExecutor", "PodmanSession"]

AGENT_START_TIMEOUT = 60.0


class PodmanExecutor:
    """Registered by the `podman` entry point of group `buildr`."""

    name = "podman"

    @contextmanager
    def open_session(self, project: Project) -> Iterator[PodmanSession]:
        from buildr_podman.podman.agent_build import StderrProgress, ensure_agent
        from buildr_podman.podman.connection import podman_api
        from buildr_podman.podman.leftovers import sweep_dead_runs

        # The API service first: it starts (~25 ms) while the agent bundle is checked.
        with podman_api() as api:
            progress = StderrProgress()  # says something only if the agent must be built first
            agent = ensure_agent(log=progress.log, tick=progress.tick)
            sweeping = sweep_dead_runs(api)  # pods of runs killed with SIGKILL, meanwhile
            session = PodmanSession(api, project, agent)
            try:
                yield session
            finally:
                session.close()
                sweeping.join()  # before the connection goes: a removal half-sent is lost


class PodmanSession:
    """Runs tasks of one project with one API connection, one agent build and warm pods."""

    def __init__(self, api: PodmanApi, project: Project, agent: AgentBundle) -> None:
        from buildr_podman.podman.leftovers import empty_directory
        from buildr_podman.podman.warm_pods import PodPool

        self.api = api
        self.project = project
        self.agent = agent
        self.pool = PodPool(self._start_pod)
        self.landing = OutputLanding(project)
        #: where each module's outputs of this run are (a module runs once a run)
        self._landed: dict[str, Path] = {}
        self._unmapped: str | None = None  # files no task can write, once looked for
        #: an empty directory, mounted read-only over the out dir where the inputs hold it,
        #: and shown for a dependency that brought back no archive
        self.empty = empty_directory()

    def run_task(self, task: Task, observer: RunObserver) -> TaskResult:
        warm = self.pool.take(task, self._dependency_outputs(task), Phases(observer, task))
        from buildr_podman.podman.task_stream import receive_events  # loaded by _start_pod

        observer.log(task, f"pod {warm.pod.name} " +
                     (f"reused after {warm.tasks_run} tasks" if warm.tasks_run else "started"))
        try:
            events = warm.client.run(_run_spec(task, warm.pod.workspace_inode))
            result = receive_events(task, events, self.landing, observer)
        except AgentTimeout:
            warm.remove()  # the agent is frozen or taken over: asking it to exit only waits
            raise
        except BaseException:
            warm.close()  # its state is unknown: never reuse it
            raise
        if result.error or not reusable(task):
            warm.close()
        else:
            self.pool.give_back(warm)
        if result.exit_code and not result.error and task.container.inputs == "mount":
            unmapped = self._unmapped_inputs()
            if unmapped:
                result = replace(result, error=f"exit {result.exit_code}; perhaps because "
                                 f"{unmapped}")
        if result.output_dir is not None:
            self._landed[task.name] = result.output_dir
        return result

    def prestart(self, task: Task) -> Callable[[], None] | None:
        """Reserves the pod of a task that will run, and returns what starts it ahead of the
        task (see PodPool.prestart). Not for copied-in inputs: their copy reports its progress
        to the task, which is not yet running."""
        if task.container.inputs != "mount":
            return None
        return self.pool.prestart(task, self._dependency_outputs(task))

    def outputs_landed(self, task: Task, output_dir: Path) -> None:
        """Where a task's outputs of this run landed without this session (a task cache hit):
        what the tasks that use them are shown."""
        self._landed[task.name] = output_dir

    def _unmapped_inputs(self) -> str:
        """Why a task with mounted inputs may have failed: files it could not write (only
        looked for once a task failed, and once a run: a walk of the repository costs too much
        to make on every run)."""
        from buildr_podman.podman.id_mapping import explain_unmapped, unmapped_files

        if self._unmapped is None:
            found, total = unmapped_files(self.project.root)
            self._unmapped = explain_unmapped(found, total) if total else ""
        return self._unmapped

    def close(self) -> None:
        try:
            self.pool.close()
        finally:
            shutil.rmtree(self.empty, ignore_errors=True)

    def _dependency_outputs(self, task: Task) -> DependencyOutputs:
        """The outputs of this run of every module the task uses: its dependencies, so they
        have run. One that brought back no archive (its agent failed) shows as empty, never
        as what an earlier run left in the out dir."""
        return tuple((name, self._landed.get(name, self.empty)) for name in task.outputs_used)

    def _start_pod(self, task: Task, outputs: DependencyOutputs,
                   phases: Phases | None = None) -> WarmPod:
        """Creates and starts a pod for the task's settings and waits for its agent (and for
        its inputs, when they are copied in: a long copy is reported to `phases`)."""
        from buildr_podman.podman.pods import task_pod
        from buildr_podman.podman.warm_pods import WarmPod, pool_key

        with ExitStack() as stack:
            pod = stack.enter_context(task_pod(self.api, self.project, task, self.agent,
                                               outputs, self.empty, phases))
            # Imported only now: loading grpc (~0.1 s) overlaps the agent's own start-up, and
            # so does what the first task's result needs (~5 ms), which run_task then finds.
            from buildr_podman.agent.malloc_tuning import keep_freed_memory
            from buildr_podman.podman import task_stream  # noqa: F401
            from buildr_podman.podman.agent_client import AgentClient

            keep_freed_memory()  # before the first archive arrives: see malloc_tuning.py

            client = AgentClient(str(pod.socket_path))
            stack.callback(client.close)
            _wait_for_agent(task, pod, client)
            client.hello()
            pod.wait_for_inputs()
            return WarmPod(pool_key(task, outputs), pod, client, stack.pop_all())



def _wait_for_agent(task: Task, pod: TaskPod, client: AgentClient) -> None:
    try:
        client.wait_ready(AGENT_START_TIMEOUT, pod.still_running)
    except AgentError as exc:
        logs = pod.logs()
        raise AgentError(f"task {task.name!r} in image {task.container.image!r}: {exc}"
                         f"{': ' + logs if logs else ''}") from exc


def _run_spec(task: Task, workspace_inode: int = 0) -> RunSpec:
    from buildr_podman.podman.agent_client import RunSpec
    from buildr_podman.podman.container_spec import BASELINE_MOUNT

    # The agent gives the task only the request's environment: the container's first, the
    # task's own on top.
    # Secrets last, and only here: never in the container's own environment (podman inspect).
    environment = {**dict(task.container.environment), **dict(task.environment),
                   **dict(task.secret_environment)}
    return RunSpec(task_name=task.name, argv=task.argv(), environment=environment,
                   working_dir=task.container_working_dir(), workspace=WORKSPACE,
                   baseline=BASELINE_MOUNT, user=task.container.user or "",
                   timeout_seconds=task.timeout_seconds or 0.0,
                   layers=[task.output_mount(name) for name in task.inputs_from],
                   workspace_inode=workspace_inode)
