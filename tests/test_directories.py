"""Directories qc-tail writes to: made with their mode, and every fault a plain error."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from tailer.directories import prepare, probe
from tailer.errors import CannotCreateError, WriteFailedError

from .conftest import tmpfs


def test_missing_directories_are_made_with_the_mode_whatever_the_umask(tmp_path):
    target = tmp_path / "a" / "b"
    old = os.umask(0o077)
    try:
        prepare(target, 0o750, "state.dir")
    finally:
        os.umask(old)
    assert [(p.stat().st_mode & 0o777) for p in (tmp_path / "a", target)] == [0o750, 0o750]


def test_a_read_only_file_system_is_a_clear_error(tmp_path):
    with tmpfs(tmp_path / "ro", "64k") as mountpoint:
        (mountpoint / "state").mkdir()
        remount = ["mount", "-o", "remount,ro", str(mountpoint)]
        if subprocess.run(remount, capture_output=True, check=False).returncode != 0:
            pytest.skip("cannot remount the tmpfs read-only here")
        with pytest.raises(CannotCreateError, match="a read-only file system"):
            prepare(mountpoint / "state", 0o750, "state.dir")
        with pytest.raises(CannotCreateError, match="a read-only file system"):
            probe(mountpoint / "state")


def refusing(error: int):
    def mkdir(self: Path, mode: int = 0o777) -> None:
        raise OSError(error, "injected")

    return mkdir


def test_no_permission_is_exit_73_naming_the_key(tmp_path, monkeypatch):
    """Stands in for a non-root user and the default /var/lib/qc-tail (root may write all)."""
    monkeypatch.setattr(Path, "mkdir", refusing(errno.EACCES))
    with pytest.raises(CannotCreateError) as caught:
        prepare(tmp_path / "state", 0o750, "state.dir")
    assert caught.value.exit_code == 73
    assert str(caught.value).startswith(f"state.dir = {tmp_path / 'state'}: ")
    assert "permission denied; choose another state.dir" in str(caught.value)


def test_a_full_disk_is_exit_74(tmp_path, monkeypatch):
    monkeypatch.setattr(Path, "mkdir", refusing(errno.ENOSPC))
    with pytest.raises(WriteFailedError, match="the disk is full") as caught:
        prepare(tmp_path / "out", 0o750, "output.directory")
    assert caught.value.exit_code == 74


def test_probe_says_what_it_finds_and_makes_nothing(tmp_path):
    (tmp_path / "file").write_text("")
    assert probe(tmp_path) == "writable"
    assert probe(tmp_path / "x" / "y") == f"missing; can be made (under {tmp_path})"
    assert not (tmp_path / "x").exists()
    with pytest.raises(CannotCreateError, match="a part of the path is a file"):
        probe(tmp_path / "file" / "y")
