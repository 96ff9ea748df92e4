"""libpod.py against a stand-in service that answers HTTP on a unix socket as Podman's does
(the real service is in every integration test)."""

from __future__ import annotations

import json
import socketserver
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from buildr_podman.podman.libpod import API_PREFIX, Libpod, LibpodError, NotFound, _demultiplex


class _Handler(BaseHTTPRequestHandler):
    seen: list[tuple[str, str, object]]

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.seen.append(("POST", self.path, body))
        if self.path == f"{API_PREFIX}/pods/create":
            self._answer(201, {"Id": "pod1"})
        else:
            self._answer(500, {"cause": "x", "message": "container state improper",
                               "response": 500})

    def do_GET(self) -> None:  # noqa: N802
        self.seen.append(("GET", self.path, None))
        if self.path.startswith(f"{API_PREFIX}/pods/json?"):
            self._answer(200, [{"Name": "p1", "Labels": {"io.buildr-podman": "7"}}])
        elif self.path.startswith(f"{API_PREFIX}/containers/c1/logs"):
            frames = b"\1\0\0\0\0\0\0\3out" + b"\2\0\0\0\0\0\0\4err\n"
            self._answer(200, frames)
        else:
            self._answer(404, {"cause": "no such container", "message": "no such container c2",
                               "response": 404})

    def _answer(self, status: int, body: object) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@contextmanager
def service(sock: Path, seen: list[tuple[str, str, object]]) -> Iterator[None]:
    handler = type("Handler", (_Handler,), {"seen": seen})
    with _Server(str(sock), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield
        finally:
            server.shutdown()
            thread.join()


def test_a_call_sends_json_and_decodes_the_answer(tmp_path: Path) -> None:
    seen: list[tuple[str, str, object]] = []
    with service(tmp_path / "s.sock", seen):
        assert Libpod(tmp_path / "s.sock", 5).create_pod("p", {"l": "1"}) == "pod1"
    assert seen == [("POST", f"{API_PREFIX}/pods/create",
                     {"name": "p", "labels": {"l": "1"}, "no_infra": True})]


def test_errors_carry_podmans_message_and_a_404_is_not_found(tmp_path: Path) -> None:
    with service(tmp_path / "s.sock", []):
        libpod = Libpod(tmp_path / "s.sock", 5)
        with pytest.raises(NotFound, match="no such container c2"):
            libpod.inspect_container("c2")
        with pytest.raises(LibpodError, match="container state improper") as raised:
            libpod.start_container("c1")
        assert raised.value.status == 500 and not isinstance(raised.value, NotFound)


def test_what_carries_a_label_is_listed_with_podmans_filter(tmp_path: Path) -> None:
    seen: list[tuple[str, str, object]] = []
    with service(tmp_path / "s.sock", seen):
        found = Libpod(tmp_path / "s.sock", 5).labelled("pods", "io.buildr-podman")
    assert found == [{"Name": "p1", "Labels": {"io.buildr-podman": "7"}}]
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(seen[0][1]).query)
    assert json.loads(query["filters"][0]) == {"label": ["io.buildr-podman"]}


def test_logs_come_back_demultiplexed(tmp_path: Path) -> None:
    with service(tmp_path / "s.sock", []):
        assert Libpod(tmp_path / "s.sock", 5).container_logs("c1") == "outerr\n"


def test_a_dead_service_is_revived_and_the_call_tried_again(tmp_path: Path) -> None:
    sock = tmp_path / "s.sock"
    seen: list[tuple[str, str, object]] = []
    stack: list[object] = []

    def revive() -> bool:
        started = service(sock, seen)
        started.__enter__()
        stack.append(started)
        return True

    try:
        assert Libpod(sock, 5, revive).create_pod("p", {}) == "pod1"
    finally:
        for started in stack:
            started.__exit__(None, None, None)  # type: ignore[attr-defined]
    assert len(stack) == 1 and len(seen) == 1


def test_without_a_revival_a_dead_service_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Libpod(tmp_path / "s.sock", 5, lambda: False).create_pod("p", {})


def test_bytes_that_are_not_frames_stay_as_they_are() -> None:
    assert _demultiplex(b"plain text from a terminal") == b"plain text from a terminal"
    assert _demultiplex(b"\1\0\0\0\0\0\0\2ok") == b"ok"
