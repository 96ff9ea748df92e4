"""What `buildr-podman doctor` checks report: one Finding per check, with the fix for a problem."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["STATUSES", "Finding"]

#: ok: works; warn: works, but slowly or not for every configuration; fail: cannot run tasks;
#: skip: not checked, because something it needs failed already
STATUSES: Final = ("ok", "warn", "fail", "skip")


@dataclass(frozen=True)
class Finding:
    """The result of one check."""

    check: str  #: what was checked, a few words ("OCI runtime")
    status: str  #: one of STATUSES
    detail: str  #: what was found, one line
    fix: str = ""  #: for warn and fail: what to do, as commands where possible

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {', '.join(STATUSES)}")
