"""How a run looks: plain lines, a live rich display, or JSON events; plus each task's log file."""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["OUTPUT_MODES", "make_reporter"]

OUTPUT_MODES = ("auto", "rich", "plain", "json")


def make_reporter(mode: str, *, verbose: bool = False) -> Any:
    """The observer plugin for `--output MODE`; "auto" is rich on a terminal, plain elsewhere.

    Imported lazily: only the chosen reporter's dependencies (rich) are loaded.
    """
    if mode == "auto":
        mode = "rich" if _interactive() else "plain"
    if mode == "json":
        from buildr_podman.output.jsonl import JsonReporter

        return JsonReporter(verbose=verbose)
    if mode == "rich":
        from buildr_podman.output.live import RichReporter

        return RichReporter(verbose=verbose)
    from buildr_podman.output.plain import PlainReporter

    return PlainReporter(verbose=verbose)


def _interactive() -> bool:
    """Both streams on a terminal that can draw, and not CI (whose logs want plain lines)."""
    if os.environ.get("CI") or os.environ.get("TERM") == "dumb":
        return False
    return sys.stdout.isatty() and sys.stderr.isatty()
