"""The durable cursor store: one small JSON file per deployment, replaced atomically."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tailer.cursor import Cursor
from tailer.directories import prepare, too_many_open_files
from tailer.errors import CursorSaveError, StateError
from tailer.lockfile import LockFile

VERSION = 1
_SAFE = re.compile(r"[A-Za-z0-9_-]{1,80}")  # fullmatch: "$" would let a trailing newline in
_FIELDS: dict[str, type | tuple[type, ...]] = {
    "project_id": int,
    "deploy_id": str,
    "position": int,
    "trimmed": int,
    "tail": list,
    "total": (int, type(None)),
    "done": bool,
}
_OPTIONAL: dict[str, type | tuple[type, ...]] = {
    "launched": (float, int, type(None)),
    "run": (int, type(None)),
    "anchor": (str, type(None)),
    "marks": (dict, type(None)),
}
_LEGACY: dict[str, tuple[str, str]] = {
    "file_size": ("file", "size"),
    "file_inode": ("file", "inode"),
    "file_last": ("file", "last"),
    "last_ns": ("loki", "last_ns"),
}
"""Marks that cursors saved before outputs kept their own marks held as fields."""


def safe_name(value: str) -> str:
    """``value`` if it is a plain name, else a readable, distinct and harmless stand-in.

    Distinct values get distinct names, case included: on a case-insensitive file system
    two deploy ids that differ only in case would meet in one file, but QuantConnect's are
    ``L-`` and lowercase hex, and the files stay named as the deployments are.
    """
    if _SAFE.fullmatch(value):
        return value
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "_", value)[:48]
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:20]
    return f"{cleaned}~{digest}"  # "~" never occurs in a plain name: no stand-in equals one


class CursorStore:
    """Cursors under ``<state>/cursors/<project_id>/<deploy_id>.json``, mode 0600.

    Each save writes a temp file in the same directory, fsyncs it, renames it over the old
    one and fsyncs the directory, so a crash at any instant leaves the old or the new cursor,
    never a torn one. A file that does not parse is an error naming it: starting over from
    zero in silence would duplicate or lose lines.
    """

    def __init__(self, directory: Path) -> None:
        self.root = directory / "cursors"

    def path(self, project_id: int, deploy_id: str) -> Path:
        return self.root / str(project_id) / f"{safe_name(deploy_id)}.json"

    def load_all(self) -> dict[tuple[int, str], Cursor]:
        cursors = self._load_from(self.root.glob("*/*.json"))
        for leftover in self.root.glob("*/.*.tmp"):  # a save cut short: the renamed file is
            with contextlib.suppress(OSError):  # the truth, and a leftover harms nothing
                leftover.unlink(missing_ok=True)
        return cursors

    def load_project(self, project_id: int) -> dict[tuple[int, str], Cursor]:
        """The saved cursors of one project (a daemon discovering thousands of projects
        would read every cursor for each one with ``load_all``)."""
        return self._load_from((self.root / str(project_id)).glob("*.json"))

    def _load_from(self, paths: Iterable[Path]) -> dict[tuple[int, str], Cursor]:
        cursors: dict[tuple[int, str], Cursor] = {}
        if not self.root.is_dir():
            return cursors
        for path in sorted(paths):
            cursor = self._load(path)
            cursors[(cursor.project_id, cursor.deploy_id)] = cursor
        return cursors

    def save(self, cursor: Cursor) -> None:
        """Replace the deployment's cursor; CursorSaveError if the state directory cannot
        take it (full, read-only), the old cursor then still in place."""
        path = self.path(cursor.project_id, cursor.deploy_id)
        data = json.dumps({"version": VERSION, **asdict(cursor)}, sort_keys=True).encode()
        tmp = path.parent / f".{path.name}.tmp"
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            _write_new(tmp, data)
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            why = "the disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "I/O error"
            why = too_many_open_files(exc) or why
            raise CursorSaveError(
                f"cannot save a cursor: {why} ({exc.strerror or exc}); the outputs have the "
                "lines, and their cursors are saved once it takes them again",
                output=f"state directory {self.root.parent}",
            ) from None

    def _load(self, path: Path) -> Cursor:
        raw = _read(path)
        if problem := _invalid(raw):
            raise StateError(problem, path=str(path))
        return Cursor(
            project_id=raw["project_id"],
            deploy_id=raw["deploy_id"],
            position=raw["position"],
            trimmed=raw["trimmed"],
            tail=tuple(raw["tail"]),
            total=raw["total"],
            done=raw["done"],
            launched=raw.get("launched"),
            marks=_marks(raw),
            run=raw.get("run") or 0,  # older cursors: the run is not known
            anchor=raw.get("anchor"),
        )


def _read(path: Path) -> dict[str, Any]:
    """A cursor file's object, of the version this code writes."""
    try:
        raw: Any = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise StateError(f"cannot read this cursor ({exc})", path=str(path)) from None
    version = raw.get("version") if isinstance(raw, dict) else None
    if not isinstance(raw, dict) or type(version) is not int or version != VERSION:
        raise StateError(
            f"unknown cursor format (version {version!r}, expected {VERSION}); "
            "move it away to start this deployment afresh",
            path=str(path),
        )
    return raw


def _marks(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    marks: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (raw.get("marks") or {}).items()}
    for key, (output, name) in _LEGACY.items():
        if raw.get(key) is not None:
            marks.setdefault(output, {}).setdefault(name, raw[key])
    return marks


def _invalid(raw: dict[str, Any]) -> str | None:
    """What is wrong with a cursor's fields, if anything."""
    problem = _mistyped(raw) or _bad_marks(raw)
    if problem:
        return problem
    if not all(isinstance(item, str) for item in raw["tail"]):
        return "field 'tail' holds something other than strings"
    if raw["position"] < 0 or raw["trimmed"] < 0 or raw["trimmed"] > raw["position"]:
        return "position/trimmed out of range"
    if (raw.get("run") or 0) < 0:
        return "field 'run' is negative"
    return None


def _mistyped(raw: dict[str, Any]) -> str | None:
    """The first field missing or of the wrong type, said."""
    for key, kind in _FIELDS.items():
        value = raw.get(key)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            return f"field {key!r} is missing or of the wrong type"
    for key, kind in _OPTIONAL.items():
        value = raw.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"field {key!r} is of the wrong type"
    for key in _LEGACY:
        value = raw.get(key)
        if value is not None and not _scalar(value):
            return f"field {key!r} is of the wrong type"
    return None


def _bad_marks(raw: dict[str, Any]) -> str | None:
    """An output's mark that is not a set of named whole numbers and strings, said (what
    each value means is for its output to check)."""
    for output, mark in (raw.get("marks") or {}).items():
        if not isinstance(mark, dict) or not all(_scalar(v) for v in mark.values()):
            return f"its {output} mark is not a set of whole numbers and strings"
    return None


def _scalar(value: object) -> bool:
    return value is None or (isinstance(value, int | str) and not isinstance(value, bool))


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StateLock(LockFile):
    """One qc-tail per state directory: an flock held for the life of the process."""

    def __init__(self, directory: Path) -> None:
        super().__init__(
            directory / "lock",
            mode=0o600,
            key="",
            refusal=lambda holder: (
                f"{directory}: another qc-tail (pid {holder}) is using this state "
                "directory; stop it first, or give this one its own state.dir"
            ),
        )

    def acquire(self) -> None:
        prepare(self.path.parent, 0o750, "state.dir")
        super().acquire()
