"""The two offline images that scripts/setup.sh builds exist and run rootless.

Built by containers/build-images.sh; run as the unprivileged user that the
tests run as (scripts/test).
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

IMAGES = ["localhost/buildr-gcc:bookworm", "localhost/buildr-busybox:latest"]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("podman") is None,
        reason="podman is not on PATH: install it (apt-get install podman) and run scripts/test",
    ),
]


def _podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.parametrize("image", IMAGES)
def test_image_exists(image: str) -> None:
    proc = _podman("image", "exists", image)
    assert proc.returncode == 0, (
        f"{image} is missing: run containers/build-images.sh (or scripts/setup.sh)\n{proc.stderr}"
    )


@pytest.mark.parametrize("image", IMAGES)
def test_image_runs_true_rootless(image: str) -> None:
    proc = _podman("run", "--rm", "--network", "none", image, "true")
    assert proc.returncode == 0, f"podman run {image} true failed:\n{proc.stderr}"


def test_busybox_image_has_no_libc() -> None:
    proc = _podman(
        "run", "--rm", "--network", "none", IMAGES[1],
        "find", "/", "-xdev", "-name", "libc.so*", "-o", "-name", "ld-linux*",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"busybox image holds a libc: {proc.stdout}"
