"""The plugin manager: hook specs, built-in plugins, and plugins from entry points."""

from __future__ import annotations

import importlib

import pluggy

from buildr_podman import hookspecs
from buildr_podman.errors import PluginError
from buildr_podman.executor import Executor

__all__ = ["ENTRY_POINT_GROUP", "executors", "make_plugin_manager"]

ENTRY_POINT_GROUP = "buildr"


def make_plugin_manager(extra_modules: tuple[str, ...] = ()) -> pluggy.PluginManager:
    """Specs first, then installed plugins (entry points), then `-p` modules."""
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    try:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    except Exception as exc:  # a broken third-party plugin must not look like our crash
        raise PluginError(f"a plugin of entry-point group {ENTRY_POINT_GROUP!r} failed to load: "
                          f"{exc}; uninstall or fix it") from exc
    for name in extra_modules:
        _register_module(pm, name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {exc.plugin!r} implements an unknown hook: {exc}") from exc
    return pm


def _register_module(pm: pluggy.PluginManager, name: str) -> None:
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        raise PluginError(f"cannot import plugin module {name!r} given with -p: {exc}") from exc
    if pm.is_registered(module):
        return
    pm.register(module, name=name)


def executors(pm: pluggy.PluginManager) -> dict[str, Executor]:
    """Every executor the loaded plugins provide, by name."""
    found: dict[str, Executor] = {}
    for provided in pm.hook.buildr_executors():
        for executor in provided or ():
            if executor.name in found:
                raise PluginError(f"two plugins provide an executor named {executor.name!r}")
            found[executor.name] = executor
    return found
