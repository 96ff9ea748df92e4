"""The package's public names resolve, and importing the package stays light."""

from __future__ import annotations

import subprocess
import sys

import buildr_podman


def test_every_exported_name_resolves() -> None:
    assert set(buildr_podman.__all__) == {"__version__", *buildr_podman._EXPORTS}
    for name in buildr_podman.__all__:
        assert getattr(buildr_podman, name) is not None


def test_importing_the_package_loads_nothing_heavy() -> None:
    code = ("import sys, buildr_podman; "
            "print(','.join(m for m in ('pluggy', 'grpc', 'podman', 'hcl2') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert loaded == ""
