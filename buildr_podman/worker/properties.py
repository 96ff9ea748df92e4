"""A leased Action as the project's Task: what the worker runs, or why it refuses to.

The Action is the one cache/key.py builds for a task (its docstring names the platform
properties and the input root's layout). Every property is read here; one the worker does not
understand, or a value it cannot honour, refuses the lease with a clear message (Refused):
guessing would run something else than what the key says ran.

An Action without `buildr.version` is another client's (Bazel, ...): its whole input root is
the workspace, its Command's working_directory is relative to it, and its result lists the
outputs the Command declares (outputs.py) instead of the change set.

Understood besides cache/key.py's own: `unixUID`, `unixGID` (the task's user; they must agree
with `dockerUser` when both are given) and `Pool` (the scheduler's business only). The values
the issue's conventions use elsewhere are accepted as well: `dockerNetwork` `off` (= `none`)
and `standard` or `bridge` (= `private`), `container-image` `docker://REF` (a local image of
that name; the worker never pulls).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from buildr_podman._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from buildr_podman.cache import key
from buildr_podman.config_container import CAPABILITIES, MEMORY, TMPFS_SIZE, USER_SPEC
from buildr_podman.model import DEFAULT_SHELL, ContainerSpec, Task, TmpfsMount

__all__ = ["MATCH_KEYS", "UNDERSTOOD", "LeasedTask", "Refused", "task_of", "worker_properties"]

OUTPUTS_DIR = key.OUTPUTS_DIR  #: ".buildr/out": the dependency outputs in the input root
WORKSPACE_DIR = key.WORKSPACE_DIR  #: "workspace"
UNIX_UID, UNIX_GID, POOL = "unixUID", "unixGID", "Pool"

#: what a worker's bot session says of it; a scheduler routes an Action only to a worker whose
#: values of these equal the Action's (BuildGrid: match-property-keys)
MATCH_KEYS = (key.OS_FAMILY, key.ISA, key.VERSION, key.AGENT_PROTOCOL)
#: every platform property a worker understands (BuildGrid: the others are wildcard keys)
UNDERSTOOD = (*key.PROPERTY_NAMES, UNIX_UID, UNIX_GID, POOL)

NETWORKS = {"none": "none", "off": "none", "": "none",
            "private": "private", "standard": "private", "bridge": "private"}
MODULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class Refused(Exception):
    """The worker will not run this Action; the message says why, for the client."""


@dataclass(frozen=True)
class LeasedTask:
    """The Task to run and where its inputs come from in the input root."""

    task: Task
    image: str  #: the local image the pod runs (an id, or a name for docker://)
    dependencies: tuple[str, ...]  #: the modules under .buildr/out/ in the input root
    #: where the workspace is in the input root: "workspace" (buildr-podman's), "" (another
    #: client's Action: its input root is the workspace)
    workspace: str = WORKSPACE_DIR
    #: another client's declared outputs: (as declared, relative to the workspace root);
    #: None for buildr-podman's own Action (its result is the change set)
    outputs: tuple[tuple[str, str], ...] | None = None


def worker_properties() -> dict[str, str]:
    """What this worker says of itself in its bot session (MATCH_KEYS)."""
    return key.host_identity()


def task_of(action_hash: str, action: re_pb2.Action, command: re_pb2.Command,
            directories: Mapping[str, re_pb2.Directory]) -> LeasedTask:
    """The Task the Action describes; `directories` are the input root's Directory messages
    by hash (which dependency outputs it brings: those under .buildr/out/). Raises Refused."""
    properties = _properties(action, command)
    unknown = sorted(set(properties) - set(UNDERSTOOD))
    if unknown:
        raise Refused(f"platform properties this worker does not understand: "
                      f"{', '.join(unknown)} (it understands {', '.join(UNDERSTOOD)})")
    _check_own(properties)
    own = key.VERSION in properties  # else another client's: REAPI's own outputs
    dependencies = _dependencies(action.input_root_digest.hash, directories) if own else ()
    layers = _list(properties.get(key.LAYERS, ""))
    missing = [name for name in layers if name not in dependencies]
    if missing:
        raise Refused(f"{key.LAYERS} names {', '.join(missing)}, which the input root does "
                      f"not hold under {OUTPUTS_DIR}/")
    image = _image(properties.get(key.IMAGE, ""))
    container = ContainerSpec(
        image=image, user=_user(properties), network=_network(properties),
        inputs="copy",  # the materialised tree is the worker's own: nothing to overlay
        cap_add=_capabilities(properties, key.ADD_CAPABILITIES),
        cap_drop=_capabilities(properties, key.DROP_CAPABILITIES),
        tmpfs_mounts=_tmpfs(properties.get(key.TMPFS, "")),
        privileged=_boolean(properties, key.PRIVILEGED),
        pids_limit=_integer(properties, key.PIDS_LIMIT, ContainerSpec.pids_limit),
        memory=_memory(properties.get(key.MEMORY, "")))
    shell, script = _shell_and_script(command.arguments)
    timeout = action.timeout.ToNanoseconds() / 1e9 if action.HasField("timeout") else 0.0
    working_dir = _working_dir(command.working_directory, own)
    task = Task(name=f"action-{action_hash[:12]}",
                module_type=properties.get(key.MODULE_TYPE) or "script",
                container=container, script=script, shell=shell,
                environment=tuple((v.name, v.value) for v in command.environment_variables),
                working_dir=working_dir, inputs_from=tuple(layers), outputs_used=dependencies,
                timeout_seconds=timeout or None)
    if own:
        return LeasedTask(task, image, dependencies)
    return LeasedTask(task, image, (), "", _declared_outputs(command, working_dir))


def _properties(action: re_pb2.Action, command: re_pb2.Command) -> dict[str, str]:
    """The Action's platform (REAPI 2.2), else the Command's (older clients put it there)."""
    platform = action.platform if action.platform.properties else command.platform
    found: dict[str, str] = {}
    for prop in platform.properties:
        if prop.name in found and found[prop.name] != prop.value:
            raise Refused(f"platform property {prop.name} is given twice, as "
                          f"{found[prop.name]!r} and {prop.value!r}")
        found[prop.name] = prop.value
    return found


def _check_own(properties: Mapping[str, str]) -> None:
    """What the Action's key says ran must be what runs here."""
    mine = worker_properties()
    for name in MATCH_KEYS:
        if name in properties and properties[name] != mine[name]:
            raise Refused(f"platform property {name} is {properties[name]!r}, this worker's "
                          f"is {mine[name]!r}")
    for name, why in ((key.BIND_MOUNTS, "bind mounts of the client's files"),
                      (key.SECRET_NAMES, "secrets (they never travel to a worker)")):
        if properties.get(name):
            raise Refused(f"the task needs {why} ({name}): it runs on the client's machine")
    for name in properties:
        if name.startswith(key.BIND_MOUNT_FILE):
            raise Refused(f"the task bind-mounts a file of the client's ({name}): it runs on "
                          "the client's machine")
    knobs = key.agent_environment()
    if properties.get(key.AGENT_ENVIRONMENT, "") != knobs:
        raise Refused(f"{key.AGENT_ENVIRONMENT} is {properties.get(key.AGENT_ENVIRONMENT, '')!r}"
                      f", this worker's agent runs with {knobs!r}")


