"""Outputs: where delivered lines go. They share one small interface."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from tailer.cursor import Cursor
from tailer.records import Record

__all__ = ["Record", "Sink"]


class Sink(Protocol):
    """An output. ``write`` takes records in order; ``flush`` returns once they are durable
    (as far as this output can make them so); only then may the cursor move."""

    def write(self, records: Sequence[Record]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...

    def stamp(self, cursor: Cursor) -> Cursor:
        """The cursor, with what this output needs to recover after a crash."""
        ...

    def recover(self, cursors: Iterable[Cursor]) -> None:
        """Undo what a crash left beyond the saved cursors (called once, at start)."""
        ...
