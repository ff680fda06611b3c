"""Large backlogs through ``/live/export/logs``: one file instead of hundreds of windows.

The file (every row of the project, oldest first) is streamed to an anonymous temporary file
and indexed by the byte offset of each row, so memory stays flat whatever its size. It is not
trusted by count: before any row of it is used, a fresh window from ``/live/logs/read`` at the
end of the stretch to be read must show exactly the export's rows at the same numbers; the
reader then compares the cursor's fingerprints with its first rows, as with any window. Rows
past that fresh window are never used. Any failure falls back to windows, with one event.
"""

from __future__ import annotations

import codecs
import tempfile
import threading
import weakref
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from tailer import logs
from tailer.api import LogWindow, QcApi
from tailer.cursor import period
from tailer.errors import ApiError, ExportError, TransientError
from tailer.export_quota import ExportQuota

log = logs.get_logger(__name__)

WINDOW = 249
"""Rows of the fresh window that checks an export against ``/live/logs/read``."""

THRESHOLD = 20 * WINDOW
"""Unread lines above which a catch-up asks for an export rather than windows."""

_CHUNK = 1024 * 1024
_EXPORT_TIMEOUT_FACTOR = 10  # a whole file, not one answer: more time than one request gets


class ExportedLog:
    """An export's rows, in a temporary file, read by number; ``len`` is the count of rows
    (a last row without its newline, perhaps cut short, is not one)."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self._closed = weakref.finalize(self, file.close)  # once no reader holds it
        self._lock = threading.Lock()
        self._starts = array("q", [0])  # byte offset of each row, then the end of the last
        self._crlf = 0
        self._index()

    def __len__(self) -> int:
        return len(self._starts) - 1

    def _index(self) -> None:
        """Find every row's start, and refuse what is not UTF-8 (a malformed file)."""
        decoder = codecs.getincrementaldecoder("utf-8")()
        self._file.seek(0)
        base, previous = 0, b""
        while chunk := self._file.read(_CHUNK):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError:
                raise ExportError("malformed", "the exported file is not UTF-8 text") from None
            at = chunk.find(b"\n")
            while at >= 0:
                before = chunk[at - 1 : at] if at else previous
                self._crlf += before == b"\r"
                self._starts.append(base + at + 1)
                at = chunk.find(b"\n", at + 1)
            base += len(chunk)
            previous = chunk[-1:]

    def rows(self, start: int, stop: int) -> tuple[str, ...]:
        """Rows ``[start, stop)``, within ``[0, len)``."""
        first, last = self._starts[start], self._starts[stop]
        with self._lock:
            self._file.seek(first)
            data = self._file.read(last - first)
        rows = data.decode("utf-8").split("\n")[:-1]
        if self._crlf and self._crlf == len(self):  # a file written with CRLF endings
            return tuple(row[:-1] for row in rows)
        return tuple(rows)

    def close(self) -> None:
        self._closed()


@dataclass(frozen=True, slots=True)
class PlacedExport:
    """An export checked against ``/live/logs/read`` for one deployment: rows ``[0, end)``
    answered as a window would answer them (``length`` and ``offset`` from the check)."""

    log: ExportedLog
    end: int
    length: int
    offset: int

    def window(self, start: int, stop: int) -> LogWindow | None:
        """Rows ``[start, stop)`` if the export holds them all (else None: ask the API)."""
        if not 0 <= start < stop <= self.end:
            return None
        return LogWindow(self.log.rows(start, stop), self.length, self.offset)


