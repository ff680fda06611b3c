"""Whether the API takes our credentials: one verdict for every worker, each change said once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from tailer import logs
from tailer.errors import AuthError

log = logs.get_logger(__name__)


class Health:
    """Credentials refused mid-run (revoked, or a token being rotated) are waited out for
    ``grace`` seconds, then given up on (exit 77); at start (nothing ever succeeded) they are
    fatal at once: the credentials are wrong. Shared by the workers' schedulers, so that the
    failure and the recovery are each said once, and the grace period is one. ``clock`` is
    the wall clock (seconds since the epoch: systemd's STATUS shows when it began)."""

    def __init__(self, grace: float = 3600.0, clock: Callable[[], float] = time.time) -> None:
        self.grace = grace
        self._clock = clock
        self.healthy_once = False  # some poll or discovery has succeeded
        self.auth_failing_since: float | None = None
        self._lock = threading.Lock()

    def succeeded(self) -> None:
        """A request went through: the API works, and with these credentials."""
        self.healthy_once = True
        if self.auth_failing_since is None:
            return
        with self._lock:
            if self.auth_failing_since is not None:
                log.info("auth_recovered", after=round(self._clock() - self.auth_failing_since, 1))
                self.auth_failing_since = None

    def refused(self, exc: AuthError) -> None:
        """A request refused for its credentials: raises ``exc`` once it is time to give up."""
        if not self.healthy_once:
            raise exc
        with self._lock:
            now = self._clock()
            if self.auth_failing_since is None:
                self.auth_failing_since = now
                log.error("auth_failing", error=str(exc), gives_up_after=self.grace)
            elif now - self.auth_failing_since > self.grace:
                raise exc
