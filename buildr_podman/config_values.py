"""Type checks for evaluated configuration values, each failing with a located, one-line error."""

from __future__ import annotations

import difflib
from typing import Any

from buildr_podman.errors import ConfigError
from buildr_podman.hcl import Attribute, Block, HclFile
from buildr_podman.interpolate import ModuleRef

__all__ = ["check_names", "describe", "expect_bool", "expect_kind", "expect_string", "expect_string_list",
           "expect_string_map", "suggest"]

KIND_PHRASES = {
    "string": 'a string, like "text"',
    "number": "a number, like 4",
    "bool": "true or false",
    "list(string)": 'a list of strings, like ["a", "b"]',
    "map(string)": 'a map of strings, like { NAME = "value" }',
}


def suggest(word: str, choices: tuple[str, ...] | list[str]) -> str:
    """' (did you mean "x"?)' for the nearest choice, or nothing."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""


def check_names(file: HclFile, block: Block, attrs: tuple[str, ...], blocks: tuple[str, ...],
                what: str) -> None:
    """Every attribute and block of `block` is a known one, with the nearest name if not."""
    for name, attribute in block.attributes.items():
        if name in blocks:
            raise file.error(f'{name} is a block in the {what}: write {name} {{ ... }} '
                             'without "="', attribute.line, attribute.column)
        if name not in attrs:
            raise file.error(f'unknown attribute "{name}" in {what}{suggest(name, attrs)}',
                             attribute.line, attribute.column)
    for inner in block.blocks:
        if inner.type in attrs:
            raise file.error(f'{inner.type} is an attribute in the {what}: write '
                             f"{inner.type} = ...", inner.line, inner.column)
        if inner.type not in blocks:
            known = suggest(inner.type, blocks) or (f" (blocks here: {', '.join(blocks)})"
                                                    if blocks else "")
            raise file.error(f'unknown block "{inner.type}" in {what}{known}', inner.line,
                             inner.column)
        if inner.labels:
            raise file.error(f"a {inner.type} block has no labels: write {inner.type} {{ ... }}",
                             inner.line, inner.column)


def describe(value: Any) -> str:
    """A value as a user would recognise it in a message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, ModuleRef):
        return f"the module {value.category}.{value.name}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f'"{shown}"'
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a map"
    return str(value)


def expect_kind(file: HclFile, attribute: Attribute, value: Any, kind: str) -> Any:
    """Checks a module type's attribute against its declared kind; returns the value."""
    checks = {"string": expect_string, "bool": expect_bool, "list(string)": expect_string_list,
              "map(string)": expect_string_map, "number": _expect_number}
    return checks[kind](file, attribute, value)


def expect_string(file: HclFile, attribute: Attribute, value: Any) -> str:
    if not isinstance(value, str):
        raise _wrong(file, attribute, value, "string")
    return value


def expect_bool(file: HclFile, attribute: Attribute, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _wrong(file, attribute, value, "bool")
    return value


def expect_choice(file: HclFile, attribute: Attribute, value: Any,
                  choices: dict[str, str]) -> str:
    """One of `choices` (each name with what it means, the default first), or an error that
    lists them all and suggests the nearest."""
    if value not in choices:
        hint = suggest(value, tuple(choices)) if isinstance(value, str) else ""
        raise file.error_at(f"{attribute.name} must be {_listed(choices)}, not "
                            f"{describe(value)}{hint}", attribute)
    return str(value)


def _listed(choices: dict[str, str]) -> str:
    """'"a" (the default: what a is) or "b" (what b is)'."""
    items = []
    for index, (name, meaning) in enumerate(choices.items()):
        note = ("the default" + (f": {meaning}" if meaning else "")) if index == 0 else meaning
        items.append(f'"{name}" ({note})')
    return " or ".join(items)


def expect_string_list(file: HclFile, attribute: Attribute, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _wrong(file, attribute, value, "list(string)")
    return value


BAD_NAME_CHARACTERS = (("=", '"="'), ("\n", "a newline"), ("\r", "a carriage return"),
                       ("\0", "a NUL character"))


def expect_string_map(file: HclFile, attribute: Attribute, value: Any) -> dict[str, str]:
    """A map whose values are strings; numbers become their text, as HCL converts them."""
    if not isinstance(value, dict):
        raise _wrong(file, attribute, value, "map(string)")
    result = {}
    for name, item in value.items():
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise file.error_at(f'{attribute.name}: the value of "{name}" must be a string, not '
                                f"{describe(item)}", attribute, near=str(name))
        result[str(name)] = str(item)
    return result


def expect_environment(file: HclFile, attribute: Attribute, value: Any) -> dict[str, str]:
    """A map of environment variables: names that execve can pass on (no "=", which would end
    the name early, nor a newline or NUL), values without NUL. Refused here, with the place:
    at run time such a name failed inside gRPC or the agent."""
    variables = expect_string_map(file, attribute, value)
    for name, item in variables.items():
        held = [what for char, what in BAD_NAME_CHARACTERS if char in name]
        if not name or held:
            why = f"it holds {held[0]}" if held else "it is empty"
            raise file.error_at(f"{attribute.name}: {name!r} cannot be an environment variable "
                                f'name ({why}): use letters, digits and "_"', attribute,
                                near=name or None)
        if "\0" in item:
            raise file.error_at(f'{attribute.name}: the value of "{name}" holds a NUL '
                                "character, which no environment variable can", attribute,
                                near=name)
    return variables


def _expect_number(file: HclFile, attribute: Attribute, value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _wrong(file, attribute, value, "number")
    return value


def _wrong(file: HclFile, attribute: Attribute, value: Any, kind: str) -> ConfigError:
    return file.error_at(f"{attribute.name} must be {KIND_PHRASES[kind]}, not {describe(value)}",
                         attribute)
