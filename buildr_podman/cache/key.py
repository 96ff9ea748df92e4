"""The cache key of a task: the digest of a REAPI v2 Action for everything that can change its
result.

The Action is built the way a REAPI client builds one, so the key a later remote-execution
backend computes for the same task is this one:
- the Command: the argv (the shell running the script, which holds `inline` and what a module
  type expanded), the environment (the container's, the task's own on top, sorted by name) and
  the working directory, relative to the input root;
- the input root, a Merkle tree (tree.py) of what the container shows: the mapped inputs under
  `workspace/`, this run's outputs of every module the task uses under `.buildr/out/NAME`
  (inputs_from lays them over the workspace inside the container: the layer order is a
  platform property), and read-only bind mounts at their targets;
- the platform properties: the image by its content id (never the tag alone: a rebuilt tag is
  a different image), the user, network, capabilities, privilege, tmpfs mounts, resource
  limits (pids_limit, memory), the module type, the agent protocol and this buildr-podman
  version (the agent's behaviour is part of the result);
- the timeout.

The platform properties, named as REAPI clients and workers conventionally name them where a
name exists (the same Action digest is the cache key and what remote execution runs):
  OSFamily               `linux`
  ISA                    this machine's, `x86-64` or `aarch64` (host_isa)
  container-image        `podman-image-id:<the image's content id>`: a worker runs the local
                         image with that id (`podman image inspect <id>`), never a tag
  dockerUser             the container's `user`, "uid[:gid]", or "" for the image's
  dockerNetwork          `none` or `private` (the `network` setting)
  dockerAddCapabilities  `cap_add`, sorted, comma-separated
  dockerDropCapabilities `cap_drop`, likewise
  dockerPrivileged       `true` or `false`
  buildr.agent-protocol, buildr.version, buildr.module-type, buildr.layers (inputs_from, in
  order), buildr.tmpfs (target:size,...), buildr.pids-limit, buildr.memory, buildr.bind-mounts
  (target:ro,...), and only where they apply buildr.secret-names, buildr.agent-environment
  and buildr.bind-mount-file:<target> (the file's hash).
PROPERTY_NAMES lists them for a server's configuration (BuildGrid refuses unknown ones).

The Action as remote execution runs it: the Command's argv and environment as they are, its
working_directory relative to the input root; the input root holds `workspace/` (the task's
inputs, shown at /workspace) and `.buildr/out/NAME/` (the outputs of the modules the task
uses, shown at /.buildr/out/NAME; those of buildr.layers are laid over the workspace in that
order). Its ActionResult is the task cache's own entry (task_cache.py, store.py): exit code,
stdout and stderr digests, and the output files buildr/changes.tar, buildr/deleted-paths and
buildr/outcome.json; so a result computed remotely is a cache hit for everyone later.

What never enters a key: the values of `secret_environment` (a task that has them is not
cached, unless `cache_secrets = true`: then it is keyed by their names), the out dir (earlier runs' outputs reach a task only as this run's dependency
outputs, keyed above), mtimes (tree.py says why). A writable bind mount makes a task
uncacheable: what it reads there can change while it runs, and what it writes there is not
in its change set. So does `cache = false` (a task with effects outside its workspace).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from buildr_podman import __version__
from buildr_podman._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from buildr_podman._protos.buildr.common.v1 import common_pb2
from buildr_podman.cache.tree import Digest, Tree, TreeBuilder, digest_of, proto_digest
from buildr_podman.model import DEPENDENCY_OUTPUTS, WORKSPACE, Project, Task
from buildr_podman.podman.input_mapping import mapped_directories

__all__ = ["PROPERTY_NAMES", "PROPERTY_SETTINGS", "ActionKey", "NotCacheable", "action_key",
           "agent_environment", "host_identity", "host_isa"]

WORKSPACE_DIR = WORKSPACE.strip("/")
OUTPUTS_DIR = DEPENDENCY_OUTPUTS.strip("/")

# The platform properties of a task's Action (module docstring): the conventional names where
# one exists, `buildr.*` for the rest.
OS_FAMILY = "OSFamily"
ISA = "ISA"
IMAGE = "container-image"
USER = "dockerUser"
NETWORK = "dockerNetwork"
ADD_CAPABILITIES = "dockerAddCapabilities"
DROP_CAPABILITIES = "dockerDropCapabilities"
PRIVILEGED = "dockerPrivileged"
AGENT_PROTOCOL = "buildr.agent-protocol"
VERSION = "buildr.version"
MODULE_TYPE = "buildr.module-type"
LAYERS = "buildr.layers"
TMPFS = "buildr.tmpfs"
PIDS_LIMIT = "buildr.pids-limit"
MEMORY = "buildr.memory"
BIND_MOUNTS = "buildr.bind-mounts"
SECRET_NAMES = "buildr.secret-names"
AGENT_ENVIRONMENT = "buildr.agent-environment"
BIND_MOUNT_FILE = "buildr.bind-mount-file:"  #: + the target: a read-only bind-mounted file
IMAGE_ID_SCHEME = "podman-image-id:"  #: container-image's value: this + the image's content id

#: every property name the client can send, but BIND_MOUNT_FILE's (one per mounted file);
#: a REAPI server must know them all (BuildGrid refuses others)
PROPERTY_NAMES = (OS_FAMILY, ISA, IMAGE, USER, NETWORK, ADD_CAPABILITIES, DROP_CAPABILITIES,
                  PRIVILEGED, AGENT_PROTOCOL, VERSION, MODULE_TYPE, LAYERS, TMPFS, PIDS_LIMIT,
                  MEMORY, BIND_MOUNTS, SECRET_NAMES, AGENT_ENVIRONMENT)

#: the configuration a property comes from, as a miss explains it (explain.py)
PROPERTY_SETTINGS = {
    IMAGE: "the image content (same tag, new image)", USER: "container setting user",
    NETWORK: "container setting network", ADD_CAPABILITIES: "container setting cap_add",
    DROP_CAPABILITIES: "container setting cap_drop",
    PRIVILEGED: "container setting privileged", TMPFS: "container setting tmpfs",
    PIDS_LIMIT: "container setting pids_limit", MEMORY: "container setting memory",
    BIND_MOUNTS: "container setting bind_mount", LAYERS: "inputs_from",
    MODULE_TYPE: "the module type", SECRET_NAMES: "the secret_environment names",
}


class NotCacheable(Exception):
    """The task must run every time; the message says why, for `run -v`."""


@dataclass
class ActionKey:
    """A task's Action digest, and the messages it is made of (the store keeps them, to say
    on a later miss what changed)."""

    digest: Digest
    action: bytes
    command: bytes
    input_root: Digest
    root: Tree = field(repr=False)  #: the input root as it was keyed

    @property
    def hash(self) -> str:
        return self.digest[0]

    def directories(self, builder: TreeBuilder) -> dict[str, bytes]:
        """Every Directory message of the input root, by hash (built only to be stored)."""
        blobs: dict[str, bytes] = {}
        builder.digest(self.root, blobs)
        return blobs


def action_key(project: Project, task: Task, image_id: str, builder: TreeBuilder,
               dependency_outputs: Mapping[str, Path]) -> ActionKey:
    """The key of `task` as it would run now. `dependency_outputs` are where this run's
    outputs of task.outputs_used are on the host. Raises NotCacheable, and BackendError for
    a bad input mapping (as the run itself would)."""
    _check_cacheable(task)
    try:
        root = _input_root(project, task, builder, dependency_outputs)
    except OSError as exc:  # unreadable, or changed under the walk (another task writing back)
        raise NotCacheable(f"an input could not be read ({exc})") from exc
    try:
        input_root = builder.digest(root)
    except ValueError as exc:  # protobuf strings are UTF-8
        raise NotCacheable(f"a file name or symlink target is not UTF-8 ({exc})") from exc
    command = _command(task).SerializeToString(deterministic=True)
    action = re_pb2.Action(command_digest=proto_digest(digest_of(command)),
                           input_root_digest=proto_digest(input_root),
                           platform=_platform(task, image_id))
    if task.timeout_seconds:
        action.timeout.FromNanoseconds(int(task.timeout_seconds * 1e9))
    data = action.SerializeToString(deterministic=True)
    return ActionKey(digest_of(data), data, command, input_root, root)


def _check_cacheable(task: Task) -> None:
    if not task.cache:
        raise NotCacheable("it says cache = false")
    if task.secret_environment and not task.cache_secrets:
        raise NotCacheable("it has secret_environment (cache_secrets = true caches it, keyed "
                           "by the secrets' names, never their values)")
    for mount in task.container.bind_mounts:
        if not mount.read_only:
            raise NotCacheable(f"its bind_mount at {mount.target} is writable (make it "
                               "read_only = true to cache the task)")


def _input_root(project: Project, task: Task, builder: TreeBuilder,
                dependency_outputs: Mapping[str, Path]) -> Tree:
    out_dir = str(project.out_dir.resolve())
    root = Tree()
    workspace = Tree()
    for source, target in mapped_directories(project, task):
        workspace.place(target, builder.walk(str(source), skip=(out_dir,)))
    root.place(WORKSPACE_DIR, workspace)
    for name in task.outputs_used:
        path = dependency_outputs.get(name)
        walked = builder.walk(str(path)) if path is not None and path.is_dir() else Tree()
        root.place(f"{OUTPUTS_DIR}/{name}", walked)
    for mount in task.container.bind_mounts:
        if mount.source.is_dir():
            root.place(mount.target.strip("/"), builder.walk(str(mount.source)))
        else:  # a file: its digest is a property instead (a Tree holds directories)
            root.place(mount.target.strip("/"), Tree())
    return root


def _command(task: Task) -> re_pb2.Command:
    environment = {**dict(task.container.environment), **dict(task.environment)}
    rel = task.container_working_dir().strip("/")
    return re_pb2.Command(
        arguments=task.argv(),
        environment_variables=[re_pb2.Command.EnvironmentVariable(name=name, value=value)
                               for name, value in sorted(environment.items())],
        working_directory=rel)


def _platform(task: Task, image_id: str) -> re_pb2.Platform:
    container = task.container
    properties = {
        **host_identity(),
        IMAGE: f"{IMAGE_ID_SCHEME}{image_id}",
        USER: container.user or "",
        NETWORK: container.network,
        ADD_CAPABILITIES: ",".join(sorted(container.cap_add)),
        DROP_CAPABILITIES: ",".join(sorted(container.cap_drop)),
        PRIVILEGED: str(container.privileged).lower(),
        MODULE_TYPE: task.module_type,
        LAYERS: ",".join(task.inputs_from),
        TMPFS: ",".join(f"{m.target}:{m.size or ''}" for m in container.tmpfs_mounts),
        # A task at its limits fails where it would otherwise succeed: part of what ran.
        PIDS_LIMIT: str(container.pids_limit),
        MEMORY: container.memory,
        BIND_MOUNTS: ",".join(f"{m.target}:ro" for m in container.bind_mounts),
    }
    if task.secret_environment:  # cache_secrets: their names, never their values
        properties[SECRET_NAMES] = ",".join(sorted(n for n, _ in task.secret_environment))
    knobs = agent_environment()
    if knobs:
        properties[AGENT_ENVIRONMENT] = knobs
    for mount in container.bind_mounts:
        if mount.source.is_file():
            properties[f"{BIND_MOUNT_FILE}{mount.target}"] = _file_hash(mount.source)
    return re_pb2.Platform(properties=[re_pb2.Platform.Property(name=name, value=value)
                                       for name, value in sorted(properties.items())])


def host_identity() -> dict[str, str]:
    """The properties that say which machine may run an Action: its OS and instruction set,
    and this buildr-podman's version and agent protocol (a worker says the same of itself)."""
    return {OS_FAMILY: "linux", ISA: host_isa(), VERSION: __version__,
            AGENT_PROTOCOL: str(common_pb2.PROTOCOL_VERSION_1)}


def agent_environment() -> str:
    """The host's BUILDR_AGENT_* variables (test knobs, handed to the agent), as
    `NAME=VALUE,...`: they change what the agent does, so they are part of what ran."""
    return ",".join(f"{name}={value}" for name, value in sorted(os.environ.items())
                    if name.startswith("BUILDR_AGENT_"))


def host_isa() -> str:
    """This machine's instruction set as REAPI platforms name it (x86-64, aarch64, ...)."""
    # os.uname(), which platform.machine() reads on Linux, without importing platform
    # (~1.4 ms of every run that keys a task).
    machine = os.uname().machine.lower()
    return {"x86_64": "x86-64", "amd64": "x86-64", "arm64": "aarch64"}.get(machine, machine)


def _file_hash(path: Path) -> str:
    return digest_of(path.read_bytes())[0]
