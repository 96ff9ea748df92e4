"""Reads `.buildr/*.hcl` into a validated Project; every mistake is a ConfigError at file:line:col.

Top-level blocks: `buildr { out_dir }`, `locals { NAME = value }`, and modules declared as
`CATEGORY "TYPE" "NAME" { ... }` with CATEGORY one of task, build, tool, package and TYPE a
module type some plugin provides. The attributes every module has are read here (and the
container block in `config_container.py`); the type's own attributes go to its plugin.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

from buildr_podman.cache.remote_config import RemoteCacheSettings, parse_remote
from buildr_podman.config_values import (
    check_names,
    describe,
    expect_bool,
    expect_environment,
    expect_kind,
    expect_string,
    expect_string_map,
    suggest,
)
from buildr_podman.errors import ConfigError
from buildr_podman.graph import find_cycle
from buildr_podman.hcl import Attribute, Block, HclFile
from buildr_podman.interpolate import (
    InterpolationError,
    ModuleRef,
    Scope,
    UnsetVariable,
    evaluate,
)
from buildr_podman.model import CATEGORIES, DEFAULT_SHELL, DEPENDENCY_OUTPUTS, Project, Task
from buildr_podman.moduletype import ModuleSpecError, ModuleType, where_to_get
from buildr_podman.remote_execution.settings import RemoteExecutionSettings, execution_settings

__all__ = ["find_root", "load_project", "parse_duration", "parse_size"]

CONFIG_DIR = ".buildr"
DEFAULT_OUT_DIR = ".buildr/out"
MODULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
BUILDR_ATTRS = ("out_dir", "max_return_size", "max_return_entries", "default")
BUILDR_BLOCKS = ("cache", "remote")
CACHE_ATTRS = ("max_size", "remote", "upload", "instance_name")
REMOTE_ATTRS = ("execution", "instance_name")
TOP_LEVEL_BLOCKS = ("buildr", "locals", *CATEGORIES)
#: attributes every module has, whatever its type
MODULE_ATTRS = ("environment", "secret_environment", "shell", "working_dir", "input_mapping",
                "depends_on", "inputs_from", "timeout", "write_back", "continue_on_error",
                "cache", "cache_secrets")
DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
SIZE = re.compile(r"^(\d+)([kmgt]?)$", re.IGNORECASE)
SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_OUT_DIR_PLACEHOLDER = "\0out_dir\0"


def find_root(start: Path) -> Path:
    """The nearest directory from `start` upward that holds `.buildr/`."""
    start = start.resolve()
    for candidate in (start, *start.parents):
        if (candidate / CONFIG_DIR).is_dir():
            return candidate
    raise ConfigError(f"no {CONFIG_DIR}/ folder in {start} or above it: "
                      f"run inside a repository that has one, or pass -C DIR")


def load_project(root: Path, module_types: Mapping[tuple[str, str], ModuleType] | None = None,
                 environ: Mapping[str, str] | None = None) -> Project:
    """Reads every `.buildr/*.hcl` of the repository at `root`.

    `module_types` come from the plugins (`buildr_module_types`); without them only the
    built-in `script` type is known. `environ` is what env() sees (default: os.environ).
    """
    files = sorted((root / CONFIG_DIR).glob("*.hcl"))
    if not files:
        raise ConfigError(f"no *.hcl files in {root / CONFIG_DIR}: add one with a task block")
    if module_types is None:
        from buildr_podman.script import SCRIPT_TYPES

        module_types = {t.key: t for t in SCRIPT_TYPES}
    parsed = [HclFile.read(path, root) for path in files]
    return _Loader(root, parsed, module_types, os.environ if environ is None else environ).load()


def parse_size(text: str) -> int | None:
    """Bytes in "512", "64k", "10m", "2g", "1t" (powers of 1024); None when it is not a size."""
    match = SIZE.match(text.strip())
    return int(match[1]) * SIZE_UNITS[match[2].lower()] if match else None


def parse_duration(text: str) -> float | None:
    """Seconds in "90s", "10m", "1h30m", "500ms"; None when it is not such a duration."""
    text = text.strip()
    if not text or DURATION.sub("", text):
        return None
    return sum(float(n) * DURATION_UNITS[unit] for n, unit in DURATION.findall(text))


def _unsafe_out_dir(out_dir: PurePosixPath) -> str | None:
    """Why an out dir would let outputs replace the user's files, or None. Task `src`'s
    output would replace the repository's src/ under out_dir ".", and Git's hooks under
    ".git"; ".buildr" holds the configuration."""
    parts = out_dir.parts
    if not parts or parts == (".",):
        return "is the repository root"
    if parts[0] == ".git":
        return "lies inside .git"
    if parts == (".buildr",):
        return "holds the configuration (.buildr/*.hcl)"
    return None


class _NotReady(ConfigError):
    """A module's configuration needs an environment variable that is not set: an error only
    if that module is to run (Project.unavailable keeps the message)."""


@dataclass
class _Declared:
    """A module block seen in a first pass: enough to resolve names before reading bodies."""

    file: HclFile
    block: Block
    category: str
    type_name: str
    name: str

    @property
    def where(self) -> str:
        return f"{self.file.display}:{self.block.line}"

    @property
    def title(self) -> str:
        return f'{self.category} "{self.name}"'


@dataclass
class _Loader:
    """One load: a first pass declares names (modules, locals), a second reads each module."""

    root: Path
    files: list[HclFile]
    module_types: Mapping[tuple[str, str], ModuleType]
    environ: Mapping[str, str]
    declared: dict[str, _Declared] = field(default_factory=dict)
    locals: dict[str, tuple[HclFile, Attribute]] = field(default_factory=dict)
    _local_values: dict[tuple[str, bool], tuple[Any, frozenset[str]]] = field(
        default_factory=dict)
    _local_stack: list[str] = field(default_factory=list)
    out_dir_rel: str = _OUT_DIR_PLACEHOLDER
    max_return_bytes: int | None = None
    max_return_entries: int | None = None

    def load(self) -> Project:
        for file in self.files:
            self._check_top_level(file)
            self._collect_locals(file)
            self._declare_modules(file)
        self.out_dir_rel = self._read_out_dir()
        self.max_return_bytes = self._read_max_return()
        self.max_return_entries = self._read_max_entries()
        cache_max_bytes, cache_remote = self._read_cache()
        remote_execution = self._read_remote_execution()
        tasks, unavailable = {}, {}
        for name, declared in self.declared.items():
            try:
                tasks[name] = self._read_module(declared)
            except _NotReady as exc:
                unavailable[name] = str(exc)
        self._check_cycles(tasks)
        return Project(root=self.root,
                       out_dir=Path(os.path.normpath(self.root / self.out_dir_rel)), tasks=tasks,
                       unavailable=unavailable, default=self._read_default(),
                       cache_max_bytes=cache_max_bytes, cache_remote=cache_remote,
                       remote_execution=remote_execution)

    # -- first pass: what exists -------------------------------------------------------------

    def _check_top_level(self, file: HclFile) -> None:
        for attribute in file.body.attributes.values():
            raise file.error(f'unknown block or attribute "{attribute.name}"'
                             f"{suggest(attribute.name, TOP_LEVEL_BLOCKS)}: the top level holds "
                             f"only {', '.join(TOP_LEVEL_BLOCKS)} blocks", attribute.line,
                             attribute.column)
        for block in file.body.blocks:
            if block.type not in TOP_LEVEL_BLOCKS:
                raise file.error(f'unknown block or attribute "{block.type}"'
                                 f"{suggest(block.type, TOP_LEVEL_BLOCKS)}", block.line,
                                 block.column)
            if block.type in ("buildr", "locals") and block.labels:
                raise file.error(f"a {block.type} block has no labels: write {block.type} "
                                 "{ ... }", block.line, block.column)

    def _collect_locals(self, file: HclFile) -> None:
        for block in file.body.blocks_of("locals"):
            if block.blocks:
                inner = block.blocks[0]
                raise file.error(f'locals hold only NAME = value, not a "{inner.type}" block',
                                 inner.line, inner.column)
            for name, attribute in block.attributes.items():
                if name in self.locals:
                    first, first_attribute = self.locals[name]
                    raise file.error(f'local "{name}" is defined twice (first at '
                                     f"{first.display}:{first_attribute.line}): rename one",
                                     attribute.line, attribute.column)
                self.locals[name] = (file, attribute)

    def _declare_modules(self, file: HclFile) -> None:
        for block in file.body.blocks:
            if block.type not in CATEGORIES:
                continue
            if len(block.labels) != 2:
                raise file.error(f'a {block.type} block needs a type and a name: '
                                 f'{block.type} "script" "NAME" {{ ... }}', block.line,
                                 block.column)
            type_name, name = block.labels
            self._check_type(file, block, type_name)
            if not MODULE_NAME.match(name):
                raise file.error(f'{block.type} name "{name}" must start with a letter or digit '
                                 'and hold only letters, digits, ".", "_" and "-"',
                                 *block.label_positions[1])
            if name in self.declared:
                raise self._duplicate(file, block, name)
            self.declared[name] = _Declared(file, block, block.type, type_name, name)

    def _check_type(self, file: HclFile, block: Block, type_name: str) -> None:
        if (block.type, type_name) in self.module_types:
            return
        known = tuple(sorted(name for category, name in self.module_types
                             if category == block.type))
        listing = ", ".join(known) if known else "none"
        raise file.error(f'unknown {block.type} type "{type_name}"{suggest(type_name, known)}; '
                         f"known {block.type} types: {listing} (a plugin may provide more: "
                         f"buildr-podman plugins lists them){where_to_get(type_name)}",
                         *block.label_positions[0])

    def _duplicate(self, file: HclFile, block: Block, name: str) -> ConfigError:
        first = self.declared[name]
        if first.category == block.type:
            message = f'{block.type} "{name}" is defined twice (first at {first.where}): rename one'
        else:
            message = (f'the name "{name}" is used twice (first by {first.title} at '
                       f"{first.where}): module names must be unique across "
                       f"{', '.join(CATEGORIES)}")
        return file.error(message, *block.label_positions[1])

    # -- the buildr block and locals ---------------------------------------------------------

    def _read_out_dir(self) -> str:
        blocks = [(file, block) for file in self.files for block in file.body.blocks_of("buildr")]
        if len(blocks) > 1:
            file, block = blocks[1]
            first_file, first = blocks[0]
            raise file.error(f"a second buildr block (first at {first_file.display}:"
                             f"{first.line}): keep one", block.line, block.column)
        if not blocks:
            return DEFAULT_OUT_DIR
        file, block = blocks[0]
        check_names(file, block, BUILDR_ATTRS, BUILDR_BLOCKS, "buildr block")
        attribute = block.attributes.get("out_dir")
        if attribute is None:
            return DEFAULT_OUT_DIR
        refs: set[str] = set()
        value = self._evaluate(file, attribute, refs, host_paths=True)
        if refs or not isinstance(value, str) or not value.strip():
            raise file.error_at('out_dir must be a directory, relative to the repository root '
                                'like ".buildr/out", or absolute: outputs may live outside the '
                                "repository", attribute)
        # Outside the repository is fine: outputs are never inputs (podman/pods.hidden_out_dir).
        root = self.root.resolve()
        out_dir = Path(os.path.normpath(root / value))
        if out_dir in root.parents:
            raise file.error_at(f'out_dir "{value}" would hold the repository itself: pick a '
                                'directory of its own, like ".buildr/out"', attribute)
        why = _unsafe_out_dir(PurePosixPath(out_dir.relative_to(root).as_posix())) \
            if out_dir.is_relative_to(root) else None
        if why:
            raise file.error_at(f'out_dir "{value}" {why}: tasks\' outputs replace whole '
                                'directories there; use a directory of its own, like '
                                '".buildr/out"', attribute)
        return value if PurePosixPath(value).is_absolute() else PurePosixPath(value).as_posix()

    def _read_max_return(self) -> int | None:
        """`max_return_size`: what one task's archive may expand to (a bomb stops there)."""
        found = [(file, block.attributes["max_return_size"]) for file in self.files
                 for block in file.body.blocks_of("buildr")
                 if "max_return_size" in block.attributes]
        if not found:
            return None
        file, attribute = found[0]
        value = self._evaluate(file, attribute, set())
        size = parse_size(str(value)) if isinstance(value, (str, int)) else None
        if not size:
            raise file.error_at('max_return_size must be a size with an optional unit, like '
                                f'"10g" or "512m", not {describe(value)}', attribute)
        return size

    def _read_max_entries(self) -> int | None:
        """`max_return_entries`: how many files, directories and symlinks one task's archive
        may hold (empty ones cost no bytes, but an inode and time each)."""
        found = [(file, block.attributes["max_return_entries"]) for file in self.files
                 for block in file.body.blocks_of("buildr")
                 if "max_return_entries" in block.attributes]
        if not found:
            return None
        file, attribute = found[0]
        value = self._evaluate(file, attribute, set())
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise file.error_at("max_return_entries must be a whole number of at least 1, "
                                f"like 1000000, not {describe(value)}", attribute)
        return value

    def _read_cache(self) -> tuple[int | None, RemoteCacheSettings | None]:
        """`buildr { cache { max_size = "10g"  remote = "..."  upload = false } }`: the bound
        of the local task cache, and the remote one."""
        found = self._buildr_block("cache", CACHE_ATTRS)
        if found is None:
            return None, None
        file, block = found
        return self._read_cache_size(file, block), self._read_remote(file, block)

    def _buildr_block(self, kind: str, names: tuple[str, ...]) -> tuple[HclFile, Block] | None:
        """The one `buildr { KIND { ... } }` block of the project, its attribute names
        checked; None without one. A second one is an error naming both."""
        blocks = [(file, inner) for file in self.files for block in file.body.blocks_of("buildr")
                  for inner in block.blocks_of(kind)]
        if not blocks:
            return None
        file, block = blocks[0]
        if len(blocks) > 1:
            second_file, second = blocks[1]
            raise second_file.error(f"a second {kind} block (first at {file.display}:"
                                    f"{block.line}): keep one", second.line, second.column)
        check_names(file, block, names, (), f"{kind} block")
        return file, block

    def _read_cache_size(self, file: HclFile, block: Block) -> int | None:
        attribute = block.attributes.get("max_size")
        if attribute is None:
            return None
        value = self._evaluate(file, attribute, set())
        size = parse_size(str(value)) if isinstance(value, (str, int)) else None
        if not size:
            raise file.error_at('max_size must be a size with an optional unit, like "10g" or '
                                f'"512m", not {describe(value)}', attribute)
        return size

    def _read_remote(self, file: HclFile, block: Block) -> RemoteCacheSettings | None:
        values = {name: self._evaluate(file, attribute, set())
                  for name, attribute in block.attributes.items() if name != "max_size"}
        attribute = block.attributes.get("remote")
        if attribute is None:
            for name in ("upload", "instance_name"):
                if name in block.attributes:
                    raise file.error(f"{name} needs remote = \"grpc://HOST:PORT\" or "
                                     "\"unix:PATH\" in the same cache block",
                                     block.attributes[name].line, block.attributes[name].column)
            return None
        url = expect_string(file, attribute, values["remote"])
        try:
            target = parse_remote(url, self.root)
        except ValueError as exc:
            raise file.error_at(f"remote: {exc}", attribute) from exc
        upload = (self._upload(file, block.attributes["upload"], values["upload"])
                  if "upload" in values else False)
        instance = (expect_string(file, block.attributes["instance_name"],
                                  values["instance_name"]) if "instance_name" in values else "")
        return RemoteCacheSettings(url, target, upload, instance)

    def _read_remote_execution(self) -> RemoteExecutionSettings | None:
        """`buildr { remote { execution = "grpc://HOST:PORT"  instance_name = "..." } }`: the
        REAPI server the tasks run on (remote_execution/)."""
        found = self._buildr_block("remote", REMOTE_ATTRS)
        if found is None:
            return None
        file, block = found
        attribute = block.attributes.get("execution")
        if attribute is None:
            raise file.error('the remote block needs execution = "grpc://HOST:PORT" or '
                             '"unix:PATH"', block.line, block.column)
        url = expect_string(file, attribute, self._evaluate(file, attribute, set()))
        instance = block.attributes.get("instance_name")
        name = (expect_string(file, instance, self._evaluate(file, instance, set()))
                if instance is not None else "")
        try:
            return execution_settings(url, self.root, name)
        except ValueError as exc:
            raise file.error_at(f"execution: {exc}", attribute) from exc

    def _upload(self, file: HclFile, attribute: Attribute, value: Any) -> bool:
        """true or false, or the same as text: `upload = env("BUILDR_CACHE_UPLOAD", "false")`
        lets CI upload with the configuration file every machine shares (it is an input of
        the tasks: a per-machine edit would change their keys)."""
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise file.error_at(f'upload must be true or false (or "true"/"false", as from '
                                f'env("NAME", "false")), not {describe(value)}', attribute)
        return value

    def _read_default(self) -> tuple[str, ...]:
        """`buildr { default = [...] }`: what `run` with no names runs."""
        found = [(file, block) for file in self.files for block in file.body.blocks_of("buildr")
                 if "default" in block.attributes]
        if not found:
            return ()
        file, block = found[0]
        attribute = block.attributes["default"]
        items = self._evaluate(file, attribute, set())
        if not isinstance(items, list) or not items:
            raise file.error_at('default must be a list of module names, like ["test"], not '
                                f"{describe(items)}", attribute)
        names = []
        for item in items:
            name = item.name if isinstance(item, ModuleRef) else item
            if not isinstance(name, str) or name not in self.declared:
                shown = name if isinstance(name, str) else describe(item)
                raise file.error_at(f'default names "{shown}", which is not a module'
                                    f"{suggest(str(shown), tuple(self.declared))}", attribute,
                                    near=f'"{shown}"')
            names.append(name)
        return tuple(dict.fromkeys(names))

    def _scope(self, host_paths: bool = False) -> Scope:
        """What expressions see. A module's out dir is where the container shows it, except
        in a bind_mount source (host_paths), which names a host path: the project's out dir."""
        modules = {name: declared.category for name, declared in self.declared.items()}
        return Scope(environ=self.environ, modules=modules,
                     out_dir=self.out_dir_rel if host_paths else DEPENDENCY_OUTPUTS,
                     local=partial(self._local, host_paths=host_paths))

    def _local(self, name: str, refs: set[str], host_paths: bool = False) -> Any:
        if name not in self.locals:
            hint = suggest(name, tuple(self.locals))
            raise InterpolationError(f'no local value named "{name}"{hint}', f"local.{name}")
        if (name, host_paths) in self._local_values:
            value, local_refs = self._local_values[(name, host_paths)]
            refs |= local_refs
            return value
        if name in self._local_stack:
            loop = " -> ".join([*self._local_stack[self._local_stack.index(name):], name])
            raise InterpolationError(f"local values refer to each other in a loop: {loop}",
                                     f"local.{name}")
        file, attribute = self.locals[name]
        own_refs: set[str] = set()
        self._local_stack.append(name)
        try:
            value = self._evaluate(file, attribute, own_refs, prefix=f"local.{name}",
                                   host_paths=host_paths)
        finally:
            self._local_stack.pop()
        if self.out_dir_rel != _OUT_DIR_PLACEHOLDER or not own_refs:
            self._local_values[(name, host_paths)] = (value, frozenset(own_refs))
        refs |= own_refs
        return value

    def _evaluate(self, file: HclFile, attribute: Attribute, refs: set[str],
                  prefix: str | None = None, host_paths: bool = False) -> Any:
        try:
            return evaluate(attribute.value, self._scope(host_paths), refs)
        except InterpolationError as exc:
            error = file.error_at(f"{prefix or attribute.name}: {exc.message}", attribute,
                                  near=exc.expression)
            if isinstance(exc, UnsetVariable):
                error = _NotReady(error.message, error.path, error.line, error.column)
            raise error from None

    # -- second pass: each module --------------------------------------------------------------

    def _read_module(self, declared: _Declared) -> Task:
        from buildr_podman.config_container import read_container

        file, block = declared.file, declared.block
        module_type = self.module_types[(declared.category, declared.type_name)]
        own = tuple(module_type.attributes)
        check_names(file, block, (*MODULE_ATTRS, *own), ("container",), declared.title)
        refs: set[str] = set()
        values = {name: self._evaluate(file, attribute, refs)
                  for name, attribute in block.attributes.items()}
        for name, value in values.items():
            if name in own:
                expect_kind(file, block.attributes[name], value, module_type.attributes[name])
        container = read_container(file, block, declared.title, self._evaluate, self.root,
                                   refs, partial(self._evaluate, host_paths=True))
        inputs_from = self._inputs_from(declared, values)
        if declared.name in refs or declared.name in inputs_from:
            raise file.error(f"{declared.title} refers to its own out dir: a module cannot use "
                             "what it is about to produce", block.line, block.column)
        return Task(
            name=declared.name,
            module_type=declared.type_name,
            category=declared.category,
            container=container,
            script=self._expand(declared, module_type, values),
            shell=self._shell(file, block, values),
            environment=tuple(self._map(file, block, values, "environment").items()),
            secret_environment=self._secrets(file, block, values),
            input_mapping=self._input_mapping(file, block, values),
            working_dir=self._working_dir(file, block, values),
            depends_on=self._depends_on(declared, values, refs | set(inputs_from)),
            inputs_from=inputs_from,
            outputs_used=tuple(sorted(refs | set(inputs_from))),
            timeout_seconds=self._timeout(file, block, values),
            write_back=self._bool(file, block, values, "write_back"),
            continue_on_error=self._bool(file, block, values, "continue_on_error"),
            cache=self._bool(file, block, values, "cache", default=True),
            cache_secrets=self._bool(file, block, values, "cache_secrets"),
            source=declared.where,
            spec=module_type.spec({k: v for k, v in values.items() if k in own}),
            max_return_bytes=self.max_return_bytes,
            max_return_entries=self.max_return_entries,
        )

    def _expand(self, declared: _Declared, module_type: ModuleType,
                values: dict[str, Any]) -> str:
        file, block = declared.file, declared.block
        given = {k: v for k, v in values.items() if k in module_type.attributes}
        for name in module_type.required:
            if given.get(name) is None and module_type.defaults.get(name) is None:
                raise file.error(f'{declared.title} needs {name} = ... (its type '
                                 f'"{module_type.name}" requires it)', block.line, block.column)
        try:
            script = module_type.expand(module_type.spec(given))
        except ModuleSpecError as exc:
            attribute = block.attributes.get(exc.attribute or "")
            if attribute is None:
                raise file.error(f"{declared.title} {exc.message}", block.line,
                                 block.column) from None
            raise file.error_at(f"{declared.title}: {exc.message}", attribute) from None
        if not isinstance(script, str):
            raise ConfigError(f'the plugin of {declared.category} type "{module_type.name}" '
                              f"expanded {declared.title} to {describe(script)}, not a script")
        return script

    def _shell(self, file: HclFile, block: Block, values: dict[str, Any]) -> str:
        shell = self._string(file, block, values, "shell", DEFAULT_SHELL)
        if not shell.strip():
            raise file.error_at('shell must name a program, like "/bin/sh"',
                                block.attributes["shell"])
        return shell

    def _string(self, file: HclFile, block: Block, values: dict[str, Any], key: str,
                default: str) -> str:
        if key not in values:
            return default
        return expect_string(file, block.attributes[key], values[key])

    def _bool(self, file: HclFile, block: Block, values: dict[str, Any], key: str,
              default: bool = False) -> bool:
        if key not in values:
            return default
        return expect_bool(file, block.attributes[key], values[key])

    def _map(self, file: HclFile, block: Block, values: dict[str, Any],
             key: str) -> dict[str, str]:
        if key not in values:
            return {}
        if key in ("environment", "secret_environment"):
            return expect_environment(file, block.attributes[key], values[key])
        return expect_string_map(file, block.attributes[key], values[key])

    def _secrets(self, file: HclFile, block: Block,
                 values: dict[str, Any]) -> tuple[tuple[str, str], ...]:
        """`secret_environment`: like environment, but its values are never shown."""
        secrets = self._map(file, block, values, "secret_environment")
        environment = self._map(file, block, values, "environment")
        for name in secrets:
            if name in environment:
                raise file.error_at(f'"{name}" is in both environment and secret_environment: '
                                    "keep it in secret_environment only",
                                    block.attributes["secret_environment"], near=name)
        return tuple(secrets.items())

    def _working_dir(self, file: HclFile, block: Block, values: dict[str, Any]) -> str:
        value = self._string(file, block, values, "working_dir", ".")
        pure = PurePosixPath(value)
        if pure.is_absolute() or ".." in pure.parts:
            raise file.error_at('working_dir must be relative to the workspace, like "." or '
                                '"src"', block.attributes["working_dir"])
        return value

    def _input_mapping(self, file: HclFile, block: Block,
                       values: dict[str, Any]) -> tuple[tuple[str, str], ...]:
        mapping = self._map(file, block, values, "input_mapping")
        normalized: dict[str, str] = {}  # target: source
        for key, value in mapping.items():
            for path in (key, value):
                pure = PurePosixPath(path)
                if pure.is_absolute() or ".." in pure.parts:
                    raise file.error_at(f'input_mapping "{key}" = "{value}": both sides must be '
                                        "relative paths without ..",
                                        block.attributes["input_mapping"], near=key)
            # One spelling for every consumer: "./src/" is "src", "" is "." (the root).
            target = PurePosixPath(value).as_posix()
            if target in normalized:
                raise file.error_at(f'input_mapping: "{normalized[target]}" and "{key}" both go '
                                    f'to "{value}": give each its own place',
                                    block.attributes["input_mapping"], near=key)
            normalized[target] = PurePosixPath(key).as_posix()
        return tuple((source, target) for target, source in normalized.items())

    def _timeout(self, file: HclFile, block: Block, values: dict[str, Any]) -> float | None:
        if "timeout" not in values:
            return None
        value = values["timeout"]
        seconds = parse_duration(value) if isinstance(value, str) else None
        if not seconds:
            raise file.error_at(f'timeout must be a duration like "90s", "10m" or "1h30m", '
                                f"not {describe(value)}", block.attributes["timeout"])
        return seconds

    def _depends_on(self, declared: _Declared, values: dict[str, Any],
                    refs: set[str]) -> tuple[str, ...]:
        file, block = declared.file, declared.block
        names: list[str] = []
        if "depends_on" in values:
            attribute = block.attributes["depends_on"]
            items = values["depends_on"]
            if not isinstance(items, list):
                raise file.error_at('depends_on must be a list of module names, like '
                                    f'["lib", build.tools], not {describe(items)}', attribute)
            for item in items:
                names.append(self._dependency(declared, attribute, item))
        # Using another module's out dir means needing it first, as in Terraform.
        names += sorted(refs - set(names))
        return tuple(dict.fromkeys(names))

    def _inputs_from(self, declared: _Declared, values: dict[str, Any]) -> tuple[str, ...]:
        """`inputs_from`: modules whose outputs of this run are laid over the inputs, in order."""
        if "inputs_from" not in values:
            return ()
        file, attribute = declared.file, declared.block.attributes["inputs_from"]
        items = values["inputs_from"]
        if not isinstance(items, list):
            raise file.error_at('inputs_from must be a list of module names, like '
                                f'["configure", build.lib], not {describe(items)}', attribute)
        names = [self._dependency(declared, attribute, item) for item in items]
        for name in names:
            if names.count(name) > 1:
                raise file.error_at(f'inputs_from names "{name}" twice: name each module once',
                                    attribute, near=name)
        return tuple(names)

    def _dependency(self, declared: _Declared, attribute: Attribute, item: Any) -> str:
        file = declared.file
        if isinstance(item, ModuleRef):
            return item.name
        if not isinstance(item, str):
            raise file.error_at(f"depends_on holds {describe(item)}: list module names, like "
                                '["lib"] or [build.lib]', attribute)
        if item not in self.declared:
            raise file.error_at(f'{declared.title} depends on "{item}", which is not a module'
                                f"{suggest(item, tuple(self.declared))}; modules: "
                                f"{', '.join(sorted(self.declared))}", attribute,
                                near=f'"{item}"')
        return item

    def _check_cycles(self, tasks: dict[str, Task]) -> None:
        cycle = find_cycle({name: task.depends_on for name, task in tasks.items()})
        if cycle is None:
            return
        first = self.declared[cycle[0]]
        file, block = first.file, first.block
        attribute = block.attributes.get("depends_on")
        message = (f"dependency cycle: {' -> '.join(cycle)}: remove one of these dependencies "
                   "(depends_on, or a use of another module's out_dir)")
        if attribute is not None:
            raise file.error_at(message, attribute, near=cycle[1])
        raise file.error(message, block.line, block.column)

