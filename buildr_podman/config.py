"""Reads `.buildr/*.hcl` into a validated Project; every mistake is a ConfigError at file:line."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from buildr_podman.errors import ConfigError
from buildr_podman.model import DEFAULT_SHELL, ContainerSpec, Project, Task

__all__ = ["find_root", "load_project"]

CONFIG_DIR = ".buildr"
DEFAULT_OUT_DIR = ".buildr/out"
TASK_TYPES = ("script",)
TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
BUILDR_ATTRS = ("out_dir",)
TASK_ATTRS = ("container", "input_mapping", "environment", "shell", "script", "inline",
              "working_dir")
CONTAINER_ATTRS = ("image", "user")
USER_SPEC = re.compile(r"^\d+(:\d+)?$")
HEREDOC = re.compile(r"\A<<(-?)([A-Za-z_][A-Za-z0-9_]*)\n(.*?)\n?[ \t]*\2\Z", re.S)


def find_root(start: Path) -> Path:
    """The nearest directory from `start` upward that holds `.buildr/`."""
    start = start.resolve()
    for candidate in (start, *start.parents):
        if (candidate / CONFIG_DIR).is_dir():
            return candidate
    raise ConfigError(f"no {CONFIG_DIR}/ folder in {start} or above it: "
                      f"run inside a repository that has one, or pass -C DIR")


def load_project(root: Path) -> Project:
    """Reads every `.buildr/*.hcl` of the repository at `root`."""
    files = sorted((root / CONFIG_DIR).glob("*.hcl"))
    if not files:
        raise ConfigError(f"no *.hcl files in {root / CONFIG_DIR}: add one with a task block")
    out_dir = root / DEFAULT_OUT_DIR
    tasks: dict[str, Task] = {}
    for path in files:
        source = _SourceFile.read(path, root)
        document = source.parse()
        for block in document.get("buildr", []):
            out_dir = root / _read_buildr_block(source, block)
        for task in _read_task_blocks(source, document.get("task", [])):
            if task.name in tasks:
                raise source.error(f'task "{task.name}" is defined twice (first at '
                                   f'{tasks[task.name].source}): rename one', f'"{task.name}"')
            tasks[task.name] = task
        _reject_unknown_blocks(source, document)
    return Project(root=root, out_dir=out_dir, tasks=tasks)


@dataclass
class _SourceFile:
    """One HCL file's text, for parsing and for finding the line of a name in errors."""

    path: Path
    display: str
    text: str

    @classmethod
    def read(cls, path: Path, root: Path) -> _SourceFile:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read it: {exc}", str(path)) from exc
        return cls(path, str(path.relative_to(root)), text)

    def parse(self) -> dict[str, Any]:
        import hcl2  # deferred: only commands that read configuration pay for the parser
        from lark.exceptions import LarkError

        # Heredocs are kept raw and decoded here: the library's own conversion escapes them.
        options = hcl2.SerializationOptions(with_comments=False, strip_string_quotes=True,
                                            preserve_heredocs=True)
        try:
            return _decode_heredocs(hcl2.loads(self.text, serialization_options=options))
        except LarkError as exc:
            line, column = getattr(exc, "line", None), getattr(exc, "column", None)
            raise ConfigError(f"HCL syntax error: {_describe_syntax_error(exc)}", self.display,
                              line, column) from exc

    def error(self, message: str, near: str, after: str | None = None) -> ConfigError:
        """A ConfigError located at the first line mentioning `near` (after `after`)."""
        line, column = self.locate(near, after)
        return ConfigError(message, self.display, line, column)

    def locate(self, near: str, after: str | None = None) -> tuple[int | None, int | None]:
        start = self.text.find(after) if after else 0
        index = self.text.find(near, max(start, 0))
        if index < 0:
            return None, None
        line = self.text.count("\n", 0, index) + 1
        column = index - (self.text.rfind("\n", 0, index) + 1) + 1
        return line, column


def _read_buildr_block(source: _SourceFile, block: dict[str, Any]) -> str:
    _check_attrs(source, block, BUILDR_ATTRS, "buildr block", "buildr")
    out_dir = block.get("out_dir", DEFAULT_OUT_DIR)
    if not isinstance(out_dir, str) or not out_dir or PurePosixPath(out_dir).is_absolute() \
            or ".." in PurePosixPath(out_dir).parts:
        raise source.error("out_dir must be a path relative to the repository root, "
                           'like ".buildr/out"', "out_dir")
    return out_dir


def _read_task_blocks(source: _SourceFile, blocks: list[dict[str, Any]]) -> list[Task]:
    tasks = []
    for by_type in blocks:
        for module_type, by_name in _body(by_type).items():
            if not isinstance(by_name, dict) or by_name.get("__is_block__"):
                raise source.error('a task block needs a type and a name: '
                                   'task "script" "NAME" { ... }', "task")
            for name, body in _body(by_name).items():
                tasks.append(_read_task(source, module_type, name, body))
    return tasks


