"""The generated protocol code must match protos/: regenerate with scripts/gen-protos."""

from __future__ import annotations

from pathlib import Path

import pytest

from buildr_podman._protos import generate


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools is in the [test] extra")
    fresh = {p.relative_to(tmp_path): p.read_text() for p in generate.generate(tmp_path)}
    assert fresh, "no .proto sources found"
    for rel, text in fresh.items():
        committed = generate.PACKAGE_ROOT / rel
        assert committed.exists(), f"{rel} is missing: run scripts/gen-protos"
        assert committed.read_text() == text, f"{rel} is stale: run scripts/gen-protos"
