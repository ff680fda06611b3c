"""The small exception tree of qc-tail; cli.py alone maps it to exit codes.

    QcTailError                    base; carries ``exit_code``
    ├── ConfigError        (78)    a config key or file is wrong: names the file and dotted key
    │   └── StateError     (78)    a cursor file is corrupt or of an unknown version
    ├── LockedError        (75)    another instance holds the state directory
    ├── CannotCreateError  (73)    a state or output directory or file cannot be created
    ├── WriteFailedError   (74)    an I/O error that ends the program: stdout closed or broken,
    │                              a full disk where a file had to be made at start
    ├── AuthError          (77)    credentials rejected even with a fresh, correctly timed hash
    ├── UnreachableError   (69)    transient failures outlasted the retry policy
    ├── CannotListenError  (69)    the emulator or metrics.listen cannot listen (port in use)
    ├── UsageError          (2)    an argument names nothing, or more than one thing
    ├── ApiError            (1)    the API answered, but refused the request
    │   ├── NotFoundError          no such project or no live deployment
    │   ├── ExportError            /live/export/logs gave no usable file (``reason`` says why)
    │   └── WindowTooLargeError    the server wants smaller log windows
    │       └── AnswerTooLargeError    the answer passed our size cap: so do we
    ├── TransientError      (1)    worth retrying: network, timeout, 429, 5xx, broken JSON
    │   └── ProtocolError          the answer is not the API's protocol (wrong shape or types)
    ├── OutputError         (1)    an output could not take the lines (disk full, I/O error)
    │   └── CursorSaveError        the state directory could not take a cursor (full, read-only)
    └── OutputsBehindError (74)    ``run --once``: outputs left behind (the others are done)

No message ever holds the API token, its hash or an Authorization header.
"""

from __future__ import annotations

from collections.abc import Sequence

EX_UNAVAILABLE = 69
EX_CANTCREAT = 73
EX_IOERR = 74
EX_TEMPFAIL = 75
EX_NOPERM = 77
EX_CONFIG = 78


class QcTailError(Exception):
    """Base of every error qc-tail raises on purpose."""

    exit_code = 1


class ConfigError(QcTailError):
    """A configuration file, key or value is invalid."""

    exit_code = EX_CONFIG

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None) -> None:
        self.path = path
        self.key = key
        where = ": ".join(part for part in (path, key) if part)
        super().__init__(f"{where}: {message}" if where else message)


class StateError(ConfigError):
    """A saved cursor cannot be trusted; refusing beats silently starting over."""


class LockedError(QcTailError):
    """Another qc-tail process already works on this state directory."""

    exit_code = EX_TEMPFAIL


class CannotCreateError(QcTailError):
    """A directory or file qc-tail must write cannot be made there (no permission, a path
    under a file, a read-only file system): restarting will not help."""

    exit_code = EX_CANTCREAT


class WriteFailedError(QcTailError):
    """An I/O error that ends the program (stdout gone or broken, a full disk at start)."""

    exit_code = EX_IOERR


class AuthError(QcTailError):
    """QuantConnect rejected the credentials (or the clock) even after fresh signatures."""

    exit_code = EX_NOPERM

    def __init__(self, message: str, *, skew: float | None = None) -> None:
        self.skew = skew
        super().__init__(message)


class UnreachableError(QcTailError):
    """The API could not be reached before the retry policy gave up."""

    exit_code = EX_UNAVAILABLE


class CannotListenError(QcTailError):
    """The emulator (or the demo's), or the metrics listener, cannot listen on its address."""

    exit_code = EX_UNAVAILABLE


class UsageError(QcTailError):
    """An argument the API must resolve (a project name) names nothing, or several things."""

    exit_code = 2


class ApiError(QcTailError):
    """The API answered, but said no (``success: false`` or an unexpected 4xx)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class NotFoundError(ApiError):
    """The project, or its live deployment, does not exist."""


class ExportError(ApiError):
    """``/live/export/logs`` gave no usable file; ``reason`` is a short word for events:
    unknown_endpoint, over_quota, auth, truncated, malformed, too_large, unreachable,
    server_error, refused,
    or, before or after the call: quota (ours), spool (no room for the file), short,
    disagrees, unverifiable, check_failed."""

    def __init__(self, reason: str, message: str, *, status: int | None = None) -> None:
        self.reason = reason
        super().__init__(message, status=status)


class WindowTooLargeError(ApiError):
    """The server refused the log window as too large; the caller should halve it."""


class AnswerTooLargeError(WindowTooLargeError):
    """The answer passed qc-tail's size cap; a smaller window may fit under it."""


class TransientError(QcTailError):
    """A failure that may pass: retry with backoff, honouring ``retry_after`` when given."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        self.status = status
        self.retry_after = retry_after
        super().__init__(message)


class ProtocolError(TransientError):
    """The API answered with something that breaks its own protocol; retried, never trusted."""


class OutputError(QcTailError):
    """An output could not durably take lines; the cursor must not move."""

    retry_after: float | None = None  # the output asked us to wait this long

    def __init__(self, reason: str, *, output: str) -> None:
        self.output = output  # which output, as a user knows it: a file's path, Loki's URL
        self.reason = reason
        super().__init__(f"{output}: {reason}")


class OutputsBehindError(QcTailError):
    """Outputs that could not be brought up to date, when every other one was.

    Not an OutputError: nothing retries it. Exit 74 (EX_IOERR): the lines could not be
    written out; 69 already says that QuantConnect is out of reach.
    """

    exit_code = EX_IOERR

    def __init__(self, failures: Sequence[OutputError], up_to_date: Sequence[str]) -> None:
        self.failures = list(failures)
        behind = "; ".join(
            f"{failure.output} could not be brought up to date: {failure.reason}"
            for failure in failures
        )
        super().__init__(f"{behind}; up to date: {', '.join(up_to_date)}" if up_to_date else behind)


class CursorSaveError(OutputError):
    """A cursor could not be saved (the state directory is full or read-only): the outputs
    have the lines, their cursors wait in memory and are saved again before anything else.
    ``delivered``: the lines had reached every output when the save failed."""

    delivered = False
