"""`buildr-podman list`: the modules, one per line: name, type, image, category, dependencies."""

from __future__ import annotations

import argparse

from buildr_podman.commands.common import load


def run(args: argparse.Namespace) -> int:
    _, project = load(args)
    for name, task in sorted(project.tasks.items()):
        depends = ", ".join(task.depends_on) or "-"
        print(f"{name}\t{task.module_type}\t{task.container.image}\t{task.category}\t{depends}")
    return 0
