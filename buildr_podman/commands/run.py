"""`buildr-podman run NAME...`: the named modules and their dependencies, in parallel up to -j."""

from __future__ import annotations

import argparse
import dataclasses
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from buildr_podman.commands.common import load
from buildr_podman.errors import UsageError
from buildr_podman.model import Project
from buildr_podman.output import make_reporter
from buildr_podman.runner import cache_on, run_tasks, select_tasks


def run(args: argparse.Namespace) -> int:
    with _api_service(_starts_pods_at_once(args)):
        return _run(args)


def _starts_pods_at_once(args: argparse.Namespace) -> bool:
    """Whether this run will start pods before anything else it does: every task runs here
    (--no-cache, or BUILDR_CACHE=off) on the Podman executor. A remote execution server in
    the configuration is not known yet: such a run stops the service it did not need."""
    every_task_runs = not args.cache or not cache_on()
    return args.executor == "podman" and every_task_runs and args.remote is None


def _api_service(wanted: bool) -> AbstractContextManager[object]:
    """The Podman API service, started before the configuration is read (~60 ms) when the
    run will want it at once: connection.api_service_started_early."""
    if not wanted:
        return nullcontext()
    from buildr_podman.podman.connection import api_service_started_early

    return api_service_started_early()


def _run(args: argparse.Namespace) -> int:
    pm, project = load(args)
    if args.remote is not None:
        project = _remote_from_command_line(project, args.remote)
    tasks = select_tasks(project, args.names)
    reporter = make_reporter(args.output, verbose=args.verbose)
    pm.register(reporter, name="reporter")
    try:
        report = run_tasks(pm, project, tasks, args.executor, jobs=args.jobs,
                           keep_going=args.keep_going, use_cache=args.cache)
    finally:
        close = getattr(reporter, "close", None)
        if close is not None:
            close()  # a live display must give the terminal back, whatever happened
    return report.exit_code


def _remote_from_command_line(project: Project, url: str) -> Project:
    """`--remote URL` in place of the configured server (a relative unix PATH is from the
    current directory, as on any command line)."""
    from buildr_podman.remote_execution.settings import execution_settings

    configured = project.remote_execution
    try:
        settings = execution_settings(url, Path.cwd(),
                                      configured.instance_name if configured else "")
    except ValueError as exc:
        raise UsageError(f"--remote {url}: {exc}") from exc
    return dataclasses.replace(project, remote_execution=settings)
