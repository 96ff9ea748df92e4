"""`buildr-podman doctor`: every check the plugins offer, printed as it completes, with fixes.

Exit code 0 only when no check failed (warnings are fine: things work, if slowly); a failed
check is an environment problem, exit code 3.
"""

from __future__ import annotations

import argparse
import sys

from buildr_podman.config import find_root, load_project
from buildr_podman.doctor import Finding
from buildr_podman.errors import ConfigError, EnvironmentProblem
from buildr_podman.model import Project
from buildr_podman.plugins import make_plugin_manager, module_types

MARKS = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


def run(args: argparse.Namespace) -> int:
    pm = make_plugin_manager(tuple(args.plugins))
    project, config_finding = _project(args, pm)
    findings = [config_finding] if config_finding else []
    if config_finding:
        _print(config_finding)
    for provided in pm.hook.buildr_doctor(project=project, image=args.image):
        for finding in provided or ():
            _print(finding)
            findings.append(finding)
    failed = [f for f in findings if f.status == "fail"]
    warned = [f for f in findings if f.status == "warn"]
    if failed:
        print(f"{len(failed)} problem(s) to fix: {', '.join(f.check for f in failed)}")
        return EnvironmentProblem.exit_code
    print("everything buildr-podman needs works" + (f" ({len(warned)} warning(s))"
                                                    if warned else ""))
    return 0


def _project(args: argparse.Namespace, pm: object) -> tuple[Project | None, Finding | None]:
    try:
        root = find_root(args.directory)
    except ConfigError:
        return None, None  # not in a repository: the machine can still be checked
    try:
        return load_project(root, module_types(pm)), None  # type: ignore[arg-type]
    except ConfigError as exc:
        return None, Finding("configuration", "fail", str(exc), "fix the file named above")


def _print(finding: Finding) -> None:
    print(f"{MARKS.get(finding.status, finding.status)}  {finding.check}: {finding.detail}")
    if finding.fix and finding.status in ("warn", "fail"):
        print(f"      fix: {finding.fix}")
    sys.stdout.flush()
