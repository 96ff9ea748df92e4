"""Modules the agent's imports load but it never uses, run on their first use instead.

grpc's `__init__` imports grpc.aio, its asyncio API, and its compiled core imports asyncio; the
agent serves with grpc's threads and touches neither. Loading them was about half of `import
grpc`: 47-52 ms -> 21-22 ms here with them deferred, a server then started and answering.
protobuf likewise loads its pure-Python implementation beside the compiled one it uses. The
agent's start is on the path of every cold run.

A deferred module is a real module in sys.modules with its spec, path and file set; its code
runs on the first access to anything else, so `import asyncio` costs nothing and
`asyncio.run(...)` loads it whole, as the import would have. (importlib.util.LazyLoader does
not do here: Python 3.11's import reads `__spec__` on every import of a module already loaded,
and that loads a LazyLoader's module.) Only in the agent, whose imports are its own, grpc's
and protobuf's: a host plugin could import a submodule of a deferred package before the
package's own code has run, which this does not support.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import types
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec

__all__ = ["DEFERRED", "defer_unused_modules"]

# Each loaded by grpc's or protobuf's own imports and never used by a task's run (the tests
# check that a run leaves them unloaded): asyncio and grpc.aio (~25 ms), and protobuf's
# pure-Python message class and text format (~4 ms), which its compiled backend has no use for.
DEFERRED = ("asyncio", "grpc.aio", "google.protobuf.internal.python_message",
            "google.protobuf.text_format")

_loading = threading.RLock()


class _RunOnFirstUse(types.ModuleType):
    """A module whose code has not run yet. __getattr__ is only asked for what the module
    lacks: what module_from_spec set (__spec__, __path__, __file__, ...) never loads it."""

    def __getattr__(self, name: str) -> object:
        with _loading:
            if type(self) is _RunOnFirstUse:  # not loaded meanwhile by another thread
                spec = self.__spec__
                assert spec is not None and spec.loader is not None  # see defer_unused_modules
                # A plain module before its code runs: what that code asks of its own package
                # (`from . import events`) must not come back here.
                self.__class__ = types.ModuleType  # type: ignore[assignment]
                spec.loader.exec_module(self)
        return getattr(self, name)


def defer_unused_modules(names: tuple[str, ...] = DEFERRED) -> list[str]:
    """Puts a deferred module for each name not yet imported into sys.modules; returns the
    names deferred (one that cannot be found is left to the import as usual)."""
    deferred = []
    for name in names:
        spec = None if name in sys.modules else _find_spec(name)
        if spec is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        module.__class__ = _RunOnFirstUse
        sys.modules[name] = module
        deferred.append(name)
    return deferred


def _find_spec(name: str) -> ModuleSpec | None:
    """The spec of `name` without importing it or its parent package (importing grpc would
    import grpc.aio): the import system's finders, asked with the parent's search path."""
    parent, _, _ = name.rpartition(".")
    path = None
    if parent:
        parent_spec = importlib.util.find_spec(parent)  # imports the parent's parents only
        if parent_spec is None or parent_spec.submodule_search_locations is None:
            return None
        path = parent_spec.submodule_search_locations
    for finder in sys.meta_path:
        find_spec = getattr(finder, "find_spec", None)
        spec: ModuleSpec | None = find_spec(name, path) if find_spec is not None else None
        if spec is not None:
            return spec
    return None
