"""The `make` module type for buildr-podman: make targets, expanded to a shell script.

Registered through the entry point `make` of group `buildr`; uses only the documented hook
`buildr_module_types` and the `ModuleType` it returns.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from typing import Any

from buildr_podman import ModuleSpecError, ModuleType, hookimpl

__all__ = ["MAKE_TYPES", "buildr_module_types", "expand_make"]
__version__ = "0.1.0"

VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# One job per core the container sees; `nproc` is missing from the smallest images.
ALL_CORES = '"$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)"'

ATTRIBUTES = {
    "targets": "list(string)",
    "directory": "string",
    "makefile": "string",
    "jobs": "number",
    "variables": "map(string)",
    "keep_going": "bool",
}
DEFAULTS: dict[str, Any] = {"targets": [], "jobs": 0, "variables": {}, "keep_going": False}

EXAMPLE = '''{category} "make" "hello" {{
  container {{
    image = "localhost/buildr-gcc:bookworm"
  }}
  targets   = ["all"]
  variables = {{ CFLAGS = "-O2" }}
}}'''


def expand_make(spec: Mapping[str, Any]) -> str:
    """The `make` command line for the attributes; every word is shell-quoted."""
    words = ["exec", "make", "-j", _jobs(spec.get("jobs"))]
    if spec.get("keep_going"):
        words.append("-k")
    if spec.get("directory"):
        words += ["-C", shlex.quote(_word(spec["directory"], "directory"))]
    if spec.get("makefile"):
        words += ["-f", shlex.quote(_word(spec["makefile"], "makefile"))]
    for name, value in (spec.get("variables") or {}).items():
        if not VARIABLE.match(name):
            raise ModuleSpecError(f'variables: "{name}" is not a make variable name '
                                  "(letters, digits and _)", "variables")
        words.append(shlex.quote(f"{name}={value}"))
    for target in spec.get("targets") or []:
        words.append(shlex.quote(_word(target, "targets")))
    return " ".join(words) + "\n"


def _jobs(value: Any) -> str:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ModuleSpecError(f"jobs must be a whole number, 0 for one per core, not {value!r}",
                              "jobs")
    return ALL_CORES if value == 0 else str(value)


def _word(value: str, attribute: str) -> str:
    # A leading "-" would make the value an option of make.
    if not value or value.startswith("-"):
        raise ModuleSpecError(f"{attribute}: {value!r} must not be empty or start with '-'",
                              attribute)
    return value


MAKE_TYPES = tuple(
    ModuleType(name="make", category=category, summary="make targets (make -j, -C, -f, VAR=x)",
               attributes=ATTRIBUTES, defaults=DEFAULTS, expand=expand_make,
               examples=(EXAMPLE.format(category=category),))
    for category in ("task", "build"))


@hookimpl
def buildr_module_types() -> list[ModuleType]:
    return list(MAKE_TYPES)
