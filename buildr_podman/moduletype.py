"""Module types: what a plugin declares so that `CATEGORY "TYPE" "NAME" { ... }` means something.

A module type names the block's first label (`"script"`, `"make"`), the category it belongs to,
its own attributes with their kinds and defaults (its default spec), help examples, and an
`expand` function that turns those attributes into the script the task's shell runs. Every
other attribute of a module block (container, environment, depends_on, ...) is the host's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from buildr_podman.errors import PluginError
from buildr_podman.model import CATEGORIES

__all__ = ["KINDS", "ModuleSpecError", "ModuleType", "index_module_types", "where_to_get"]

#: The attribute kinds a module type can declare, as HCL users write them.
KINDS: Final = ("string", "number", "bool", "list(string)", "map(string)")

#: Module types of the project's own plugins, which are distributions of their own.
SEPARATE_DISTRIBUTIONS: Final = {"make": "buildr-make"}


def where_to_get(type_name: str) -> str:
    """For a type that is not loaded: how to install the plugin that has it, if we know one."""
    distribution = SEPARATE_DISTRIBUTIONS.get(type_name)
    return f"; it comes with the plugin {distribution}: pip install {distribution}" \
        if distribution else ""


class ModuleSpecError(Exception):
    """Raised by `ModuleType.expand` for a wrong attribute; the host adds file:line:col.

    `attribute` names the offending attribute (None: the block as a whole).
    """

    def __init__(self, message: str, attribute: str | None = None) -> None:
        self.attribute = attribute
        self.message = message
        super().__init__(message)


@dataclass(frozen=True)
class ModuleType:
    """One type of module a plugin provides."""

    name: str  #: the first block label, e.g. "make"
    category: str  #: "task", "build", "tool" or "package": the block type it is used with
    summary: str  #: one line for `buildr-podman plugins`
    #: its own attributes: name -> kind (one of KINDS)
    attributes: Mapping[str, str]
    #: the script for the task's shell, from the attributes (defaults filled in, None = unset);
    #: raise ModuleSpecError for a value that makes no sense
    expand: Callable[[Mapping[str, Any]], str]
    #: the default spec: attribute -> value used when the block leaves it out (absent: None)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    #: complete HCL blocks showing typical use, for `buildr-podman plugins TYPE`
    examples: tuple[str, ...] = ()
    #: attributes that must be set
    required: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise PluginError(f"module type {self.name!r} has category {self.category!r}; "
                              f"it must be one of {', '.join(CATEGORIES)}")
        for attribute, kind in self.attributes.items():
            if kind not in KINDS:
                raise PluginError(f"module type {self.name!r}: attribute {attribute!r} has kind "
                                  f"{kind!r}; it must be one of {', '.join(KINDS)}")
        unknown = (set(self.defaults) | set(self.required)) - set(self.attributes)
        if unknown:
            raise PluginError(f"module type {self.name!r} gives defaults or requires "
                              f"{', '.join(sorted(unknown))}, which are not among its attributes")

    @property
    def key(self) -> tuple[str, str]:
        return (self.category, self.name)

    def spec(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The attributes given, with defaults for the ones left out (None when neither)."""
        return {name: given.get(name, self.defaults.get(name)) for name in self.attributes}


def index_module_types(provided: Iterable[Iterable[ModuleType] | None],
                       ) -> dict[tuple[str, str], ModuleType]:
    """Every type from the hook's results by (category, name); two of one key is an error."""
    found: dict[tuple[str, str], ModuleType] = {}
    for types in provided:
        for module_type in types or ():
            if not isinstance(module_type, ModuleType):
                raise PluginError(f"buildr_module_types returned {module_type!r}, "
                                  "not a buildr_podman.ModuleType")
            if module_type.key in found:
                raise PluginError(f'two plugins provide {module_type.category} type '
                                  f'"{module_type.name}": uninstall one')
            found[module_type.key] = module_type
    return found
