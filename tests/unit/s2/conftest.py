"""Fixtures of the S2 tests: where the reference vectors live (in the repository, tests/data/s2)."""

from __future__ import annotations

from pathlib import Path

import pytest

VECTORS = Path(__file__).resolve().parents[2] / "data" / "s2"


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    """The reference vectors; they are part of the repository, so missing ones are a failure."""
    assert (VECTORS / "SHA256SUMS").is_file(), f"S2 reference vectors missing from {VECTORS}"
    return VECTORS
