"""HCL text to blocks and attributes that remember their line and column, for located errors.

python-hcl2 (8.x) parses into rule objects that carry lark's position metadata; its dict
output drops the positions, so this module walks the rules itself and serializes only the
values. `${...}` interpolations stay as text here: `interpolate.py` evaluates them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buildr_podman.errors import ConfigError

__all__ = ["Attribute", "Block", "HclFile"]

HEREDOC = re.compile(r"\A<<(-?)([A-Za-z_][A-Za-z0-9_]*)\n(.*?)\n?[ \t]*\2\Z", re.DOTALL)


@dataclass
class Attribute:
    """`name = value`; `value` is plain Python (str, int, float, bool, None, list, dict)."""

    name: str
    value: Any
    line: int
    column: int
    value_column: int  #: where the value starts, on `line` (or a later one for long values)
    value_line: int


@dataclass
class Block:
    """`type "label" ... { body }`; the file's top level is a Block with type ""."""

    type: str
    labels: list[str]
    line: int
    column: int
    label_positions: list[tuple[int, int]] = field(default_factory=list)
    attributes: dict[str, Attribute] = field(default_factory=dict)
    blocks: list[Block] = field(default_factory=list)

    def blocks_of(self, block_type: str) -> list[Block]:
        return [block for block in self.blocks if block.type == block_type]


@dataclass
class HclFile:
    """One parsed `.buildr/*.hcl` file; `display` is its path relative to the repository."""

    path: Path
    display: str
    text: str
    body: Block

    @classmethod
    def read(cls, path: Path, root: Path) -> HclFile:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read it: {exc}", str(path)) from exc
        display = str(path.relative_to(root))
        from buildr_podman.hcl_cache import parse_cached  # it imports this module

        return cls(path, display, text, parse_cached(text, lambda: _parse(text, display)))

    def error(self, message: str, line: int | None, column: int | None = None) -> ConfigError:
        return ConfigError(message, self.display, line, column)

    def error_at(self, message: str, attribute: Attribute, near: str | None = None) -> ConfigError:
        """An error at the attribute's value, or at `near` when it occurs in the value's text."""
        line, column = attribute.value_line, attribute.value_column
        if near:
            found = self.find("${" + near, line, column) or self.find(near, line, column)
            line, column = found or (line, column)
        return self.error(message, line, column)

    def find(self, needle: str, line: int, column: int) -> tuple[int, int] | None:
        """The position of `needle` at or after (line, column), within the next few lines;
        an escaped `$${` does not count as a `${`."""
        lines = self.text.split("\n")
        for number in range(line, min(line + 50, len(lines) + 1)):
            start = column - 1 if number == line else 0
            text = lines[number - 1]
            index = text.find(needle, start)
            while index > 0 and needle.startswith("${") and text[index - 1] == "$":
                index = text.find(needle, index + 1)
            if index >= 0:
                return number, index + 1
        return None


MAX_NESTING = 100  # brackets, braces and parentheses inside each other; the parser needs ~200
HEREDOC_START = re.compile(r"<<-?\s*([A-Za-z_][A-Za-z0-9_]*)\s*$")


def too_deep(text: str) -> tuple[int, int] | None:
    """(line, column) of the first bracket, brace or parenthesis nested more than MAX_NESTING
    deep outside strings, comments and heredocs; None when there is none. The parser, and
    every step after it, recurses per level: deeper, it failed with RecursionError."""
    depth = 0
    heredoc_end: str | None = None
    for number, line in enumerate(text.split("\n"), start=1):
        if heredoc_end is not None:
            if line.strip() == heredoc_end:
                heredoc_end = None
            continue
        in_string = escaped = False
        for column, char in enumerate(line, start=1):
            if in_string:
                escaped, in_string = (False, True) if escaped else (char == "\\", char != '"')
            elif char == '"':
                in_string = True
            elif char == "#" or line.startswith("//", column - 1):
                break
            elif char in "([{":
                depth += 1
                if depth > MAX_NESTING:
                    return number, column
            elif char in ")]}":
                depth -= 1
        opened = HEREDOC_START.search(line)
        if opened and not in_string:
            heredoc_end = opened.group(1)
    return None


