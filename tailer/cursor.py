"""Per-deployment cursors: where reading resumes, and how to recognise the last line read."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from tailer.errors import StateError
from tailer.records import fingerprint

TAIL_LINES = 4
"""How many of the last delivered lines' fingerprints a cursor keeps for realignment."""

Mark = Mapping[str, int | str | None]
"""What one output needs to recover after a crash, saved with the cursor (see ``Sink.stamp``):
values by name, as JSON keeps them."""


class MarkError(StateError):
    """An output's mark in a saved cursor is not one that output makes (edited by hand)."""

    def __init__(self, cursor: Cursor, output: str) -> None:
        self.project_id, self.deploy_id = cursor.project_id, cursor.deploy_id
        self.reason = (
            f"its {output} mark is not one qc-tail makes: {dict(cursor.mark(output))!r}; "
            "move this cursor file away to read the deployment afresh"
        )
        super().__init__(
            f"the cursor of {self.deploy_id} (project {self.project_id}): {self.reason}"
        )


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where one deployment's reading stands, in numbers that survive the API's trimming.

    ``position`` counts the deployment's lines already delivered (or lost in a reported gap);
    ``trimmed`` counts its first lines the API no longer serves, so the next line's project-wide
    number is ``deploymentOffset + position - trimmed``. ``tail`` holds fingerprints of the last
    lines delivered, oldest first; ``total`` is the deployment's final size once it is known.

    When ``tail`` repeats within itself (identical lines, or a few lines over and over), it
    reads the same a period lower, so it cannot show a shift by a multiple of that period.
    ``run`` then counts the last lines delivered that repeat that period (``tail`` among
    them), and ``anchor`` is the fingerprint of the line before them (None if they reach back
    to the first line known): together, a fingerprint of the whole run (``signature``).

    ``marks`` hold, by output, what each output needs to recover after a crash (a file's
    length, Loki's last timestamp): saved in one write with the rest, so that they always
    describe the same moment. Only the output that made a mark reads it.
    """

    project_id: int
    deploy_id: str
    position: int = 0
    trimmed: int = 0
    tail: tuple[str, ...] = ()
    total: int | None = None
    done: bool = False  # drained and dropped: a restart need not read it again
    launched: float | None = None  # the deployment's launch (epoch seconds), when known
    marks: Mapping[str, Mark] = field(default_factory=dict, hash=False)
    run: int = 0  # the last lines delivered that repeat the tail's period (0: it has none)
    anchor: str | None = None  # the fingerprint of the line before them, if known

    def mark(self, output: str) -> Mark:
        """What ``output`` saved with this cursor (empty if nothing)."""
        return self.marks.get(output, {})

    def marked(self, output: str, mark: Mark) -> Cursor:
        """The cursor with ``output``'s mark replaced."""
        return replace(self, marks={**self.marks, output: dict(mark)})

    def line_number(self, offset: int) -> int:
        """The project-wide number of the next line, given the deployment's current offset."""
        return offset + self.position - self.trimmed

    def advance(self, texts: Sequence[str]) -> Cursor:
        """The cursor once ``texts`` have been delivered."""
        if not texts:
            return self
        tail = (*self.tail, *(fingerprint(text) for text in texts[-TAIL_LINES:]))[-TAIL_LINES:]
        q = period(tail)
        run, anchor = self._run(texts, q) if q is not None else (0, None)
        return replace(self, position=self.position + len(texts), tail=tail, run=run, anchor=anchor)

    def _run(self, texts: Sequence[str], q: int) -> tuple[int, str | None]:
        """The run of period ``q`` that ``texts`` end, and its anchor."""
        n = len(texts)
        j = n - 1 - q
        while j >= 0 and texts[j] == texts[j + q]:
            j -= 1
        if j >= 0:
            return n - 1 - j, fingerprint(texts[j])
        # Every new line repeats the period: the run goes on into the lines delivered before.
        known = [*self.tail, *(fingerprint(text) for text in texts[:q])]
        k = len(self.tail) - 1
        while k >= 0 and (k + q >= len(known) or known[k] == known[k + q]):
            k -= 1
        if k >= 0:
            return n + len(self.tail) - 1 - k, known[k]
        # The whole old tail repeats it too: it had the same period (a shorter one would be
        # the new tail's too), so the old run, if it was counted, simply grows.
        if self.run >= len(self.tail) and period(self.tail) == q:
            return self.run + n, self.anchor
        return len(self.tail) + n, None

    def signature(self, limit: int) -> tuple[tuple[str, ...], bool]:
        """The fingerprints of the last lines delivered to look for (oldest first, at most
        ``limit``), and whether they can be found in one place only: ``tail``, or for a
        repeating tail the whole run and its anchor. A run that reaches back further than
        ``limit`` or to the first line known can match a period lower, and lower still."""
        q = period(self.tail)
        if q is None:
            return self.tail, True
        if self.anchor is None or self.run < len(self.tail) or self.run >= limit:
            return self.tail, False
        run = (self.tail[-1 - d % q] for d in range(self.run - 1, -1, -1))
        return (self.anchor, *run), True

    def run_start(self) -> tuple[str, str] | None:
        """For a run too long to compare whole: the fingerprints of its anchor and its first
        line, ``run`` lines before the next one (None if the run has no anchor)."""
        q = period(self.tail)
        if q is None or self.anchor is None or self.run < len(self.tail):
            return None
        return self.anchor, self.tail[-1 - (self.run - 1) % q]


def period(tail: Sequence[str]) -> int | None:
    """The shortest period with which ``tail`` repeats within itself, if it does."""
    for q in range(1, len(tail)):
        if all(tail[i] == tail[i + q] for i in range(len(tail) - q)):
            return q
    return None
