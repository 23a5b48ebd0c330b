"""Edit inputs on local disk: Lambda's ephemeral storage (``/tmp``), so that up to 16 uploads of up to 50 MB and
a mask go from S3 to the upstream a block at a time instead of being held in memory at once.

``InputFiles`` is one request's directory, made when the first file is written and removed with everything in
it when the request ends, on every exit path (it is a context manager). A directory an earlier invocation could
not remove (Lambda restarts the runtime after a timeout, and /tmp may outlive it) is swept when the next one is
made: one named after a process that no longer runs, or after this process but none of its requests, or older
than any invocation can last. So /tmp never holds more than the running requests' inputs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from imagecore.domain.images import ImageOnDisk

# Lambda's longest invocation is 15 minutes: a directory older than that belongs to no running request.
_STALE_SECONDS = 15 * 60
_PREFIX = "edit-inputs-"
# The directories of this process's running requests.
_LIVE: set[Path] = set()
_LIVE_LOCK = threading.Lock()


class SpoolTooLarge(Exception):
    """More bytes came than the file may hold."""


class InputFiles:
    def __init__(self, root: Path | None = None) -> None:
        self._root = root or Path(tempfile.gettempdir())
        self._directory: Path | None = None
        self._count = 0
        self._lock = threading.Lock()  # uploads are fetched by several threads at once

    def __enter__(self) -> InputFiles:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    @property
    def directory(self) -> Path | None:
        """Where the files are (None until the first is written, and again once closed)."""
        return self._directory

    def write(self, chunks: Iterable[bytes], *, max_bytes: int | None = None) -> ImageOnDisk:
        """A new file holding ``chunks``, written as they come (its size and SHA-256 taken on the way);
        ``SpoolTooLarge`` past ``max_bytes`` (the partial file is removed with the directory)."""
        path = self._new_path()
        digest, size = hashlib.sha256(), 0
        with path.open("wb") as file:
            for chunk in chunks:
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise SpoolTooLarge(path.name)
                digest.update(chunk)
                file.write(chunk)
        return ImageOnDisk(path, size, digest.hexdigest())

    def close(self) -> None:
        with self._lock:
            if self._directory is not None:
                shutil.rmtree(self._directory, ignore_errors=True)
                with _LIVE_LOCK:
                    _LIVE.discard(self._directory)
                self._directory = None

    def _new_path(self) -> Path:
        with self._lock:
            if self._directory is None:
                with _LIVE_LOCK:
                    _sweep_stale(self._root)
                    self._directory = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=self._root))
                    _LIVE.add(self._directory)
            self._count += 1
            return self._directory / f"{self._count}.bin"


def _sweep_stale(root: Path) -> None:
    cutoff = time.time() - _STALE_SECONDS
    for leftover in root.glob(_PREFIX + "*"):
        try:
            if (
                leftover.is_dir()
                and leftover not in _LIVE
                and (_orphaned(leftover) or leftover.stat().st_mtime < cutoff)
            ):
                shutil.rmtree(leftover, ignore_errors=True)
        except OSError:
            continue


def _orphaned(directory: Path) -> bool:
    """Whether the process named in the directory's name is this one (and the directory none of its running
    requests') or no longer runs."""
    pid = directory.name.removeprefix(_PREFIX).partition("-")[0]
    if not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except OSError:  # it exists, under another user
        return False
    return False
