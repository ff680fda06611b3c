"""Per-deployment cursors: where reading resumes, and how to recognise the last line read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from tailer.records import fingerprint

TAIL_LINES = 4
"""How many of the last delivered lines' fingerprints a cursor keeps for realignment."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where one deployment's reading stands, in numbers that survive the API's trimming.

    ``position`` counts the deployment's lines already delivered (or lost in a reported gap);
    ``trimmed`` counts its first lines the API no longer serves, so the next line's project-wide
    number is ``deploymentOffset + position - trimmed``. ``tail`` holds fingerprints of the last
    lines delivered, oldest first; ``total`` is the deployment's final size once it is known.
    """

    project_id: int
    deploy_id: str
    position: int = 0
    trimmed: int = 0
    tail: tuple[str, ...] = ()
    total: int | None = None
    file_size: int | None = None  # the output file's length once this cursor's lines were in it
    file_inode: int | None = None
    file_last: str | None = None  # fingerprint of the file's last line, as its bytes were written
    done: bool = False  # drained and dropped: a restart need not read it again
    launched: float | None = None  # the deployment's launch (epoch seconds), when known
    last_ns: int | None = None  # the last Loki timestamp given to a line of it

    def line_number(self, offset: int) -> int:
        """The project-wide number of the next line, given the deployment's current offset."""
        return offset + self.position - self.trimmed

    def advance(self, texts: Sequence[str]) -> Cursor:
        """The cursor once ``texts`` have been delivered."""
        tail = (*self.tail, *(fingerprint(text) for text in texts[-TAIL_LINES:]))
        return replace(self, position=self.position + len(texts), tail=tail[-TAIL_LINES:])
