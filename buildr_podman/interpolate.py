"""Evaluates the `${...}` in configuration strings: env("NAME", "default"), local.NAME and
CATEGORY.NAME.out_dir, nothing else, with an error that says what is allowed.

python-hcl2 hands every expression over as text (`x = env("HOME")` arrives as
`"${env(\\"HOME\\")}"`), so this is a small, strict evaluator over that text. A string that is
exactly one `${...}` takes the expression's value (a local may be a list or a map); otherwise
the pieces are joined into a string. `$${` and `%%{` are the HCL escapes for literal `${`, `%{`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from buildr_podman.model import CATEGORIES

__all__ = ["InterpolationError", "ModuleRef", "Scope", "UnsetVariable", "evaluate",
           "has_interpolation"]

HELP = ('use env("NAME"), env("NAME", "default"), local.NAME or CATEGORY.NAME.out_dir '
        "(write $${ for a literal ${)")
_TOKEN = re.compile(r'\s*(?:(?P<number>-?\d+(?:\.\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_-]*)'
                    r'|(?P<string>"(?:[^"\\]|\\.)*")|(?P<punct>[().,]))')
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


class InterpolationError(Exception):
    """A `${...}` that cannot be evaluated; `expression` is its text, to locate it."""

    def __init__(self, message: str, expression: str) -> None:
        self.message = message
        self.expression = expression
        super().__init__(message)


class UnsetVariable(InterpolationError):
    """env("NAME") of a variable that is not set, without a default: an error only for the
    modules that are to run (config.py sets the module aside; `list` says why)."""


@dataclass(frozen=True)
class ModuleRef:
    """`CATEGORY.NAME` on its own: a module, as `depends_on` may name it."""

    category: str
    name: str


@dataclass
class Scope:
    """What expressions can see."""

    environ: Mapping[str, str]
    modules: Mapping[str, str] = field(default_factory=dict)  #: module name -> category
    #: what CATEGORY.NAME.out_dir is below: where the container shows the outputs of
    #: dependencies, or (for a bind_mount source, a host path) the project's out dir
    out_dir: str = ".buildr/out"
    #: evaluates a local by name, adding the modules it refers to into the set
    local: Callable[[str, set[str]], Any] | None = None


def has_interpolation(value: Any) -> bool:
    """Whether a value holds any `${` (escapes aside) anywhere."""
    if isinstance(value, str):
        return "${" in value.replace("$${", "")
    if isinstance(value, dict):
        return any(has_interpolation(k) or has_interpolation(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_interpolation(item) for item in value)
    return False


def evaluate(value: Any, scope: Scope, refs: set[str]) -> Any:
    """`value` with every string evaluated; module names referred to are added to `refs`."""
    if isinstance(value, str):
        return _template(value, scope, refs)
    if isinstance(value, list):
        return [evaluate(item, scope, refs) for item in value]
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            name = _template(key, scope, refs) if isinstance(key, str) else key
            if isinstance(name, str) and name.startswith("(") and name.endswith(")"):
                name = name[1:-1]  # `(local.x) = ...` keys arrive parenthesised
            result[_stringify(name, key)] = evaluate(item, scope, refs)
        return result
    return value


def _template(text: str, scope: Scope, refs: set[str]) -> Any:
    parts = list(_split(text))
    if len(parts) == 1 and isinstance(parts[0], _Expr):
        return _evaluate_expression(parts[0].text, scope, refs)
    pieces = []
    for part in parts:
        if isinstance(part, _Expr):
            value = _evaluate_expression(part.text, scope, refs)
            pieces.append(_stringify(value, "${" + part.text + "}"))
        else:
            pieces.append(part)
    return "".join(pieces)


@dataclass(frozen=True)
class _Expr:
    text: str


def _split(text: str) -> Iterator[str | _Expr]:
    """Literal text and `${...}` expressions, in order, escapes resolved."""
    literal: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith(("$${", "%%{"), i):
            literal.append(text[i + 1:i + 3])
            i += 3
        elif text.startswith("${", i):
            end = _closing_brace(text, i + 2)
            if literal:
                yield "".join(literal)
                literal = []
            yield _Expr(text[i + 2:end].strip())
            i = end + 1
        elif text.startswith("%{", i):
            raise InterpolationError("template directives (%{ ... }) are not supported: "
                                     "write %%{ for a literal %{", text[i:i + 20])
        else:
            literal.append(text[i])
            i += 1
    if literal or not text:
        yield "".join(literal)


def _closing_brace(text: str, start: int) -> int:
    depth, i, quoted = 0, start, False
    while i < len(text):
        char = text[i]
        if quoted:
            if char == "\\":
                i += 1
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == "{":
            depth += 1
        elif char == "}":
            if depth == 0:
                return i
            depth -= 1
        i += 1
    raise InterpolationError("an interpolation ${ is not closed with }", text[start - 2:][:30])


def _evaluate_expression(source: str, scope: Scope, refs: set[str]) -> Any:
    tokens = _tokenize(source)
    value, rest = _parse_primary(tokens, source, scope, refs)
    if rest:
        raise InterpolationError(f'unsupported expression "${{{source}}}": {HELP}', source)
    return value


def _tokenize(source: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    stripped = source.rstrip()
    while position < len(stripped):
        match = _TOKEN.match(stripped, position)
        if not match or match.end() == position:
            raise InterpolationError(f'unsupported expression "${{{source}}}": {HELP}', source)
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        position = match.end()
    if not tokens:
        raise InterpolationError("an empty ${} has no value: " + HELP, source)
    return tokens


Tokens = list[tuple[str, str]]


def _parse_primary(tokens: Tokens, source: str, scope: Scope,
                   refs: set[str]) -> tuple[Any, Tokens]:
    kind, text = tokens[0]
    if kind == "string":
        return _unquote(text, source), tokens[1:]
    if kind == "number":
        return (float(text) if "." in text else int(text)), tokens[1:]
    if kind != "name":
        raise InterpolationError(f'unsupported expression "${{{source}}}": {HELP}', source)
    if len(tokens) > 1 and tokens[1] == ("punct", "("):
        return _call(text, tokens[2:], source, scope, refs)
    if text in ("true", "false", "null") and len(tokens) == 1:
        return {"true": True, "false": False, "null": None}[text], []
    parts = [text]
    rest = tokens[1:]
    while len(rest) >= 2 and rest[0] == ("punct", ".") and rest[1][0] == "name":
        parts.append(rest[1][1])
        rest = rest[2:]
    return _reference(parts, source, scope, refs), rest


def _call(function: str, tokens: Tokens, source: str, scope: Scope,
          refs: set[str]) -> tuple[Any, Tokens]:
    args = []
    while tokens and tokens[0] != ("punct", ")"):
        value, tokens = _parse_primary(tokens, source, scope, refs)
        args.append(value)
        if tokens and tokens[0] == ("punct", ","):
            tokens = tokens[1:]
        elif tokens and tokens[0] != ("punct", ")"):
            raise InterpolationError(f'expected "," or ")" in "${{{source}}}"', source)
    if not tokens:
        raise InterpolationError(f'missing ")" in "${{{source}}}"', source)
    if function != "env":
        raise InterpolationError(f'unknown function "{function}": the only function is env("NAME"'
                                 ', "default")', source)
    return _env(args, source, scope), tokens[1:]


def _env(args: list[Any], source: str, scope: Scope) -> str:
    if not 1 <= len(args) <= 2 or not all(isinstance(arg, str) for arg in args):
        raise InterpolationError('env takes a variable name and an optional default, both '
                                 'quoted strings: env("NAME") or env("NAME", "default")', source)
    name = args[0]
    if name in scope.environ:
        return scope.environ[name]
    if len(args) == 2:
        return str(args[1])
    raise UnsetVariable(f'environment variable {name} is not set: export it, or give a '
                        f'default: env("{name}", "value")', source)


def _reference(parts: list[str], source: str, scope: Scope, refs: set[str]) -> Any:
    root = parts[0]
    if root == "local":
        if scope.local is None:
            raise InterpolationError("local values cannot be used here", source)
        if len(parts) != 2:
            raise InterpolationError(f'"{".".join(parts)}": write local.NAME for a value of a '
                                     "locals block", source)
        return scope.local(parts[1], refs)
    if root in CATEGORIES:
        return _module_reference(parts, source, scope, refs)
    raise InterpolationError(f'unknown reference "{".".join(parts)}": {HELP}', source)


def _module_reference(parts: list[str], source: str, scope: Scope, refs: set[str]) -> Any:
    import difflib

    category, dotted = parts[0], ".".join(parts)
    if len(parts) < 2 or len(parts) > 3 or (len(parts) == 3 and parts[2] != "out_dir"):
        raise InterpolationError(f'"{dotted}": a module offers only its out dir: write '
                                 f"{category}.NAME.out_dir", source)
    name = parts[1]
    if name not in scope.modules:
        close = difflib.get_close_matches(name, list(scope.modules), n=1)
        hint = f' (did you mean "{close[0]}"?)' if close else ""
        raise InterpolationError(f'"{dotted}" refers to no module named "{name}"{hint}', source)
    if scope.modules[name] != category:
        actual = scope.modules[name]
        raise InterpolationError(f'module "{name}" is a {actual}, not a {category}: write '
                                 f"{actual}.{'.'.join(parts[1:])}", source)
    refs.add(name)
    if len(parts) == 2:
        return ModuleRef(category, name)
    return f"{scope.out_dir.rstrip('/')}/{name}"


def _unquote(token: str, source: str) -> str:
    body = token[1:-1]
    if "${" in body:
        raise InterpolationError("a string inside ${...} cannot hold another ${...}", source)
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), body)


def _stringify(value: Any, expression: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    if isinstance(value, ModuleRef):
        raise InterpolationError(f"{value.category}.{value.name} is a module, not text: write "
                                 f"{value.category}.{value.name}.out_dir for its out dir",
                                 expression.strip("${}"))
    what = "a list" if isinstance(value, list) else "a map" if isinstance(value, dict) else "null"
    raise InterpolationError(f"{expression} is {what} and cannot be part of a string",
                             expression.strip("${}"))
