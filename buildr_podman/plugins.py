"""The plugin manager: hook specs, built-in plugins, and plugins from entry points and `-p`."""

from __future__ import annotations

import importlib

import pluggy

from buildr_podman import hookspecs
from buildr_podman.errors import PluginError
from buildr_podman.executor import Executor
from buildr_podman.moduletype import ModuleType, index_module_types

__all__ = ["BUILTIN_PLUGINS", "ENTRY_POINT_GROUP", "executors", "make_plugin_manager",
           "module_types"]

ENTRY_POINT_GROUP = "buildr"
#: registered before entry points, like pytest's default plugins: (name, module)
BUILTIN_PLUGINS = (
    ("script", "buildr_podman.script"),
    # The Podman backend's cancel, doctor and clean hooks; its executor comes from the
    # `podman` entry point.
    ("podman-maintenance", "buildr_podman.podman.maintenance"),
)


def make_plugin_manager(extra_modules: tuple[str, ...] = ()) -> pluggy.PluginManager:
    """Specs first, then built-ins, then installed plugins (entry points), then `-p` modules."""
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    for name, module in BUILTIN_PLUGINS:
        pm.register(importlib.import_module(module), name=name)
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
    except Exception as exc:  # its import may fail in any way: still one line, naming it
        detail = str(exc) if isinstance(exc, ImportError) else f"{type(exc).__name__}: {exc}"
        raise PluginError(f"cannot import plugin module {name!r} given with -p: {detail}") \
            from exc
    if pm.is_registered(module):
        return
    try:
        pm.register(module, name=name)
    except (ValueError, pluggy.PluginValidationError) as exc:
        raise PluginError(f"cannot register plugin module {name!r}: {exc}") from exc


def executors(pm: pluggy.PluginManager) -> dict[str, Executor]:
    """Every executor the loaded plugins provide, by name."""
    found: dict[str, Executor] = {}
    for provided in pm.hook.buildr_executors():
        for executor in provided or ():
            if executor.name in found:
                raise PluginError(f"two plugins provide an executor named {executor.name!r}")
            found[executor.name] = executor
    return found


def module_types(pm: pluggy.PluginManager) -> dict[tuple[str, str], ModuleType]:
    """Every module type the loaded plugins provide, by (category, name)."""
    try:
        provided = pm.hook.buildr_module_types()
    except PluginError:
        raise
    except Exception as exc:  # a plugin's bug, named as such
        raise PluginError(f"a plugin failed in buildr_module_types: {type(exc).__name__}: "
                          f"{exc}") from exc
    return index_module_types(provided)
