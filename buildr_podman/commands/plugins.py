"""`buildr-podman plugins [TYPE]`: what is loaded, and what each plugin provides."""

from __future__ import annotations

import argparse
import json
from typing import Any

import pluggy

from buildr_podman.errors import UsageError
from buildr_podman.model import CATEGORIES
from buildr_podman.moduletype import ModuleType, where_to_get
from buildr_podman.plugins import BUILTIN_PLUGINS, executors, make_plugin_manager, module_types


def run(args: argparse.Namespace) -> int:
    pm = make_plugin_manager(tuple(args.plugins), distributions=True)  # for _origin
    types = module_types(pm)
    if args.type:
        return _show_type(args.type, types)
    provided = _provided_by(pm)
    print("plugins:")
    for name, plugin in pm.list_name_plugin():
        print(f"  {name:<20} {_origin(pm, name, plugin)}")
    print("executors:")
    by_plugin = _executors_by_plugin(pm)
    for name, executor in sorted(executors(pm).items()):
        print(f"  {name:<20} {type(executor).__module__}.{type(executor).__qualname__} "
              f"[{by_plugin.get(name, '?')}]")
    print("module types:")
    for key in sorted(types, key=lambda k: (k[1], k[0])):
        module_type = types[key]
        label = f'{module_type.category} "{module_type.name}"'
        print(f"  {label:<20} {module_type.summary} [{provided.get(key, '?')}]")
    print('\n(buildr-podman plugins TYPE shows a type\'s attributes, defaults and examples)')
    return 0


def _origin(pm: pluggy.PluginManager, name: str, plugin: Any) -> str:
    module = getattr(plugin, "__name__", type(plugin).__name__)
    if name in dict(BUILTIN_PLUGINS):
        return f"{module} (built in)"
    for loaded, dist in pm.list_plugin_distinfo():
        if loaded is plugin:
            return f"{module} (from {dist.project_name} {dist.version})"
    return f"{module} (-p or registered by code)"


def _provided_by(pm: pluggy.PluginManager) -> dict[tuple[str, str], str]:
    """Which plugin provides each module type, by calling each implementation on its own."""
    found: dict[tuple[str, str], str] = {}
    for impl in pm.hook.buildr_module_types.get_hookimpls():
        provided: list[ModuleType] = impl.function() or []  # type: ignore[assignment]
        for module_type in provided:
            found[module_type.key] = impl.plugin_name
    return found


def _executors_by_plugin(pm: pluggy.PluginManager) -> dict[str, str]:
    found: dict[str, str] = {}
    for impl in pm.hook.buildr_executors.get_hookimpls():
        provided: list[Any] = impl.function() or []  # type: ignore[assignment]
        for executor in provided:
            found[executor.name] = impl.plugin_name
    return found


def _show_type(name: str, types: dict[tuple[str, str], ModuleType]) -> int:
    matches = sorted((t for (_, type_name), t in types.items() if type_name == name),
                     key=lambda t: CATEGORIES.index(t.category))
    if not matches:
        known = ", ".join(sorted({type_name for _, type_name in types}))
        raise UsageError(f"no module type named {name!r} is loaded (types: {known})"
                         + where_to_get(name))
    first = matches[0]
    print(f'{first.name}: {first.summary}')
    print(f"categories: {', '.join(t.category for t in matches)}")
    print("attributes (besides container, environment, depends_on, timeout, ...):")
    for attribute, kind in first.attributes.items():
        default = first.defaults.get(attribute)
        required = " (required)" if attribute in first.required else ""
        shown = json.dumps(default) if default is not None else "unset"
        print(f"  {attribute:<16} {kind:<14} default {shown}{required}")
    for example in first.examples:
        print("\nexample:\n" + "\n".join(f"  {line}" for line in example.splitlines()))
    return 0