def _dependencies(root_hash: str, directories: Mapping[str, re_pb2.Directory]
                  ) -> tuple[str, ...]:
    """The modules whose outputs the input root holds under .buildr/out/, checked: the root
    holds `workspace/` and `.buildr/out/` and nothing else (bind mounts run on the client)."""
    root = directories[root_hash]
    top, below = OUTPUTS_DIR.split("/")
    _only(root, {WORKSPACE_DIR, top}, "the input root")
    if WORKSPACE_DIR not in [d.name for d in root.directories]:
        raise Refused(f"the input root has no {WORKSPACE_DIR}/ directory")
    buildr = _child(root, top, directories)
    if buildr is None:
        return ()
    _only(buildr, {below}, f"{top}/ of the input root")
    outputs = _child(buildr, below, directories)
    if outputs is None:
        return ()
    if outputs.files or outputs.symlinks:
        raise Refused(f"{OUTPUTS_DIR}/ of the input root holds files: it holds one directory "
                      "per module")
    names = tuple(d.name for d in outputs.directories)
    bad = [n for n in names if not MODULE_NAME.match(n)]
    if bad:
        raise Refused(f"{OUTPUTS_DIR}/ of the input root holds {bad[0]!r}, not a module name")
    return names


def _only(directory: re_pb2.Directory, allowed: set[str], where: str) -> None:
    names = sorted([d.name for d in directory.directories] + [f.name for f in directory.files]
                   + [s.name for s in directory.symlinks])
    extra = [n for n in names if n not in allowed]
    if extra or any(f.name in allowed for f in directory.files) or \
            any(link.name in allowed for link in directory.symlinks):
        raise Refused(f"{where} holds {', '.join(extra) or 'files'} beside "
                      f"{', '.join(sorted(allowed))}: not the layout of a buildr-podman task "
                      "(see cache/key.py)")


def _child(directory: re_pb2.Directory, name: str,
           directories: Mapping[str, re_pb2.Directory]) -> re_pb2.Directory | None:
    for node in directory.directories:
        if node.name == name:
            return directories[node.digest.hash]
    return None


def _list(value: str) -> list[str]:
    return [item for item in value.split(",") if item]


