"""Parsed `.buildr/*.hcl` files, kept by the hash of their text: a run skips the HCL parser.

Importing python-hcl2 and building its Lark parser cost ~0.1 s, a sixth of a cold no-op run.
A file's parse depends only on its text, the parser and our conversion (hcl.py), so all three
are in the key. Entries are JSON, not pickle: reading one can never run code. Only files that
parsed without error are kept; an error is always found afresh, with its position.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from buildr_podman.atomic_file import write_atomically
from buildr_podman.cache_root import cache_root
from buildr_podman.hcl import Attribute, Block

__all__ = ["CACHE_FORMAT", "cache_dir", "parse_cached"]

CACHE_FORMAT = 1  #: bump when the JSON below changes shape
MAX_ENTRIES = 256  #: each edit of a file adds one; the oldest go beyond this


def cache_dir() -> Path:
    """`$XDG_CACHE_HOME/buildr-podman/hcl`."""
    return cache_root() / "hcl"


def parse_cached(text: str, parse: Callable[[], Block]) -> Block:
    """The cached parse of `text`, or `parse()`'s, which is then cached (when it can be)."""
    directory = cache_dir()
    entry = directory / f"{_key(text)}.json"
    try:
        return _block_from(json.loads(entry.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        pass  # not cached yet, or unreadable: parse
    block = parse()
    _store(directory, entry, block)
    return block


def _key(text: str) -> str:
    digest = hashlib.sha256(f"{CACHE_FORMAT}\0{_code_stamp()}\0".encode())
    digest.update(text.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


@functools.cache
def _code_stamp() -> str:
    """What identifies the parser and our conversion: their files' paths and mtimes (an
    upgrade or an edit rewrites them). Cheaper than package metadata (~20 ms)."""
    parts = []
    for origin in (_origin("hcl2"), _origin("buildr_podman.hcl")):
        try:
            stat = os.stat(origin) if origin else None
        except OSError:
            stat = None
        parts.append(f"{origin}:{stat.st_mtime_ns if stat else 0}:{stat.st_size if stat else 0}")
    return "|".join(parts)


def _origin(module: str) -> str | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    return spec.origin if spec else None


def _store(directory: Path, entry: Path, block: Block) -> None:
    """Writes the entry atomically; a value JSON would not give back unchanged (a tuple, a
    non-string key) is not cached at all. Failing to write only costs the next run a parse."""
    data = _block_to(block)
    text = json.dumps(data, separators=(",", ":"))
    if _block_from(json.loads(text)) != block:
        return
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomically(entry, text.encode())
        _prune(directory)
    except OSError:
        pass


def _prune(directory: Path) -> None:
    entries = list(directory.glob("*.json"))
    if len(entries) <= MAX_ENTRIES:
        return
    entries.sort(key=lambda path: path.stat().st_mtime_ns)
    for old in entries[:len(entries) - MAX_ENTRIES]:
        old.unlink(missing_ok=True)


def _block_to(block: Block) -> dict[str, Any]:
    return {"type": block.type, "labels": block.labels, "at": [block.line, block.column],
            "label_at": [list(position) for position in block.label_positions],
            "attributes": [[a.name, a.value, a.line, a.column, a.value_column, a.value_line]
                           for a in block.attributes.values()],
            "blocks": [_block_to(child) for child in block.blocks]}


def _block_from(data: dict[str, Any]) -> Block:
    line, column = data["at"]
    attributes = [Attribute(name, value, line_, column_, value_column, value_line)
                  for name, value, line_, column_, value_column, value_line
                  in data["attributes"]]
    return Block(type=data["type"], labels=list(data["labels"]), line=line, column=column,
                 label_positions=[(at[0], at[1]) for at in data["label_at"]],
                 attributes={attribute.name: attribute for attribute in attributes},
                 blocks=[_block_from(child) for child in data["blocks"]])
