"""Edit inputs on local disk: ``InputFiles`` (one request's directory in Lambda's /tmp) and the image checks
made from a file, which must decide exactly as they do from the same bytes in memory."""

from __future__ import annotations

import hashlib
import io
import os
import time
from pathlib import Path

import pytest
from PIL import Image

from imagecore.domain.images import ImageOnDisk, NotAnImage, open_source, source_sha256, verify_image
from imagecore.storage.spool import InputFiles, SpoolTooLarge


def encoded(fmt: str, mode: str = "RGB", size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    Image.frombytes(mode, size, os.urandom(size[0] * size[1] * len(mode))).save(out, format=fmt)
    return out.getvalue()


def test_a_file_is_written_chunk_by_chunk_with_its_size_and_digest(tmp_path: Path) -> None:
    chunks = [b"a" * 1000, b"b" * 10, b"c"]
    with InputFiles(tmp_path) as files:
        written = files.write(chunks)
        directory = files.directory
        assert written.path.read_bytes() == b"".join(chunks)
        assert (written.size, written.sha256) == (1011, hashlib.sha256(b"".join(chunks)).hexdigest())
        with open_source(written) as opened:
            assert opened.read() == b"".join(chunks)
        assert source_sha256(written) == source_sha256(b"".join(chunks))
    assert directory is not None and not directory.exists()
    assert files.directory is None


def test_nothing_is_made_on_disk_until_a_file_is_written(tmp_path: Path) -> None:
    with InputFiles(tmp_path):
        pass
    assert list(tmp_path.iterdir()) == []


def test_past_its_limit_a_file_is_refused_and_removed_with_the_directory(tmp_path: Path) -> None:
    with pytest.raises(SpoolTooLarge), InputFiles(tmp_path) as files:
        files.write([b"x" * 10, b"y" * 10], max_bytes=15)
    assert list(tmp_path.iterdir()) == []


def test_a_directory_left_by_an_earlier_invocation_is_swept_once_stale(tmp_path: Path) -> None:
    stale, recent = tmp_path / "edit-inputs-old", tmp_path / "edit-inputs-running"
    for directory in (stale, recent):
        directory.mkdir()
        (directory / "1.bin").write_bytes(b"left")
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))

    with InputFiles(tmp_path) as files:
        files.write([b"new"])
        assert not stale.exists()
        assert recent.exists()  # another request's, still running


@pytest.mark.parametrize(("fmt", "mode"), [("PNG", "RGB"), ("PNG", "RGBA"), ("JPEG", "RGB"), ("WEBP", "RGB")], ids=str)
def test_an_image_on_disk_is_checked_as_in_memory(tmp_path: Path, fmt: str, mode: str) -> None:
    data = encoded(fmt, mode)
    with InputFiles(tmp_path) as files:
        on_disk = files.write([data[:100], data[100:]])
        assert verify_image(on_disk) == verify_image(data)
        assert isinstance(on_disk, ImageOnDisk)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_a_cut_image_on_disk_is_refused_as_in_memory(tmp_path: Path, fmt: str) -> None:
    cut = encoded(fmt, size=(300, 200))[:-40]
    with pytest.raises(NotAnImage):
        verify_image(cut)
    with InputFiles(tmp_path) as files, pytest.raises(NotAnImage):
        verify_image(files.write([cut]))


def test_an_empty_file_is_not_an_image(tmp_path: Path) -> None:
    with InputFiles(tmp_path) as files, pytest.raises(NotAnImage, match="empty"):
        verify_image(files.write([]))


def test_a_directory_of_a_process_gone_or_restarted_is_swept_at_once(tmp_path: Path) -> None:
    gone_pid = 2**22 + 12345  # above Linux's pid_max: no such process
    restarted = tmp_path / f"edit-inputs-{os.getpid()}-left"  # this pid, but none of this process's requests
    gone = tmp_path / f"edit-inputs-{gone_pid}-left"
    other = tmp_path / f"edit-inputs-{os.getppid()}-running"  # a process still running
    for directory in (restarted, gone, other):
        directory.mkdir()

    with InputFiles(tmp_path) as running, InputFiles(tmp_path) as files:
        running.write([b"mine"])
        files.write([b"new"])  # sweeps when its directory is made
        assert not restarted.exists() and not gone.exists()
        assert other.exists()
        assert running.directory is not None and running.directory.exists()  # another request of this process
