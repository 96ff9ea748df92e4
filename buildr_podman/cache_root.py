"""Where buildr-podman keeps what it can always rebuild: `$XDG_CACHE_HOME/buildr-podman`
(agent builds, parsed configuration)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_root"]


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "buildr-podman"