def _read_task(source: _SourceFile, module_type: str, name: str, body: dict[str, Any]) -> Task:
    header = f'"{name}"'
    where = f"{source.display}:{source.locate(header)[0]}"
    if module_type not in TASK_TYPES:
        raise source.error(f'unknown task type "{module_type}"{_suggest(module_type, TASK_TYPES)}'
                           f"; known types: {', '.join(TASK_TYPES)}", f'"{module_type}"')
    if not TASK_NAME.match(name):
        raise source.error(f'task name "{name}" may hold only letters, digits, ".", "_" and "-"',
                           header)
    _check_attrs(source, body, TASK_ATTRS, f'task "{name}"', header)
    return Task(
        name=name,
        module_type=module_type,
        container=_read_container(source, name, body.get("container")),
        script=_read_script(source, name, body),
        shell=_string(source, body, "shell", header, DEFAULT_SHELL),
        environment=tuple(_string_map(source, body, "environment", header).items()),
        input_mapping=_read_input_mapping(source, body, header),
        working_dir=_relative_path(source, body, "working_dir", header, "."),
        source=where,
    )


def _read_container(source: _SourceFile, task: str, blocks: Any) -> ContainerSpec:
    header = f'"{task}"'
    if not isinstance(blocks, list) or len(blocks) != 1:
        raise source.error(f'task "{task}" needs exactly one container {{ image = "..." }} block',
                           header)
    block = blocks[0]
    _check_attrs(source, block, CONTAINER_ATTRS, "container block", "container", header)
    image = block.get("image")
    if not isinstance(image, str) or not image.strip():
        raise source.error(f'task "{task}": container needs image = "NAME:TAG"', "container",
                           header)
    user = block.get("user")
    if user is not None and not (isinstance(user, str) and USER_SPEC.match(user)):
        raise source.error(f'task "{task}": container user must be "UID" or "UID:GID", '
                           f'like "1000:1000"', "user", header)
    return ContainerSpec(image=image, user=user)


def _read_script(source: _SourceFile, task: str, body: dict[str, Any]) -> str:
    header = f'"{task}"'
    if ("script" in body) == ("inline" in body):
        raise source.error(f'task "{task}" needs either script = "..." or inline = [...], '
                           "not both and not neither", header)
    if "script" in body:
        return _string(source, body, "script", header, "")
    inline = body["inline"]
    if not isinstance(inline, list) or not all(isinstance(line, str) for line in inline):
        raise source.error(f'task "{task}": inline must be a list of strings', "inline", header)
    # Like Packer's inline: each line must succeed for the next to run.
    return "set -e\n" + "\n".join(inline)


def _read_input_mapping(source: _SourceFile, body: dict[str, Any],
                        header: str) -> tuple[tuple[str, str], ...]:
    mapping = _string_map(source, body, "input_mapping", header)
    for key, value in mapping.items():
        for path in (key, value):
            pure = PurePosixPath(path)
            if pure.is_absolute() or ".." in pure.parts:
                raise source.error(f'input_mapping "{key}" = "{value}": both sides must be '
                                   "relative paths without ..", "input_mapping", header)
    return tuple(mapping.items())


def _check_attrs(source: _SourceFile, body: dict[str, Any], known: tuple[str, ...],
                 what: str, near: str, after: str | None = None) -> None:
    for key in body:
        if key.startswith("__"):
            continue
        if key not in known:
            raise source.error(f'unknown attribute "{key}" in {what}{_suggest(key, known)}',
                               key, after or near)


def _string(source: _SourceFile, body: dict[str, Any], key: str, header: str,
            default: str) -> str:
    value = body.get(key, default)
    if not isinstance(value, str):
        raise source.error(f"{key} must be a string", key, header)
    return value


def _string_map(source: _SourceFile, body: dict[str, Any], key: str,
                header: str) -> dict[str, str]:
    value = body.get(key, {})
    if not isinstance(value, dict):
        raise source.error(f"{key} must be a map like {{ NAME = \"value\" }}", key, header)
    result = {}
    for name, item in value.items():
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise source.error(f'{key}: value of "{name}" must be a string', key, header)
        result[str(name)] = str(item)
    return result


def _relative_path(source: _SourceFile, body: dict[str, Any], key: str, header: str,
                   default: str) -> str:
    value = _string(source, body, key, header, default)
    pure = PurePosixPath(value)
    if pure.is_absolute() or ".." in pure.parts:
        raise source.error(f'{key} must be relative to the workspace, like "." or "src"',
                           key, header)
    return value


def _reject_unknown_blocks(source: _SourceFile, document: dict[str, Any]) -> None:
    for key in document:
        if key not in ("buildr", "task") and not key.startswith("__"):
            raise source.error(f'unknown block or attribute "{key}"'
                               f"{_suggest(key, ('buildr', 'task'))}", key)


def _describe_syntax_error(exc: Exception) -> str:
    token = getattr(exc, "token", None)
    if token is not None:
        text = str(token).strip().splitlines()[0] if str(token).strip() else "end of file"
        return f"unexpected {text!r}: check the line for a missing quote, brace or value"
    char = getattr(exc, "char", None)
    if char is not None:
        return f"unexpected character {char!r}"
    return re.sub(r" at line \d+, column \d+\.?", "", str(exc).splitlines()[0])


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


def _body(block: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in block.items() if not k.startswith("__")}


def _suggest(word: str, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""
