"""Reads a module's `container { ... }` block: image, identity, network, capabilities, mounts."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from buildr_podman.config_values import (
    check_names,
    describe,
    expect_bool,
    expect_choice,
    expect_environment,
    expect_string,
    expect_string_list,
    suggest,
)
from buildr_podman.hcl import Attribute, Block, HclFile
from buildr_podman.model import WORKSPACE, BindMount, ContainerSpec, TmpfsMount

__all__ = ["CAPABILITIES", "read_container"]

CONTAINER_ATTRS = ("image", "user", "network", "environment", "privileged", "inputs",
                   "pids_limit", "memory")
CONTAINER_BLOCKS = ("capabilities", "bind_mount", "tmpfs_mount", "cache_volume")
#: the values of `network` and of `inputs`, each with what it means; the first is the default
NETWORKS = {"none": "", "private": "a network of the pod's own"}
INPUTS = {"mount": "the repository under a copy-on-write overlay",
          "copy": "copied in, for file systems Podman cannot overlay"}
USER_SPEC = re.compile(r"^\d+(:\d+)?$")
# An image reference as Podman parses it (the grammar of containers/image's reference
# package): an optional registry (host[:port]/), path components in lowercase, then a tag
# and/or a digest. Podman refused anything else only when the pod was created.
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_REFERENCE = re.compile(
    rf"^(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*(?::[0-9]+)?/)?{_PATH_PART}(?:/{_PATH_PART})*"
    r"(?::[\w][\w.-]{0,127})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:"
    r"[0-9a-fA-F]{32,})?$")
TMPFS_SIZE = re.compile(r"^\d+[kmgKMG]?$|^\d+%$")
MEMORY = re.compile(r"^[1-9]\d*[kmgKMG]$")
#: capabilities(7), without the CAP_ prefix; "ALL" is allowed too
CAPABILITIES = (
    "AUDIT_CONTROL", "AUDIT_READ", "AUDIT_WRITE", "BLOCK_SUSPEND", "BPF", "CHECKPOINT_RESTORE",
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "IPC_LOCK", "IPC_OWNER",
    "KILL", "LEASE", "LINUX_IMMUTABLE", "MAC_ADMIN", "MAC_OVERRIDE", "MKNOD", "NET_ADMIN",
    "NET_BIND_SERVICE", "NET_BROADCAST", "NET_RAW", "PERFMON", "SETFCAP", "SETGID", "SETPCAP",
    "SETUID", "SYSLOG", "SYS_ADMIN", "SYS_BOOT", "SYS_CHROOT", "SYS_MODULE", "SYS_NICE",
    "SYS_PACCT", "SYS_PTRACE", "SYS_RAWIO", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG",
    "WAKE_ALARM",
)
#: container paths the host owns: the workspace overlay and the agent's mounts
RESERVED_TARGETS = (WORKSPACE, "/.buildr")

Evaluate = Callable[[HclFile, Attribute, set[str]], Any]


def read_container(file: HclFile, module: Block, title: str, evaluate: Evaluate, root: Path,
                   module_refs: set[str], evaluate_host: Evaluate | None = None) -> ContainerSpec:
    """The module's one container block; module out dirs it refers to go into `module_refs`.
    A bind_mount source is a host path: `evaluate_host` reads it, with a module's out dir as
    the host's."""
    blocks = module.blocks_of("container")
    if len(blocks) != 1:
        where = blocks[1] if len(blocks) > 1 else module
        raise file.error(f'{title} needs exactly one container {{ image = "..." }} block',
                         where.line, where.column)
    block = blocks[0]
    check_names(file, block, CONTAINER_ATTRS, CONTAINER_BLOCKS, "container block")
    values = {name: evaluate(file, attribute, module_refs)
              for name, attribute in block.attributes.items()}
    attrs = block.attributes
    image = values.get("image")
    if not isinstance(image, str) or not image.strip():
        message = (f'{title}: container needs image = "NAME:TAG", like '
                   '"localhost/buildr-gcc:bookworm"')
        if "image" in attrs:
            raise file.error_at(message + f", not {describe(image)}", attrs["image"])
        raise file.error(message, block.line, block.column)
    if not IMAGE_REFERENCE.match(image):
        raise file.error_at(f"{title}: image {image!r} is not a name Podman accepts: write "
                            "[REGISTRY/]NAME[:TAG] or NAME@sha256:DIGEST, the name in lowercase, "
                            'like "localhost/buildr-gcc:bookworm"', attrs["image"])
    cap_add, cap_drop = _capabilities(file, block, title, evaluate, module_refs)
    binds = [_bind_mount(file, inner, title, evaluate, evaluate_host or evaluate, root,
                         module_refs)
             for inner in block.blocks_of("bind_mount")]
    tmpfs = [_tmpfs_mount(file, inner, title, evaluate, module_refs)
             for inner in block.blocks_of("tmpfs_mount")]
    caches = [_cache_volume(file, inner, title, evaluate, module_refs)
              for inner in block.blocks_of("cache_volume")]
    _check_unique_targets(file, block, title, [m.target for m in binds + tmpfs] + caches)
    return ContainerSpec(
        image=image,
        user=_user(file, attrs, values, title),
        network=_choice(file, attrs, values, "network", NETWORKS),
        inputs=_choice(file, attrs, values, "inputs", INPUTS),
        cap_add=cap_add,
        cap_drop=cap_drop,
        bind_mounts=tuple(binds),
        tmpfs_mounts=tuple(tmpfs),
        cache_volumes=tuple(caches),
        environment=tuple(expect_environment(file, attrs["environment"], values["environment"])
                          .items()) if "environment" in values else (),
        privileged=expect_bool(file, attrs["privileged"], values["privileged"])
        if "privileged" in values else False,
        pids_limit=_pids_limit(file, attrs, values),
        memory=_memory(file, attrs, values),
        image_source=f"{file.display}:{attrs['image'].value_line}:{attrs['image'].value_column}",
    )


