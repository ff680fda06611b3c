"""An output that passes on only the lines holding a keyword (``tail --grep``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tailer.cursor import Cursor
from tailer.records import Gap, LineRun
from tailer.sinks import Record, Sink


class GrepSink:
    """Gives ``inner`` the lines that contain ``keyword``, case-insensitively, as
    QuantConnect's own log filter matches, and every gap (lost lines may have matched)."""

    def __init__(self, inner: Sink, keyword: str) -> None:
        self.inner = inner
        self.keyword = keyword.casefold()

    def matches(self, text: str) -> bool:
        return self.keyword in text.casefold()

    def write(self, records: Sequence[Record]) -> None:
        kept: list[Record] = []
        for record in records:
            if isinstance(record, LineRun):
                if any(self.matches(text) for text in record.texts):
                    kept.extend(line for line in record.lines() if self.matches(line.text))
            elif isinstance(record, Gap) or self.matches(record.text):
                kept.append(record)
        if kept:
            self.inner.write(kept)

    def flush(self) -> None:
        self.inner.flush()

    def close(self) -> None:
        self.inner.close()

    def stamp(self, cursor: Cursor) -> Cursor:
        return self.inner.stamp(cursor)

    def recover(self, cursors: Iterable[Cursor]) -> None:
        self.inner.recover(cursors)
