"""`buildr-podman run NAME...`: the named modules and their dependencies, in parallel up to -j."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from buildr_podman.commands.common import load
from buildr_podman.errors import UsageError
from buildr_podman.model import Project
from buildr_podman.output import make_reporter
from buildr_podman.runner import run_tasks, select_tasks


def run(args: argparse.Namespace) -> int:
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
