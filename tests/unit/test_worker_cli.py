"""`buildr-podman worker`: bad arguments are one line and exit 2; a worker's name is its own
while it runs (two workers never share a bot id), and free again once it stops."""

from __future__ import annotations

from pathlib import Path

import pytest

from buildr_podman.cli import main
from buildr_podman.errors import UsageError
from buildr_podman.worker.identity import claim


@pytest.fixture(autouse=True)
def _own_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.mark.parametrize(("args", "said"), [
    (["--server", "http://scheduler:80"], "--server 'http://scheduler:80': the scheme 'http'"),
    (["--server", "grpc://scheduler"], "no HOST:PORT"),
    (["--server", "unix:/tmp/s.sock", "--name", "a b"], "--name 'a b': use letters"),
])
def test_bad_arguments_are_one_line_and_exit_2(capsys: pytest.CaptureFixture[str],
                                               args: list[str], said: str) -> None:
    assert main(["worker", *args]) == 2
    err = capsys.readouterr().err
    assert said in err and len(err.strip().splitlines()) == 1, err


def test_a_name_is_held_while_its_worker_runs(tmp_path: Path) -> None:
    first = claim("build-1", tmp_path)
    assert first.bot_id.endswith("/build-1") and first.bot_id.startswith("buildr-podman@")
    with pytest.raises(UsageError, match="another worker named 'build-1'"):
        claim("build-1", tmp_path)
    automatic = [claim(None, tmp_path), claim(None, tmp_path)]
    assert [w.name for w in automatic] == ["1", "2"]
    automatic[0].release()
    again = claim(None, tmp_path)
    assert again.name == "1", "a restarted worker takes the first free name: the same bot id"
    first.release()
    assert claim("build-1", tmp_path).leases_dir.is_dir()


def test_what_a_killed_worker_left_in_its_leases_is_removed(tmp_path: Path) -> None:
    worker = claim("w", tmp_path)
    left = worker.leases_dir / "lease-x" / "root"
    left.mkdir(parents=True)
    (left / "f").write_text("x")
    left.chmod(0o500)
    worker.release()
    assert list(claim("w", tmp_path).leases_dir.iterdir()) == []
