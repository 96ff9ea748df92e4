"""Fixtures of the S2 tests: where the reference vectors live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def testdata_dir() -> Path:
    """The S2 reference vectors: $BUILDR_TESTDATA (or its s2/), else ../shared beside the repo."""
    env = os.environ.get("BUILDR_TESTDATA")
    if env:
        root = Path(env)
        return root / "s2" if (root / "s2").is_dir() else root
    return Path(__file__).resolve().parents[3] / ".." / "shared" / "testdata" / "s2"


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    path = testdata_dir()
    if not path.is_dir():
        pytest.skip(f"S2 reference vectors not found at {path} (set BUILDR_TESTDATA)")
    return path


@pytest.fixture(scope="session")
def vectors_dir_or_none() -> Path | None:
    """The vectors if present: tests that only use them as extra seeds run without them."""
    path = testdata_dir()
    return path if path.is_dir() else None
