"""On a miss, what changed since the task's last stored entry: which input, variable or setting.

The entry it comes closest to is the last one stored for the task (the store's ref). Its
Action, Command and Directory messages are blobs of the store, so the comparison walks the
two Merkle trees and descends only where digests differ: a one-file change in a big
repository costs a few directory reads. Environment values are compared, never shown.
"""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.message import DecodeError

from buildr_podman._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from buildr_podman.cache.key import PROPERTY_SETTINGS, ActionKey
from buildr_podman.cache.store import Store
from buildr_podman.cache.tree import TreeBuilder

__all__ = ["explain_miss"]

MAX_SHOWN = 5  # changes named; beyond them, a count
M = TypeVar("M", re_pb2.Action, re_pb2.Command, re_pb2.Directory)


def explain_miss(store: Store, ref: str | None, key: ActionKey, builder: TreeBuilder) -> str:
    """One line: "first run of this task", "input workspace/a.c changed", ..."""
    if ref is None:
        return "no earlier entry for this task"
    if ref == key.hash:
        return "its entry was evicted or removed"
    old_action = _parse(re_pb2.Action, store.get_blob(ref))
    if old_action is None:
        return "the earlier entry is gone"
    new_action = re_pb2.Action.FromString(key.action)
    changes = _platform_changes(old_action, new_action)
    if old_action.timeout != new_action.timeout:
        changes.append("timeout changed")
    old_command = _parse(re_pb2.Command, store.get_blob(old_action.command_digest.hash))
    if old_command is None:
        changes.append("the command changed")
    else:
        changes += _command_changes(old_command, re_pb2.Command.FromString(key.command))
    if old_action.input_root_digest.hash != key.input_root[0]:
        changes += _tree_changes(store, old_action.input_root_digest.hash, key.input_root[0],
                                 key.directories(builder))
    if not changes:
        return "the key changed (nothing that can be named)"
    shown = changes[:MAX_SHOWN]
    more = len(changes) - len(shown)
    return "; ".join(shown) + (f"; and {more} more" if more else "")


def _parse(kind: type[M], data: bytes | None) -> M | None:
    if data is None:
        return None
    try:
        return kind.FromString(data)
    except DecodeError:
        return None


def _platform_changes(old: re_pb2.Action, new: re_pb2.Action) -> list[str]:
    before = {p.name: p.value for p in old.platform.properties}
    after = {p.name: p.value for p in new.platform.properties}
    return [f"{PROPERTY_SETTINGS.get(name, 'platform property ' + name)} changed"
            for name in sorted(set(before) | set(after)) if before.get(name) != after.get(name)]


def _command_changes(old: re_pb2.Command, new: re_pb2.Command) -> list[str]:
    changes = []
    if list(old.arguments[:-1]) != list(new.arguments[:-1]):
        changes.append("the shell changed")
    if old.arguments[-1:] != new.arguments[-1:]:
        changes.append("the script changed")
    if old.working_directory != new.working_directory:
        changes.append("working_dir changed")
    before = {v.name: v.value for v in old.environment_variables}
    after = {v.name: v.value for v in new.environment_variables}
    for name in sorted(set(before) | set(after)):
        if name not in before:
            changes.append(f"environment {name} added")
        elif name not in after:
            changes.append(f"environment {name} removed")
        elif before[name] != after[name]:
            changes.append(f"environment {name} changed")
    return changes


def _tree_changes(store: Store, old_hash: str, new_hash: str,
                  new_blobs: dict[str, bytes]) -> list[str]:
    changes: list[str] = []
    _compare(store, old_hash, new_hash, new_blobs, "", changes)
    return changes or ["an input changed"]


def _compare(store: Store, old_hash: str, new_hash: str, new_blobs: dict[str, bytes],
             where: str, changes: list[str]) -> None:
    old = _parse(re_pb2.Directory, store.get_blob(old_hash))
    new = _parse(re_pb2.Directory, new_blobs.get(new_hash))
    label = where or "the input root"
    if old is None or new is None:
        changes.append(f"input {label} changed (the earlier tree is gone)")
        return
    prefix = f"{where}/" if where else ""
    old_files = {f.name: f for f in old.files}
    new_files = {f.name: f for f in new.files}
    for name in sorted(set(old_files) | set(new_files)):
        before, after = old_files.get(name), new_files.get(name)
        if before is None:
            changes.append(f"input {prefix}{name} added")
        elif after is None:
            changes.append(f"input {prefix}{name} deleted")
        elif before.digest.hash != after.digest.hash:
            changes.append(f"input {prefix}{name} changed")
        elif before.node_properties.unix_mode != after.node_properties.unix_mode:
            changes.append(f"input {prefix}{name} mode changed")
    old_links = {s.name: s.target for s in old.symlinks}
    new_links = {s.name: s.target for s in new.symlinks}
    for name in sorted(set(old_links) | set(new_links)):
        if old_links.get(name) != new_links.get(name):
            changes.append(f"input {prefix}{name} (a symlink) changed")
    old_dirs = {d.name: d.digest.hash for d in old.directories}
    new_dirs = {d.name: d.digest.hash for d in new.directories}
    for name in sorted(set(old_dirs) | set(new_dirs)):
        if name not in old_dirs:
            changes.append(f"input {prefix}{name}/ added")
        elif name not in new_dirs:
            changes.append(f"input {prefix}{name}/ deleted")
        elif old_dirs[name] != new_dirs[name] and len(changes) <= MAX_SHOWN:
            _compare(store, old_dirs[name], new_dirs[name], new_blobs, prefix + name, changes)