def _user(file: HclFile, attrs: dict[str, Attribute], values: dict[str, Any],
          title: str) -> str | None:
    if "user" not in values:
        return None
    user = values["user"]
    if not (isinstance(user, str) and USER_SPEC.match(user)):
        raise file.error_at(f'{title}: container user must be "UID" or "UID:GID", like '
                            f'"1000:1000", not {describe(user)}', attrs["user"])
    return user


def _pids_limit(file: HclFile, attrs: dict[str, Attribute], values: dict[str, Any]) -> int:
    if "pids_limit" not in values:
        return ContainerSpec.pids_limit
    value = values["pids_limit"]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or 0 < value < 16:
        raise file.error_at("pids_limit must be a whole number of processes, at least 16 (or 0 "
                            f"for no limit), like 4096, not {describe(value)}",
                            attrs["pids_limit"])
    return value


def _memory(file: HclFile, attrs: dict[str, Attribute], values: dict[str, Any]) -> str:
    if "memory" not in values:
        return ""
    value = values["memory"]
    if not isinstance(value, str) or not (value == "none" or MEMORY.match(value)):
        raise file.error_at('memory must be a size with a unit, like "512m" or "4g" (or "none" '
                            f"for no limit), not {describe(value)}", attrs["memory"])
    return value.lower()


def _choice(file: HclFile, attrs: dict[str, Attribute], values: dict[str, Any], name: str,
            choices: dict[str, str]) -> str:
    if name not in values:
        return next(iter(choices))
    return expect_choice(file, attrs[name], values[name], choices)