class Exporter:
    """Decides when a catch-up reads an export, fetches it within the quota, and places it.

    ``calls`` counts export requests made and ``fallbacks`` those that gave nothing usable,
    by reason (for metrics). The latest export is kept for the next deployment of the same
    project that needs one (a chain of redeploys read from its start).
    """

    def __init__(
        self,
        api: QcApi,
        quota: ExportQuota,
        *,
        enabled: bool = True,
        threshold: int = THRESHOLD,
        spool: Callable[[], IO[bytes]] = tempfile.TemporaryFile,
    ) -> None:
        self.api = api
        self.quota = quota
        self.enabled = enabled
        self.threshold = threshold
        self._spool = spool
        self.calls = 0
        self.fallbacks: dict[str, int] = {}
        self._kept: tuple[int, ExportedLog] | None = None
        self._lock = threading.Lock()

    def wanted(self, unread: int) -> bool:
        return self.enabled and unread > self.threshold

    def place(self, project_id: int, deploy_id: str, first: int, end: int) -> PlacedExport | None:
        """An export holding the deployment's lines from ``first`` towards ``end`` (both
        project-wide numbers, as the reader knows them now), checked against a fresh window;
        None (and one ``export_fallback`` event) if there is none to use."""
        with self._lock:
            try:
                exported = self._export(project_id, deploy_id, first)
                return self._check(exported, project_id, deploy_id, first, end)
            except ExportError as exc:
                self._fallback(project_id, deploy_id, exc.reason, str(exc))
            except (ApiError, TransientError) as exc:  # the checking window failed
                self._fallback(project_id, deploy_id, "check_failed", str(exc))
            return None

    def _export(self, project_id: int, deploy_id: str, first: int) -> ExportedLog:
        if self._kept is not None:
            kept_project, kept = self._kept
            if kept_project == project_id and len(kept) - first > self.threshold:
                return kept
            self._forget()
        if not self.quota.take():
            raise ExportError("quota", f"{self.quota.limit} exports spent in the last 30 minutes")
        self.calls += 1
        if self.api.metrics is not None:
            self.api.metrics.exported()
        try:
            spool = self._spool()
        except OSError as exc:
            raise ExportError("spool", f"no temporary file for the export: {exc}") from None
        try:
            timeout = self.api.timeout * _EXPORT_TIMEOUT_FACTOR
            self.api.export_logs(project_id, deploy_id, spool, timeout=timeout)
            exported = ExportedLog(spool)
        except OSError as exc:  # the temporary file's disk is full, or failing
            spool.close()
            raise ExportError("spool", f"the export could not be kept: {exc}") from None
        except BaseException:
            spool.close()
            raise
        self._kept = (project_id, exported)
        return exported

    def _check(
        self, exported: ExportedLog, project_id: int, deploy_id: str, first: int, end: int
    ) -> PlacedExport:
        """The export placed: a fresh window at the end of what will be read from it must
        show its rows, at the same numbers, in a pattern that cannot match a shifted copy."""
        stop = min(len(exported), end)
        if stop - first <= self.threshold:
            raise ExportError("short", f"the export holds {len(exported)} rows, too few to use")
        start = max(first, stop - WINDOW)
        window = self.api.read_logs(project_id, deploy_id, start, stop, fresh=True)
        if list(window.logs) != list(exported.rows(start, stop)):
            raise ExportError("disagrees", f"rows {start}..{stop} differ from /live/logs/read")
        if period(window.logs) is not None:
            raise ExportError("unverifiable", "the rows that place it repeat: no proof of place")
        return PlacedExport(exported, stop, window.length, window.deployment_offset)

    def _fallback(self, project_id: int, deploy_id: str, reason: str, detail: str) -> None:
        self.fallbacks[reason] = self.fallbacks.get(reason, 0) + 1
        if reason not in ("quota", "short"):
            self._forget()  # a file that failed (or that the API did not answer) is not kept
        hint = "reading the backlog in windows instead"
        if reason == "unknown_endpoint":  # this account or region has none: never ask again
            self.enabled = False
            hint += "; not asked again until a restart"
        log.warning(
            "export_fallback",
            project=project_id,
            deploy=deploy_id,
            reason=reason,
            detail=detail[:300],
            hint=hint,
        )

    def disagreed(self, project_id: int, deploy_id: str) -> None:
        """A reader found the export's rows not where its cursor says: it reads windows."""
        detail = "the export's rows do not follow the lines delivered last"
        with self._lock:
            self._fallback(project_id, deploy_id, "disagrees", detail)

    def _forget(self) -> None:
        """Not closed here: readers may still hold it (it closes once none does)."""
        self._kept = None
