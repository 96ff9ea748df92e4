"""The plugin manager: hook specs, built-in plugins, and plugins from entry points and `-p`."""

from __future__ import annotations

import importlib
import re

import pluggy

from buildr_podman import hookspecs
from buildr_podman.cache_root import cache_root
from buildr_podman.errors import PluginError
from buildr_podman.executor import Executor
from buildr_podman.installed_memo import remembered
from buildr_podman.moduletype import ModuleType, index_module_types

__all__ = ["BUILTIN_PLUGINS", "ENTRY_POINT_GROUP", "executors", "make_plugin_manager",
           "module_types"]

ENTRY_POINT_GROUP = "buildr"
ENTRY_POINTS_MEMO = "plugin-entry-points"  # in the cache: the group's entry points, remembered
# An entry point's value, as importlib.metadata.EntryPoint reads it.
ENTRY_POINT_VALUE = re.compile(r"(?P<module>[\w.]+)\s*(:\s*(?P<attr>[\w.]+)\s*)?"
                               r"(?P<extras>\[.*\])?\s*")
#: registered before entry points, like pytest's default plugins: (name, module)
BUILTIN_PLUGINS = (
    ("script", "buildr_podman.script"),
    # The Podman backend's cancel, doctor and clean hooks; its executor comes from the
    # `podman` entry point.
    ("podman-maintenance", "buildr_podman.podman.maintenance"),
)


def make_plugin_manager(extra_modules: tuple[str, ...] = (), *,
                        distributions: bool = False) -> pluggy.PluginManager:
    """Specs first, then built-ins, then installed plugins (entry points), then `-p` modules.
    `distributions`: also know which distribution brought each installed plugin
    (pm.list_plugin_distinfo(), for `buildr-podman plugins`), reading every distribution's
    metadata; otherwise the entry points are remembered (installed_memo.py)."""
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    for name, module in BUILTIN_PLUGINS:
        pm.register(importlib.import_module(module), name=name)
    try:
        if distributions:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        else:
            _load_remembered_entry_points(pm)
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


def _load_remembered_entry_points(pm: pluggy.PluginManager) -> None:
    """As pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP), from the remembered entry points
    (~7 ms less on every command: importlib.metadata is neither imported nor asked). A
    remembered plugin that no longer loads sends us to the metadata once more."""
    memo = cache_root() / ENTRY_POINTS_MEMO
    try:
        _register_entry_points(pm, remembered(memo, _entry_point_lines))
    except Exception:  # noqa: BLE001 - asked afresh; a plugin that fails then is reported
        _register_entry_points(pm, remembered(memo, _entry_point_lines, fresh=True))


def _entry_point_lines() -> list[str]:
    from importlib import metadata

    return [f"{entry.name}={entry.value}"
            for entry in metadata.entry_points(group=ENTRY_POINT_GROUP)]


def _register_entry_points(pm: pluggy.PluginManager, lines: list[str]) -> None:
    for line in lines:
        name, _, value = line.partition("=")
        if pm.has_plugin(name) or pm.is_blocked(name):
            continue  # as pluggy does: a name registered first wins
        pm.register(_load_entry_point(value), name=name)


def _load_entry_point(value: str) -> object:
    """What an entry point's value ("module", "module:attr.attr", maybe "[extras]") names."""
    match = ENTRY_POINT_VALUE.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"malformed entry point value {value!r}")
    loaded: object = importlib.import_module(match["module"])
    for attribute in match["attr"].split(".") if match["attr"] else []:
        loaded = getattr(loaded, attribute)
    return loaded


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