def _capabilities(file: HclFile, container: Block, title: str, evaluate: Evaluate,
                  refs: set[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    blocks = container.blocks_of("capabilities")
    if not blocks:
        return (), ()
    if len(blocks) > 1:
        raise file.error(f"{title}: one capabilities block holds both add and drop",
                         blocks[1].line, blocks[1].column)
    block = blocks[0]
    check_names(file, block, ("add", "drop"), (), "capabilities block")
    result: list[tuple[str, ...]] = []
    for key in ("add", "drop"):
        attribute = block.attributes.get(key)
        if attribute is None:
            result.append(())
            continue
        names = expect_string_list(file, attribute, evaluate(file, attribute, refs))
        result.append(tuple(_capability(file, attribute, name) for name in names))
    return result[0], result[1]


def _capability(file: HclFile, attribute: Attribute, name: str) -> str:
    bare = name.upper().removeprefix("CAP_")
    if bare != "ALL" and bare not in CAPABILITIES:
        raise file.error_at(f'unknown capability "{name}"{suggest(bare, CAPABILITIES)}: see '
                            'capabilities(7); write it like "NET_ADMIN" (or "ALL")', attribute,
                            near=f'"{name}"')
    return bare


def _bind_mount(file: HclFile, block: Block, title: str, evaluate: Evaluate,
                evaluate_host: Evaluate, root: Path, module_refs: set[str]) -> BindMount:
    check_names(file, block, ("source", "target", "read_only"), (), "bind_mount block")
    for required in ("source", "target"):
        if required not in block.attributes:
            raise file.error(f'{title}: bind_mount needs {required} = "..."', block.line,
                             block.column)
    source_attribute = block.attributes["source"]
    own_refs: set[str] = set()
    source = expect_string(file, source_attribute,
                           evaluate_host(file, source_attribute, own_refs))
    module_refs |= own_refs
    path = Path(os.path.normpath(root / source))
    # A module's out dir appears when that module (now a dependency) has run.
    if not own_refs and not path.exists():
        raise file.error_at(f'bind_mount source "{source}" does not exist ({path}): create it, '
                            "or fix the path (relative paths start at the repository root)",
                            source_attribute)
    target = _target(file, block, title, evaluate, module_refs)
    read_only = False
    if "read_only" in block.attributes:
        attribute = block.attributes["read_only"]
        read_only = expect_bool(file, attribute, evaluate(file, attribute, module_refs))
    return BindMount(source=path, target=target, read_only=read_only)


def _tmpfs_mount(file: HclFile, block: Block, title: str, evaluate: Evaluate,
                 refs: set[str]) -> TmpfsMount:
    check_names(file, block, ("target", "size"), (), "tmpfs_mount block")
    if "target" not in block.attributes:
        raise file.error(f'{title}: tmpfs_mount needs target = "/path"', block.line,
                         block.column)
    target = _target(file, block, title, evaluate, refs)
    size = None
    if "size" in block.attributes:
        attribute = block.attributes["size"]
        value = evaluate(file, attribute, refs)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not TMPFS_SIZE.match(value):
            raise file.error_at(f'tmpfs_mount size must be bytes with an optional unit, like '
                                f'"64m" or "1g" (or a percentage of memory, "10%"), not '
                                f"{describe(value)}", attribute)
        if not int(value.rstrip("kmgKMG%")):
            raise file.error_at(f'tmpfs_mount size "{value}" would be no limit at all (tmpfs '
                                'reads a size of 0 as unlimited): give a size like "64m", or '
                                "leave size out for Podman's default", attribute)
        size = value
    return TmpfsMount(target=target, size=size)


def _cache_volume(file: HclFile, block: Block, title: str, evaluate: Evaluate,
                  refs: set[str]) -> str:
    check_names(file, block, ("target",), (), "cache_volume block")
    if "target" not in block.attributes:
        raise file.error(f'{title}: cache_volume needs target = "/path", like '
                         '"/root/.ccache"', block.line, block.column)
    return _target(file, block, title, evaluate, refs)


def _target(file: HclFile, block: Block, title: str, evaluate: Evaluate,
            refs: set[str]) -> str:
    attribute = block.attributes["target"]
    value = expect_string(file, attribute, evaluate(file, attribute, refs))
    pure = PurePosixPath(value)
    if not pure.is_absolute() or ".." in pure.parts:
        raise file.error_at(f'{block.type} target must be an absolute path in the container, '
                            f'like "/deps", not {describe(value)}', attribute)
    target = os.path.normpath(value)
    if target == "/" or any(target == r or target.startswith(r + "/") for r in RESERVED_TARGETS):
        raise file.error_at(f'{block.type} target "{value}" is taken: / , {WORKSPACE} (the '
                            "copy-on-write view of the repository) and /.buildr (the agent) "
                            'cannot be mount targets; pick another path, like "/deps"', attribute)
    return target


def _check_unique_targets(file: HclFile, block: Block, title: str, targets: list[str]) -> None:
    seen: set[str] = set()
    for target in targets:
        if target in seen:
            first = file.find(f'"{target}"', block.line, block.column)
            second = first and file.find(f'"{target}"', first[0], first[1] + 1)
            where = second or (block.line, block.column)
            raise file.error(f'{title}: two mounts have target "{target}": give each its own',
                             *where)
        seen.add(target)
