"""Words and rows shared by the reporters: a verdict per outcome and the end-of-run table."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass

from buildr_podman.model import RunReport, TaskOutcome
from buildr_podman.phases import PhaseUpdate

__all__ = ["Row", "counts_line", "display_path", "duration", "failures", "files",
           "phase_counts", "rows", "verdict"]


def files(count: int) -> str:
    return f"{count} file" if count == 1 else f"{count} files"


def duration(seconds: float) -> str:
    """'4.2 s', or '3 min 31 s' past a minute."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60)} s"


def size(count: int) -> str:
    """Bytes in the largest unit that keeps a digit before the point: '1.2 GB'."""
    amount = float(count)
    for unit in ("bytes", "kB", "MB", "GB"):
        if amount < 1000:
            return f"{count} bytes" if unit == "bytes" else f"{amount:.1f} {unit}"
        amount /= 1000
    return f"{amount:.1f} TB"


def phase_counts(update: PhaseUpdate) -> str:
    """What a phase has done, in words: '12,345 files, 1.2 GB', '40 of 120 paths', or ''."""
    if not update.unit:
        return ""
    done = (f"{update.done:,} of {update.total:,}" if update.total is not None
            else f"{update.done:,}")
    return f"{done} {update.unit}" + (f", {size(update.bytes)}" if update.bytes else "")


def verdict(outcome: TaskOutcome, tolerated: bool = False) -> str:
    """"ok", "failed with exit code 2", "timed out", ... as a finished line says it."""
    if outcome.skipped:
        return f"skipped ({outcome.skipped})"
    if outcome.cancelled:
        return "cancelled"
    if outcome.timed_out:
        return "timed out"
    if outcome.error:
        text = "failed"
    elif outcome.exit_code:
        text = f"failed with exit code {outcome.exit_code}"
    else:
        return "ok (cached)" if outcome.cached else "ok"
    return text + (" (continue_on_error)" if tolerated else "")


def display_path(path: os.PathLike[str] | None) -> str:
    """A path relative to the current directory when that is shorter."""
    if path is None:
        return ""
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return str(path)
    return relative if len(relative) < len(str(path)) else str(path)


@dataclass(frozen=True)
class Row:
    name: str
    status: str
    time: str
    files: str
    where: str


def rows(report: RunReport) -> list[Row]:
    """One row per module of the run, in plan order."""
    result = []
    for outcome in report.outcomes:
        status = outcome.status
        if status == "failed" and outcome.task in report.tolerated:
            status = "failed (tolerated)"
        elif status == "failed" and outcome.exit_code > 0 and not outcome.error:
            status = f"failed ({outcome.exit_code})"
        elif outcome.cached:
            status = "ok (cached)"
        ran = not outcome.skipped
        result.append(Row(
            name=outcome.task,
            status=status,
            time=f"{outcome.duration_seconds:.1f} s" if ran else "-",
            files=str(outcome.files_returned) if ran and outcome.output_dir else "-",
            where=display_path(outcome.output_dir) if outcome.output_dir else outcome.skipped,
        ))
    return result


def counts_line(report: RunReport) -> str:
    """'2 ok, 1 failed, 1 skipped in 12.3 s'."""
    counts = Counter(outcome.status for outcome in report.outcomes)
    order = ("ok", "failed", "timed-out", "cancelled", "skipped")
    parts = [f"{counts[status]} {status}" for status in order if counts[status]]
    suffix = " (interrupted)" if report.interrupted else ""
    return f"{', '.join(parts) or 'nothing ran'} in {report.duration_seconds:.1f} s{suffix}"


def failures(report: RunReport) -> list[TaskOutcome]:
    """Outcomes whose error message deserves a line of its own at the very end."""
    return [o for o in report.outcomes if o.error and not o.cancelled and not o.skipped]
