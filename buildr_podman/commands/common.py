"""What several commands share: the plugin manager and the project, read with its plugins' types."""

from __future__ import annotations

import argparse

import pluggy

from buildr_podman.config import find_root, load_project
from buildr_podman.model import Project
from buildr_podman.plugins import make_plugin_manager, module_types

__all__ = ["load"]


def load(args: argparse.Namespace) -> tuple[pluggy.PluginManager, Project]:
    """Plugins first (they define the module types), then the repository's configuration."""
    pm = make_plugin_manager(tuple(args.plugins))
    project = load_project(find_root(args.directory), module_types(pm))
    return pm, project