def _parse(text: str, display: str) -> Block:
    import hcl2  # deferred: only commands that read configuration pay for the parser
    from lark.exceptions import LarkError

    deep = too_deep(text)
    if deep is not None:
        raise ConfigError(f"nested more than {MAX_NESTING} levels deep: flatten it (a local "
                          "value can hold an inner part)", display, *deep)
    try:
        tree = hcl2.parses(text, discard_comments=True)
    except RecursionError as exc:  # past what too_deep counts (a comment's own brackets...)
        raise ConfigError("nested too deeply for the HCL parser: flatten it", display) from exc
    except LarkError as exc:
        line, column = getattr(exc, "line", None), getattr(exc, "column", None)
        raise ConfigError(f"HCL syntax error: {_describe_syntax_error(exc)}", display,
                          line, column) from exc
    top = Block(type="", labels=[], line=1, column=1)
    _fill(top, tree.body, display)
    return top


def _fill(block: Block, body: Any, display: str) -> None:
    from hcl2.rules.base import AttributeRule, BlockRule

    for child in body.children:
        if isinstance(child, BlockRule):
            block.blocks.append(_block(child, display))
        elif isinstance(child, AttributeRule):
            attribute = _attribute(child)
            if attribute.name in block.attributes:
                first = block.attributes[attribute.name]
                raise ConfigError(f'attribute "{attribute.name}" is set twice (first on line '
                                  f"{first.line}): keep one", display, attribute.line,
                                  attribute.column)
            block.attributes[attribute.name] = attribute


def _block(rule: Any, display: str) -> Block:
    options = _options()
    labels = [str(label.serialize(options)) for label in rule.labels]
    positions = [_position(label, rule) for label in rule.labels]
    line, column = _position(rule, rule)
    block = Block(type=labels[0], labels=labels[1:], line=line, column=column,
                  label_positions=positions[1:])
    _fill(block, rule.body, display)
    return block


def _attribute(rule: Any) -> Attribute:
    options = _options()
    line, column = _position(rule, rule)
    value_line, value_column = _position(rule.expression, rule)
    value = _decode_heredocs(rule.expression.serialize(options))
    return Attribute(str(rule.identifier.serialize(options)), value, line, column,
                     value_column, value_line)


def _position(rule: Any, fallback: Any) -> tuple[int, int]:
    # python-hcl2 keeps lark's Meta in a private attribute and offers no accessor for it.
    for candidate in (rule, fallback):
        meta = getattr(candidate, "_meta", None)
        if meta is not None and not getattr(meta, "empty", True):
            return meta.line, meta.column
    return 1, 1


_OPTIONS: Any = None


def _options() -> Any:
    global _OPTIONS
    if _OPTIONS is None:
        import hcl2

        # Heredocs are kept raw and decoded here: the library's own conversion escapes them.
        _OPTIONS = hcl2.SerializationOptions(with_comments=False, strip_string_quotes=True,
                                             preserve_heredocs=True)
    return _OPTIONS


def _decode_heredocs(value: Any) -> Any:
    """Turns every raw heredoc string into its text, as HCL defines it (`<<-` strips the
    smallest indentation; the text ends with a newline)."""
    if isinstance(value, dict):
        return {key: _decode_heredocs(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_decode_heredocs(item) for item in value]
    if not isinstance(value, str) or not (match := HEREDOC.match(value)):
        return value
    strip_indent, _, text = match.groups()
    lines = text.split("\n")
    if strip_indent:
        indents = [len(line) - len(line.lstrip(" \t")) for line in lines if line.strip()]
        cut = min(indents, default=0)
        lines = [line[cut:] for line in lines]
    return "\n".join(lines) + "\n"


def _describe_syntax_error(exc: Exception) -> str:
    token = getattr(exc, "token", None)
    if token is not None:
        text = str(token).strip().splitlines()[0] if str(token).strip() else "end of file"
        return f"unexpected {text!r}: check the line for a missing quote, brace or value"
    char = getattr(exc, "char", None)
    if char is not None:
        return f"unexpected character {char!r}"
    return re.sub(r" at line \d+, column \d+\.?", "", str(exc).splitlines()[0])
