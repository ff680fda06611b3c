"""structlog set-up: events on stderr, console on a TTY, JSON otherwise.

structlog is imported at the first event, not at start-up: a command that says nothing
(``tail`` printing lines) starts without it and the asyncio it imports.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any, TextIO

LEVELS = ("debug", "info", "warning", "error")

_lock = threading.Lock()
_pending: tuple[str, str, TextIO] | None = None  # configured before structlog was imported


def configure(level: str = "info", fmt: str | None = None, stream: TextIO | None = None) -> None:
    """Route every event to ``stream`` (stderr): stdout carries only log lines."""
    global _pending
    stream = stream or sys.stderr or _nowhere()
    if fmt is None:
        fmt = "console" if stream.isatty() else "json"
    with _lock:
        _pending = (level, fmt, stream)
        if "structlog" in sys.modules:  # loggers may be bound already: apply it now
            _apply()


def _nowhere() -> TextIO:
    """Where events go when stderr is closed (``2>&-``): not to stdout, among the lines."""
    return open(os.devnull, "w")  # lives as long as the process logs


def get_logger(name: str) -> Logger:
    return Logger(name)


class Logger:
    """structlog's logger for ``name`` (``info``, ``warning``, ... as structlog's), loaded
    at its first event."""

    __slots__ = ("_logger", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._logger: Any = None

    def __getattr__(self, method: str) -> Any:
        if self._logger is None:
            self._logger = _load().get_logger(self._name)
        return getattr(self._logger, method)


def load() -> None:
    """Load structlog now: before a signal handler that says something is installed (the
    handler runs on the main thread, which must not be loading structlog then)."""
    _load()


def _load() -> Any:
    """structlog, configured as asked (if ``configure`` came before it was imported)."""
    with _lock:
        import structlog

        _apply()
        return structlog


def _apply() -> None:
    global _pending
    if _pending is None:
        return
    import logging

    import structlog

    level, fmt, stream = _pending
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    _pending = None  # only now: an interruption before this leaves it to apply next time
