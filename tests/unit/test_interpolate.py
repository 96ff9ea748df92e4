"""The `${...}` evaluator: what it allows, how it joins pieces, and what it refuses."""

from __future__ import annotations

from typing import Any

import pytest

from buildr_podman.interpolate import (
    InterpolationError,
    ModuleRef,
    Scope,
    evaluate,
    has_interpolation,
)

LOCALS: dict[str, Any] = {"name": "world", "list": ["a", "b"], "count": 3, "flag": True}


def scope() -> Scope:
    def local(name: str, refs: set[str]) -> Any:
        if name not in LOCALS:
            raise InterpolationError(f"no local {name}", f"local.{name}")
        return LOCALS[name]

    return Scope(environ={"HOME": "/home/me", "EMPTY": ""}, modules={"lib": "build", "app": "task"},
                 out_dir=".buildr/out", local=local)


def ev(value: Any) -> tuple[Any, set[str]]:
    refs: set[str] = set()
    return evaluate(value, scope(), refs), refs


@pytest.mark.parametrize(("text", "value"), [
    ("plain", "plain"),
    ("", ""),
    ('${env("HOME")}', "/home/me"),
    ('${ env( "HOME" ) }/bin', "/home/me/bin"),
    ('${env("NOPE", "fallback")}', "fallback"),
    ('${env("EMPTY", "fallback")}', ""),  # set but empty is set
    ("hello ${local.name}!", "hello world!"),
    ("${local.list}", ["a", "b"]),  # a whole-string expression keeps its type
    ("${local.count}", 3),
    ("n=${local.count} f=${local.flag}", "n=3 f=true"),
    ("$${HOME} and %%{x}", "${HOME} and %{x}"),
    ('${"quoted \\"}\\" inside"}', 'quoted "}" inside'),
    ("${42}", 42),
    ("${true}", True),
])
def test_values(text: str, value: Any) -> None:
    assert ev(text)[0] == value


def test_module_references_are_out_dirs_and_dependencies() -> None:
    assert ev("${build.lib.out_dir}/x") == (".buildr/out/lib/x", {"lib"})
    assert ev(["${task.app}"]) == ([ModuleRef("task", "app")], {"app"})
    assert ev({"${local.name}": "${build.lib.out_dir}"}) == ({"world": ".buildr/out/lib"},
                                                             {"lib"})


@pytest.mark.parametrize(("text", "message"), [
    ('${env("NOPE")}', r'environment variable NOPE is not set: export it, or give a default'),
    ("${env()}", r"env takes a variable name and an optional default"),
    ('${env("A", "b", "c")}', r"env takes a variable name"),
    ('${upper("x")}', r'unknown function "upper"'),
    ("${var.x}", r'unknown reference "var\.x"'),
    ("${HOME}", r'unknown reference "HOME".*\$\$\{ for a literal'),
    ("${local.nope}", r"no local nope"),
    ("${local.a.b}", r'"local\.a\.b": write local\.NAME'),
    ("${task.lib.out_dir}", r'module "lib" is a build, not a task: write build\.lib\.out_dir'),
    ("${build.lip.out_dir}", r'refers to no module named "lip" \(did you mean "lib"\?\)'),
    ("${build.lib.image}", r"a module offers only its out dir"),
    ("x${build.lib}", r"build\.lib is a module, not text"),
    ("x${local.list}", r"is a list and cannot be part of a string"),
    ("${1 + 2}", r'unsupported expression "\$\{1 \+ 2\}"'),
    ("${x ? 1 : 2}", r"unsupported expression"),
    ("${local.list[0]}", r"unsupported expression"),
    ("${}", r"an empty \$\{\} has no value"),
    ("${local.name", r"is not closed"),
    ("%{ if x }", r"template directives"),
])
def test_refusals(text: str, message: str) -> None:
    with pytest.raises(InterpolationError, match=message):
        ev(text)


def test_has_interpolation() -> None:
    assert has_interpolation({"a": ["${x}"]})
    assert not has_interpolation(["$${x}", "plain", 3])
