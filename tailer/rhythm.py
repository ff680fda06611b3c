"""A deployment's publishing rhythm: when its next snapshot is due, learned from its polls.

QuantConnect publishes a deployment's new lines in snapshots, at a steady pace of its own.
Every poll says whether the log grew since the poll before it; a poll that finds new rows
brackets a publication between itself and the last poll that found none (a *sighting*).
From the sightings come the period, the moment of the next publication and the spread of
both; polls are then spent in a short burst across the window where the next snapshot is
due, and none between windows. A window that passes without new rows (a redeploy, a quiet
algorithm, a platform change) hands the deployment back to interval polling until rows
come; a sighting that fits the rhythm no more, or a second window missed, starts the
learning again.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

MIN_STEPS = 2
"""Periods measured before a rhythm is followed: one may be chance."""
MAX_POLLS = 6
"""Polls in one window at most (a wide one, while the rhythm is still coarse)."""
STEADY = 0.06
"""The most a period may vary (one sigma, as a share of it) for publishing to count as a rhythm:
snapshots every P seconds +/- 5 % vary by 3 %; irregular ones by tens of per cent."""
LEARN_FOR = 600.0
"""With ``learn_fast`` (someone is watching): seconds after a deployment's first snapshot
seen during which, until its third, it is polled three times as often, so that the first
brackets are narrow enough to learn from. Once per deployment, and never before it
publishes."""


@dataclass(frozen=True, slots=True)
class Sighting:
    """A publication happened after ``lo`` and no later than ``hi``."""

    lo: float
    hi: float

    @property
    def mid(self) -> float:
        return (self.lo + self.hi) / 2

    @property
    def half(self) -> float:
        return (self.hi - self.lo) / 2


@dataclass(frozen=True, slots=True)
class _Step:
    """One period measured between two sightings."""

    length: float
    error: float  # one sigma, from the sightings' brackets
    bound: float  # the most the brackets can put it off by
    count: int  # periods between the sightings


@dataclass(frozen=True, slots=True)
class _Window:
    """Where the next snapshot is due, and whether it starts with a guard poll."""

    start: float
    end: float
    guarded: bool

    def shifted(self, by: float) -> _Window:
        return _Window(self.start + by, self.end + by, self.guarded)


class Rhythm:
    """Learns one deployment's publishing period and phase; says when to poll next.

    ``observe(at, grew)`` after each poll (``at``: when it asked; ``grew``: it found new
    rows); ``next_poll(now)`` is the time of the next poll the rhythm wants, or None when
    there is no rhythm to follow (too few sightings, publishing too irregular for a window
    to beat polling every ``interval``): poll at the interval then. No I/O, no clock: times
    come in.

    A window has ``burst`` polls (more while the rhythm is coarse), the last at its end, then
    two late ones. Rows found by a window's first poll are taken as published inside the
    window (the rhythm said so), which keeps the sightings narrow without a poll before each
    window; twice in a row, and the next window starts with a guard poll at its start, so
    that a rhythm that is wrong (rows published before its windows) is caught.
    """

    def __init__(
        self,
        interval: float,
        *,
        burst: int = 3,
        keep: int = 6,
        margin: float = 0.5,
        coverage: float = 2.5,
        learn_fast: bool = False,
    ) -> None:
        self.interval = interval  # the fallback pace: a window must be finer to be worth it
        self.burst = burst
        self.margin = margin  # seconds added to every window: answers take time
        self.coverage = coverage  # a window's half-width, in standard deviations of the jitter
        self._sightings: deque[tuple[Sighting, int]] = deque(maxlen=keep + 1)  # periods counted
        self._steps: deque[_Step] = deque(maxlen=keep)
        self._last: float | None = None  # the last poll
        self._window: _Window | None = None
        self._plan: list[float] = []  # the window's polls still to come
        self._early = 0  # windows in a row whose first poll found the rows
        self.misses = 0  # windows passed in a row without new rows
        self._needed = 1 if learn_fast else MIN_STEPS  # periods measured before following
        self._first: float | None = None  # the first sighting, while learning fast after it
        if not learn_fast:
            self._first = -math.inf
        self._kept = 0  # windows in a row that found the rows inside them
        self.period: float | None = None
        self.spread = 0.0  # one sigma of the period's jitter, seconds
        self.expected: float | None = None  # the next snapshot's moment, with a rhythm

    @property
    def following(self) -> bool:
        """Whether polls follow the rhythm now (else: the interval)."""
        return self._window is not None and not self.misses

    @property
    def phase(self) -> float | None:
        """Where in the period snapshots fall on the caller's clock: expected mod period."""
        if self.period is None or self.expected is None:
            return None
        return self.expected % self.period

    def observe(self, at: float, grew: bool) -> None:
        """A poll asked at ``at`` and found new rows (``grew``) or none."""
        last, self._last = self._last, at
        window = self._window
        if not grew:
            self._plan = [t for t in self._plan if t > at]
            if window is not None and not self._plan and at > window.end:
                self._missed(window)
            return
        if last is not None:  # (else rows already there when following began: no moment)
            self._sighted(Sighting(self._since(last, at, window), at))

    def _since(self, last: float, at: float, window: _Window | None) -> float:
        """Since when the rows found at ``at`` can have been published: the poll before, or
        the start of the window they were due in (trusted unless twice in a row they came
        at its first poll; a guard poll that finds them shows the rhythm wrong)."""
        if window is None or self.misses:
            return last
        if last >= window.start:  # a poll inside the window found none: as the rhythm said
            self._early = 0
            self._kept += 1
            if self._kept >= (self._steps.maxlen or MIN_STEPS):
                self._needed = MIN_STEPS
            return last
        self._early += 1  # the window's first poll found them
        if window.guarded:
            self._forget()
            return last
        if len(self._steps) < MIN_STEPS:  # one period measured is no proof yet
            return last
        return max(last, min(window.start, at))

    def next_poll(self, now: float) -> float | None:
        """When to poll next, after ``now``; None: at the interval."""
        if not self.following:
            return now + self.interval / 3 if self._learning_fast(now) else None
        self._plan = [t for t in self._plan if t > now]
        if not self._plan:
            self._plan_window(now)
        return self._plan[0] if self._plan else None

    def _learning_fast(self, now: float) -> bool:
        """From a deployment's first snapshot seen to its third (for ``LEARN_FOR`` seconds at
        most), while no rhythm is followed: polls three times as often."""
        return self._first is not None and now - self._first < LEARN_FOR

    # -- learning -------------------------------------------------------------------------

    def _sighted(self, sighting: Sighting) -> None:
        if self._first is None:  # the very first: learn fast from here on
            self._first = sighting.hi
        elif len(self._sightings) >= 2:
            self._first = -math.inf  # the third: fast no more
        index = 0
        if self._sightings:
            previous, at = self._sightings[-1]
            step = self._step(previous, sighting)
            if step is None:  # off the rhythm: learn it again from here
                self._forget()
            else:
                self._steps.append(step)
                index = at + step.count
        self._sightings.append((sighting, index))
        self.misses = 0
        self._learn()

    def _step(self, a: Sighting, b: Sighting) -> _Step | None:
        """The period between two sightings (several periods apart if some snapshots went
        unseen), or None if it does not fit the rhythm learned so far."""
        span = b.mid - a.mid
        error = math.hypot(a.half, b.half) / math.sqrt(3)  # uniform brackets' sigma
        count = 1
        if self.period is not None and self._window is not None:  # (else: no multiples, or a
            count = max(1, round(span / self.period))  # coarse first guess locks in its half)
            jitter = math.hypot(self._sigma_period() * count, self.spread * math.sqrt(count))
            allowed = a.half + b.half + self.coverage * jitter + self.margin
            if abs(span - count * self.period) > allowed:
                return None
        return _Step(span / count, error / count, (a.half + b.half) / count, count)

    def _learn(self) -> None:
        self._window, self._plan, self.expected = None, [], None
        if not self._steps:
            self.period = None
            return
        weights = [1 / (s.error**2 + 0.25) for s in self._steps]
        period = sum(w * s.length for w, s in zip(weights, self._steps, strict=True))
        period /= sum(weights)
        excess = [self._excess(step, period) for step in self._steps]
        self.period, self.spread = period, math.sqrt(sum(excess) / len(excess))
        expected, sigma = self._project(period)
        half = self.coverage * sigma + self.margin
        if self._worth(period, half):
            self.expected = expected
            self._window = _Window(expected - half, expected + half, self._early >= 2)

    def _project(self, period: float) -> tuple[float, float]:
        """The next snapshot's moment and its sigma: a period after the last one (the jitter
        of a period, the error of the period and the last sighting's bracket add up)."""
        last, _ = self._sightings[-1]
        sigma = math.sqrt(last.half**2 / 3 + self.spread**2 + self._sigma_period() ** 2)
        return last.mid + period, sigma

    def _excess(self, step: _Step, period: float) -> float:
        """The squared deviation of a step from the period beyond what its brackets explain.
        A coarse step (brackets as wide as the interval) counts only what they cannot explain
        at all: polling on a grid would pass for jitter otherwise."""
        deviation = abs(step.length - period)
        if step.bound <= self.interval / 2:
            return max(0.0, deviation**2 - step.error**2)
        return max(0.0, deviation - step.bound) ** 2

    def _sigma_period(self) -> float:
        if not self._steps:
            return 0.0
        return 1 / math.sqrt(sum(1 / (s.error**2 + 0.25) for s in self._steps))

    def _worth(self, period: float, half: float) -> bool:
        """Whether the rhythm is learned well enough to follow: periods measured, a window
        that leaves a quiet stretch before the next, jitter small enough that a window's polls
        come closer together than polling at the interval, and snapshots far enough apart
        that a window costs no more requests than the interval would."""
        return (
            len(self._steps) >= self._needed
            and 2 * half < period
            and 2 * self.coverage * self.spread / self.burst < self.interval
            and self.spread <= STEADY * period
            and (self.burst + 1) / 2 * self.interval <= 1.1 * period
        )

    def _polls(self, window: _Window) -> list[float]:
        """A window's polls: a guard at its start if due, then evenly spread to its end (no
        further apart than half the interval), then two late ones."""
        width = window.end - window.start
        count = min(MAX_POLLS, max(self.burst, math.ceil(2 * width / self.interval)))
        step = width / count
        polls = [window.start] if window.guarded else []
        polls += [window.start + step * (i + 1) for i in range(count)]
        return [*polls, window.end + step, window.end + 3 * step]

    def _plan_window(self, now: float) -> None:
        """The next window's polls after ``now`` (a window that passed while a poll was busy
        gives way to the one after it)."""
        assert self._window is not None and self.period is not None
        while self._window.end <= now:
            self._window = self._window.shifted(self.period)
        self.expected = (self._window.start + self._window.end) / 2
        self._plan = [t for t in self._polls(self._window) if t > now]

    def _missed(self, window: _Window) -> None:
        """A window passed without new rows: back to the interval until rows come, watching
        for the next window; a second miss in a row, and the rhythm is learned afresh."""
        assert self.period is not None
        self.misses += 1
        self._early = 0
        if self.misses >= 2:
            self._forget()
            return
        self._window = window.shifted(self.period)
        self.expected = (self._window.start + self._window.end) / 2

    def _forget(self) -> None:
        """Learn the rhythm again; the more often it was lost, the more periods it takes."""
        self._needed = min(max(self._needed, MIN_STEPS) + 3, self._steps.maxlen or MIN_STEPS)
        self._kept = self._early = 0
        self._first = -math.inf  # no fast learning again
        self._sightings.clear()
        self._steps.clear()
        self._window, self._plan, self.expected, self.period = None, [], None, None
        self.spread = 0.0
