"""Podman's libpod REST API over its unix socket, with the standard library only: the calls of
a run (a task pod's life: create, start, inspect, logs, remove, and the pod's volumes; the
sweep of dead runs' pods).

Why not podman-py on a run's path: importing it costs 0.12-0.15 s of CPU (requests, rich), in
the same interpreter as the run's own imports, and a cold no-op run takes ~0.5 s: its first
pod waited for that import (issue 18, bench/README.md). podman-py stays for what is off that
path (`doctor`, a missing image's nearest name: connection.PodmanApi.client). The container's
JSON is the one podman-py sends for the same settings (tests/unit/test_container_spec.py
holds the two side by side).

One HTTP connection per call: a unix connect costs microseconds, and the worker threads of a
run call at once.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["API_PREFIX", "Libpod", "LibpodError", "NotFound"]

# The libpod API of Podman 4.0, which every Podman this project supports (4.3 and later) serves.
API_PREFIX = "/v4.0.0/libpod"


class LibpodError(Exception):
    """An error Podman answered with: `status` is the HTTP status, `message` Podman's words."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class NotFound(LibpodError):
    """404: no such pod, container, volume or image."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, sock_path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._sock_path = str(sock_path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._sock_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class Libpod:
    """A client of the service on `sock`. A call that cannot connect asks `revive` (start the
    service again if it died) and, when that says so, tries once more."""

    def __init__(self, sock: Path, timeout: float,
                 revive: Callable[[], bool] | None = None) -> None:
        self.sock = sock
        self._timeout = timeout
        self._revive = revive

    def call(self, method: str, path: str, body: Mapping[str, Any] | None = None,
             **query: object) -> Any:
        """The decoded JSON answer (None when there is none); LibpodError for an error."""
        raw = self.raw(method, path, body, **query)
        return json.loads(raw) if raw.strip() else None

    def raw(self, method: str, path: str, body: Mapping[str, Any] | None = None,
            **query: object) -> bytes:
        """The answer's bytes; LibpodError (NotFound for a 404) for an error."""
        url = API_PREFIX + path + _query_string(query)
        payload = json.dumps(body).encode() if body is not None else None
        try:
            status, data = self._send(method, url, payload)
        except (ConnectionRefusedError, FileNotFoundError):
            if self._revive is None or not self._revive():
                raise
            status, data = self._send(method, url, payload)
        if status >= 400:
            message = _error_message(data) or f"HTTP {status}"
            raise (NotFound if status == 404 else LibpodError)(status, message)
        return data

    def _send(self, method: str, url: str, payload: bytes | None) -> tuple[int, bytes]:
        connection = _UnixConnection(self.sock, self._timeout)
        try:
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            connection.request(method, url, body=payload, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    # The calls of a pod's life, named as Podman's API reference names them.

    def create_pod(self, name: str, labels: Mapping[str, str]) -> str:
        """A pod without an infra container (one container per pod needs none); its id."""
        answer = self.call("POST", "/pods/create",
                           {"name": name, "labels": dict(labels), "no_infra": True})
        return str(answer["Id"])

    def remove_pod(self, name: str, force: bool = True) -> None:
        """Removes the pod and its containers (force: killed first); NotFound if gone."""
        self.call("DELETE", f"/pods/{_quote(name)}", force=_flag(force))

    def create_container(self, spec: Mapping[str, Any]) -> str:
        """A container from a SpecGenerator (container_spec.py); its id."""
        return str(self.call("POST", "/containers/create", spec)["Id"])

    def start_container(self, container: str) -> None:
        self.call("POST", f"/containers/{_quote(container)}/start")

    def inspect_container(self, container: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.call("GET", f"/containers/{_quote(container)}/json")
        return answer

    def container_logs(self, container: str) -> str:
        """What the container wrote to its stdout and stderr, interleaved."""
        raw = self.raw("GET", f"/containers/{_quote(container)}/logs", stdout="true",
                       stderr="true")
        return _demultiplex(raw).decode(errors="replace")

    def image_id(self, name: str) -> str:
        """The image's content id, as `podman image inspect --format {{.Id}} NAME` prints it;
        NotFound if there is no such image."""
        return str(self.call("GET", f"/images/{_quote(name)}/json")["Id"])

    def create_volume(self, name: str, labels: Mapping[str, str]) -> dict[str, Any]:
        """A named volume; its inspection (Mountpoint: where it is on this machine)."""
        answer: dict[str, Any] = self.call("POST", "/volumes/create",
                                           {"Name": name, "Labels": dict(labels)})
        return answer

    def volume_exists(self, name: str) -> bool:
        try:
            self.raw("GET", f"/volumes/{_quote(name)}/exists")
        except NotFound:
            return False
        return True

    def labelled(self, kind: str, label: str) -> list[dict[str, Any]]:
        """The pods or volumes (`kind`) that carry `label`, each as Podman lists it (Name,
        Labels, ...)."""
        answer = self.call("GET", f"/{kind}/json", filters=json.dumps({"label": [label]}))
        return list(answer or [])

    def remove_volume(self, name: str, force: bool = False) -> None:
        """Removes a volume; without force only if no container uses it (409 otherwise).
        NotFound if gone."""
        self.call("DELETE", f"/volumes/{_quote(name)}", force=_flag(force))


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _query_string(query: Mapping[str, object]) -> str:
    return "?" + urllib.parse.urlencode(query) if query else ""


def _error_message(data: bytes) -> str:
    """Podman's error body is {"cause": ..., "message": ..., "response": status}."""
    try:
        answer = json.loads(data)
    except ValueError:
        return data.decode(errors="replace").strip()
    if isinstance(answer, dict):
        return str(answer.get("message") or answer.get("cause") or "")
    return ""


def _demultiplex(raw: bytes) -> bytes:
    """The payloads of Docker's multiplexed stream (a header of 8 bytes before each frame: the
    stream, 3 zero bytes, the length big-endian); bytes that do not frame so are kept as they
    are (a container with a terminal sends them raw)."""
    out = bytearray()
    position = 0
    while position + 8 <= len(raw):
        stream, length = raw[position], int.from_bytes(raw[position + 4:position + 8], "big")
        if stream not in (0, 1, 2) or raw[position + 1:position + 4] != b"\0\0\0":
            return raw
        out += raw[position + 8:position + 8 + length]
        position += 8 + length
    return bytes(out) if position == len(raw) else raw
