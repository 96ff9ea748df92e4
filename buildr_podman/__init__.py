"""buildr-podman: run build steps in rootless Podman pods and bring back only what they changed.

The public surface for plugin authors is re-exported here, lazily: the in-container agent
imports this package too, and must not pay for (or carry) pluggy and the host's modules.
Type checkers read __init__.pyi instead (not imports under TYPE_CHECKING here: PyInstaller
would follow them into the agent).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> module that defines it
_EXPORTS = {
    "hookimpl": "buildr_podman.hookspecs",
    "ModuleType": "buildr_podman.moduletype",
    "ModuleSpecError": "buildr_podman.moduletype",
    "Task": "buildr_podman.model",
    "TaskOutcome": "buildr_podman.model",
    "TaskResult": "buildr_podman.model",
    "RunReport": "buildr_podman.model",
    "ContainerSpec": "buildr_podman.model",
    "Project": "buildr_podman.model",
    "PhaseUpdate": "buildr_podman.phases",
    "BuildrError": "buildr_podman.errors",
    "ConfigError": "buildr_podman.errors",
}

__all__ = [  # kept equal to _EXPORTS by tests/unit/test_public_api.py
    "BuildrError", "ConfigError", "ContainerSpec", "ModuleSpecError", "ModuleType",
    "PhaseUpdate", "Project", "RunReport", "Task", "TaskOutcome", "TaskResult", "__version__",
    "hookimpl",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'buildr_podman' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
