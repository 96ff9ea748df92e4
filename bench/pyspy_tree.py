"""py-spy's raw stacks (`record --format raw`) summarised as a call tree of wall time per thread.

Used by `bench_executor.py --profile`: the tree shows where a whole `buildr-podman run` waits
and works, with chains of wrappers folded and everything an import runs as one node.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["summarise_pyspy"]

_IMPORT_FILES = ("<frozen importlib", "<frozen zipimport")
_SKIP_FILES = ("<frozen runpy>", "contextlib.py", "threading.py", "concurrent/futures/thread.py",
               "buildr_podman/__main__.py")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


class _Node:
    __slots__ = ("children", "count")

    def __init__(self) -> None:
        self.count = 0
        self.children: dict[str, _Node] = {}


def _frame_key(frame: str) -> str | None:
    """A readable name for one py-spy frame; None to leave it out of the tree."""
    m = _FRAME.match(frame)
    if not m:
        return frame
    file = m["file"]
    if file.startswith(_IMPORT_FILES):
        return "(imports)"
    if file.endswith(_SKIP_FILES):
        return None
    file = re.sub(r"^.*/(site-packages|dist-packages|lib/python3\.\d+)/", "", file)
    return f"{m['func']} ({file})"


def summarise_pyspy(raw: Path, rate: int, min_share: float = 0.03) -> list[str]:
    """Per thread, the call tree of wall time (py-spy --idle): a node with at least
    `min_share` of the thread's samples is shown; a chain where one child has nearly all of
    its parent's time is written on one line (a > b); everything an import runs is one
    "(imports)" node."""
    roots: dict[str, _Node] = {}
    names: dict[str, str] = {}
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        # "thread (0x7f...): MainThread" or "thread (1234)": merge the two spellings.
        tid = re.match(r"thread \((\w+)\)", frames[0])
        key = tid[1] if tid else frames[0]
        if len(frames[0]) > len(names.get(key, "")):
            names[key] = frames[0]
        node = roots.setdefault(key, _Node())
        node.count += count
        for frame in frames[1:]:
            name = _frame_key(frame)
            if name is None:
                continue
            node = node.children.setdefault(name, _Node())
            node.count += count
            if name == "(imports)":
                break

    lines: list[str] = []

    def walk(node: _Node, total: int, depth: int) -> None:
        for name, child in sorted(node.children.items(), key=lambda kv: -kv[1].count):
            if child.count < min_share * total:
                continue
            label = [name]
            while len(child.children) >= 1:
                big = max(child.children.items(), key=lambda kv: kv[1].count)
                if big[1].count < 0.97 * child.count:
                    break
                label.append(big[0])
                child = big[1]
            if len(label) > 3:  # a long chain of wrappers: its ends say enough
                label = [label[0], "..", label[-1]]
            lines.append(f"  {child.count / rate:7.3f} s {100 * child.count / total:5.1f}%"
                         f"  {'  ' * depth}{' > '.join(label)}")
            walk(child, total, depth + 1)

    for key, root in sorted(roots.items(), key=lambda kv: -kv[1].count):
        if root.count < min_share * max(r.count for r in roots.values()):
            continue
        lines.append(f"  {names[key]}: {root.count / rate:.2f} s sampled")
        walk(root, root.count, 1)
    return lines
