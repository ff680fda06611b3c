"""The export calls spent lately, kept across restarts: a crash loop cannot exhaust them."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tailer import logs

log = logs.get_logger(__name__)

PERIOD = 1800.0
"""The span over which QuantConnect counts an account's export calls."""


class ExportQuota:
    """At most ``limit`` export calls per ``PERIOD`` seconds, shared by every reader of a
    process and, with ``path``, by the processes that follow each other on one state directory.

    The file holds the wall-clock times of the calls spent: a restarted daemon (a crash loop
    under systemd) counts the calls of its predecessors. An unreadable file is reported and
    started afresh (the account's own limit still stands behind this one).
    """

    def __init__(
        self,
        limit: int,
        path: Path | None = None,
        *,
        period: float = PERIOD,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.limit = limit
        self.path = path
        self.period = period
        self._clock = clock
        self._lock = threading.Lock()
        self._spent: list[float] = []
        self._loaded = path is None

    def take(self) -> bool:
        """Spend one call if the quota allows (True), else spend nothing (False)."""
        with self._lock:
            if not self._loaded:
                self._spent = self._load()
                self._loaded = True
            now = self._clock()
            self._spent = [t for t in self._spent if now - self.period < t <= now + self.period]
            if len(self._spent) >= self.limit:
                return False
            self._spent.append(now)
            self._save()
            return True

    def _load(self) -> list[float]:
        assert self.path is not None
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.warning("export_quota_unreadable", path=str(self.path), error=str(exc)[:200])
            return []
        if not isinstance(data, list) or not all(isinstance(t, int | float) for t in data):
            log.warning("export_quota_unreadable", path=str(self.path), error="not a list of times")
            return []
        return [float(t) for t in data]

    def _save(self) -> None:
        """Written before the call is made: a crash right after it still counts it."""
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".export-quota-")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as file:
                    json.dump(self._spent, file)
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(tmp, self.path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        except OSError as exc:  # the state directory's own checks report a lasting problem
            log.warning("export_quota_unsaved", path=str(self.path), error=str(exc)[:200])