def _image(value: str) -> str:
    if value.startswith(key.IMAGE_ID_SCHEME):
        image_id = value[len(key.IMAGE_ID_SCHEME):]
        if not re.fullmatch(r"(sha256:)?[0-9a-f]{64}", image_id):
            raise Refused(f"{key.IMAGE} {value!r}: not an image id after "
                          f"{key.IMAGE_ID_SCHEME}")
        return image_id.removeprefix("sha256:")
    if value.startswith("docker://") and len(value) > len("docker://"):
        return value[len("docker://"):]
    raise Refused(f"{key.IMAGE} is {value!r}: it must be {key.IMAGE_ID_SCHEME}<image id> or "
                  "docker://<image> (an image on the worker)" if value else
                  f"no {key.IMAGE} property: this worker runs every action in a container")


def _user(properties: Mapping[str, str]) -> str | None:
    user = properties.get(key.USER, "")
    if user and not USER_SPEC.match(user):
        raise Refused(f'{key.USER} is {user!r}: it must be "UID" or "UID:GID" (numbers)')
    uid, gid = properties.get(UNIX_UID), properties.get(UNIX_GID)
    if uid is None and gid is None:
        return user or None
    if uid is None or not uid.isdigit() or (gid is not None and not gid.isdigit()):
        raise Refused(f"{UNIX_UID} {uid!r} / {UNIX_GID} {gid!r}: both numbers, and "
                      f"{UNIX_GID} only with {UNIX_UID}")
    from_ids = uid if gid is None else f"{uid}:{gid}"
    if user and user != from_ids:
        raise Refused(f"{key.USER} {user!r} and {UNIX_UID}/{UNIX_GID} {from_ids!r} disagree")
    return from_ids


def _network(properties: Mapping[str, str]) -> str:
    value = properties.get(key.NETWORK, "")
    if value not in NETWORKS:
        raise Refused(f"{key.NETWORK} is {value!r}: it must be none or private")
    return NETWORKS[value]


def _capabilities(properties: Mapping[str, str], name: str) -> tuple[str, ...]:
    found = tuple(_list(properties.get(name, "")))
    bad = [c for c in found if c.upper().removeprefix("CAP_") not in (*CAPABILITIES, "ALL")]
    if bad:
        raise Refused(f"{name} names {bad[0]!r}, not a capability")
    return found


def _tmpfs(value: str) -> tuple[TmpfsMount, ...]:
    mounts = []
    for item in _list(value):
        target, _, size = item.rpartition(":")
        if not target.startswith("/") or target.startswith(("/workspace", "/.buildr")) or \
                (size and not TMPFS_SIZE.match(size)):
            raise Refused(f"{key.TMPFS} entry {item!r}: it must be /PATH:SIZE")
        mounts.append(TmpfsMount(target, size or None))
    return tuple(mounts)


def _boolean(properties: Mapping[str, str], name: str) -> bool:
    value = properties.get(name, "false")
    if value not in ("true", "false"):
        raise Refused(f"{name} is {value!r}: it must be true or false")
    return value == "true"


def _integer(properties: Mapping[str, str], name: str, default: int) -> int:
    value = properties.get(name)
    if value is None:
        return default
    if not value.isdigit():
        raise Refused(f"{name} is {value!r}: it must be a whole number")
    return int(value)


def _memory(value: str) -> str:
    if value and value != "none" and not MEMORY.match(value):
        raise Refused(f"{key.MEMORY} is {value!r}: it must be like 512m, 4g or none")
    return value


def _shell_and_script(arguments: Sequence[str]) -> tuple[str, str]:
    """buildr-podman's argv is SHELL -c SCRIPT; any other runs through /bin/sh as it is."""
    if not arguments:
        raise Refused("the Command has no arguments")
    if len(arguments) == 3 and arguments[1] == "-c" and arguments[0].startswith("/"):
        return arguments[0], arguments[2]
    return DEFAULT_SHELL, "exec " + shlex.join(arguments)


def _working_dir(directory: str, own: bool) -> str:
    """The task's working_dir (relative to the workspace) of the Command's (relative to the
    input root: below `workspace/` for buildr-podman's Action)."""
    parts = directory.split("/") if directory else []
    if own and (not parts or parts[0] != WORKSPACE_DIR):
        raise Refused(f"the Command's working_directory {directory!r} is not {WORKSPACE_DIR} "
                      f"or below it")
    if any(p in ("", ".", "..") for p in parts):
        raise Refused(f"the Command's working_directory {directory!r} is not a plain "
                      "relative path")
    return "/".join(parts[1:] if own else parts) or "."


def _declared_outputs(command: re_pb2.Command, working_dir: str
                      ) -> tuple[tuple[str, str], ...]:
    """Another client's outputs (REAPI 2.1's output_paths, else output_files and
    output_directories), each with its path relative to the workspace root."""
    declared = list(command.output_paths) or [*command.output_files,
                                              *command.output_directories]
    found = []
    for path in declared:
        if path == "":  # the whole working directory (REAPI allows it)
            found.append((path, "" if working_dir == "." else working_dir))
            continue
        parts = path.split("/")
        if path.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise Refused(f"the Command's output path {path!r} is not a plain relative path")
        found.append((path, path if working_dir == "." else f"{working_dir}/{path}"))
    return tuple(found)
