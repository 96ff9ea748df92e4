"""The content ids of a run's images, asked of the podman command line before they are needed.

The task cache keys a task by its image's content id (key.py), which only Podman knows: one
`podman image inspect` costs ~30 ms, a quarter of a run whose tasks are all cache hits. Asked
when the run starts, one process per image, Podman answers on the other core while this
process imports the cache and walks the inputs; the key then only reads the answer.

A run that started the API service as it began (`run --no-cache`: connection.py's
api_service_started_early) asks that service instead: ~3 ms, and no second Podman process
starting (~60 ms of CPU) beside the service on a machine busy starting the run's pod.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

from buildr_podman.podman.podman_cli import PodmanCliError, last_error_line

if TYPE_CHECKING:
    from buildr_podman.podman.connection import PodmanApi

__all__ = ["ImageIds", "podman_image_id"]

TIMEOUT = 30.0
FORMAT = "{{.Id}}"


class ImageIds:
    """A lookup (image name -> content id) for TaskCache; raises PodmanCliError as
    `podman image inspect` would fail. Images not named at the start are asked when looked up.
    close() stops the questions nobody needed. With `early_api`, a run that has an API
    answering from its start (connection.early_api) asks it instead, at lookup."""

    def __init__(self, images: Iterable[str], early_api: bool = False) -> None:
        self._lock = threading.Lock()
        self._asked: dict[str, subprocess.Popen[str]] = {}
        self._api: PodmanApi | None = None
        if early_api:
            from buildr_podman.podman.connection import early_api as started_early

            self._api = started_early()
            if self._api is not None:
                return
        binary = shutil.which("podman")
        if binary is None:
            return  # each lookup says so
        for image in dict.fromkeys(images):
            try:
                self._asked[image] = subprocess.Popen(
                    [binary, "image", "inspect", "--format", FORMAT, image],
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    text=True)
            except OSError:
                break  # each lookup asks again, and reports why it cannot

    def __call__(self, image: str) -> str:
        if self._api is not None:
            return _asked_of(self._api, image)
        with self._lock:
            process = self._asked.pop(image, None)
        if process is None:
            return podman_image_id(image)
        try:
            out, err = process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            _stop(process)
            raise PodmanCliError(f"podman image inspect {image} did not answer within "
                                 f"{TIMEOUT:.0f} s") from exc
        if process.returncode != 0:
            raise PodmanCliError(last_error_line(err or out)
                                 or f"podman image inspect {image} exited with status "
                                    f"{process.returncode}")
        return out.strip()

    def close(self) -> None:
        with self._lock:
            unused, self._asked = list(self._asked.values()), {}
        for process in unused:
            _stop(process)


def podman_image_id(image: str) -> str:
    """The image's content id, from the command line (a hit starts no API service)."""
    from buildr_podman.podman.podman_cli import podman

    return podman("image", "inspect", "--format", FORMAT, image, timeout=TIMEOUT).strip()


def _asked_of(api: PodmanApi, image: str) -> str:
    """The id from the API; an image it does not know fails as `podman image inspect` does,
    and any other failure asks the command line (it says what is wrong, if anything is)."""
    from buildr_podman.errors import BackendError
    from buildr_podman.podman.libpod import LibpodError, NotFound

    try:
        api.wait_until_answers()
        return api.libpod.image_id(image)
    except NotFound as exc:
        raise PodmanCliError(exc.message) from exc
    except (LibpodError, BackendError, OSError):
        return podman_image_id(image)


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
    process.communicate()
