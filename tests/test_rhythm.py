"""The publishing-rhythm estimator on a fake clock: where it puts the next poll."""

from __future__ import annotations

import itertools
import random

from tailer.rhythm import Rhythm

INTERVAL = 30.0


class Poller:
    """Polls as the scheduler does (when the rhythm says, else every ``INTERVAL``) a log that
    grows at the moments ``published``; time is only what it is told."""

    def __init__(self, published: list[float], start: float = 1.0, *, fast: bool = True) -> None:
        self.published = published
        self.rhythm = Rhythm(INTERVAL, learn_fast=fast)  # fast: as tail -f
        self.now = start
        self.seen = 0
        self.polls: list[float] = []
        self.delays: list[float] = []  # of each snapshot, from its publication to its poll
        self.rhythm.observe(self.now, False)

    def poll(self) -> None:
        due = self.rhythm.next_poll(self.now)
        self.now = self.now + INTERVAL if due is None else due
        count = sum(1 for moment in self.published if moment <= self.now)
        self.delays += [self.now - moment for moment in self.published[self.seen : count]]
        grew, self.seen = count > self.seen, count
        self.polls.append(self.now)
        self.rhythm.observe(self.now, grew)

    def until(self, snapshots: int) -> Poller:
        """Poll until the ``snapshots``-th snapshot has been seen."""
        while self.seen < snapshots:
            self.poll()
        return self

    def polls_between(self, start: float, end: float) -> int:
        return sum(1 for moment in self.polls if start < moment <= end)


def regular(period: float, first: float, count: int = 60) -> list[float]:
    return [first + period * k for k in range(count)]


def jittered(period: float, jitter: float, seed: int, count: int = 60) -> list[float]:
    rng = random.Random(seed)
    moments, at = [], 3.0
    for _ in range(count):
        at += period * (1 + rng.uniform(-jitter, jitter))
        moments.append(at)
    return moments


def test_regular_publishing_is_polled_just_before_and_after_each_snapshot():
    published = regular(60.0, 67.0)
    poller = Poller(published).until(10)
    rhythm = poller.rhythm
    assert rhythm.following
    assert rhythm.period is not None and abs(rhythm.period - 60.0) < 2.0
    next_poll = rhythm.next_poll(poller.now)
    assert next_poll is not None
    assert published[10] - 12.0 <= next_poll <= published[10]  # no poll in the quiet stretch
    poller.until(30)
    assert max(poller.delays[10:]) <= 8.0
    assert poller.polls_between(published[10], published[29]) <= 3 * 19


def test_jittered_publishing_is_polled_around_the_next_snapshot():
    published = jittered(120.0, 0.05, seed=5)
    poller = Poller(published).until(10)
    rhythm = poller.rhythm
    assert rhythm.following
    assert rhythm.period is not None and abs(rhythm.period - 120.0) < 3.0
    next_poll = rhythm.next_poll(poller.now)
    assert next_poll is not None
    assert poller.now + 90.0 <= next_poll <= published[10]
    poller.until(40)
    delays = sorted(poller.delays[10:])
    assert delays[len(delays) // 2] <= 6.0
    polls = poller.polls_between(published[9] + 1, published[39] + 1)
    assert polls <= 3 * 30  # fixed 30 s polling: 4 per snapshot


def test_a_drifting_period_is_followed():
    published, at = [], 3.0
    for k in range(60):
        at += 60.0 + 0.3 * k  # each period 0.3 s longer than the one before
        published.append(at)
    poller = Poller(published).until(20)
    rhythm = poller.rhythm
    now_period = published[20] - published[19]
    assert rhythm.following
    assert rhythm.period is not None and abs(rhythm.period - now_period) < 2.5
    next_poll = rhythm.next_poll(poller.now)
    assert next_poll is not None
    assert published[20] - 10.0 <= next_poll <= published[20]
    poller.until(40)
    assert max(poller.delays[20:]) <= 10.0


def test_a_missed_snapshot_falls_back_to_the_interval_then_the_rhythm_resumes():
    missing = 67.0 + 120.0 * 11
    published = [moment for moment in regular(120.0, 67.0) if moment != missing]
    poller = Poller(published).until(11)  # the 11th seen is the one before the gap
    assert poller.rhythm.following
    while poller.rhythm.following:  # the window of the missing snapshot, and its late polls
        poller.poll()
    assert poller.now > missing
    assert poller.rhythm.misses == 1
    assert poller.rhythm.next_poll(poller.now) is None  # polled at the interval now
    poller.until(12)  # the snapshot after the gap, seen at the interval
    assert poller.rhythm.period is not None and abs(poller.rhythm.period - 120.0) < 2.0
    assert poller.rhythm.following  # it fits the rhythm: kept
    next_poll = poller.rhythm.next_poll(poller.now)
    assert next_poll is not None
    assert published[12] - 12.0 <= next_poll <= published[12] + 1.0


def test_a_redeploy_shifts_the_phase_and_the_rhythm_is_learned_again():
    published = regular(120.0, 67.0, count=12) + regular(120.0, 67.0 + 120 * 12 + 25.0, count=40)
    poller = Poller(published).until(12)
    assert poller.rhythm.following
    while poller.rhythm.following:  # the window where the next snapshot was due
        poller.poll()
    assert poller.seen == 12  # the snapshot came later than its window
    assert poller.rhythm.next_poll(poller.now) is None  # polled at the interval now
    poller.until(25)
    assert poller.rhythm.following
    next_poll = poller.rhythm.next_poll(poller.now)
    assert next_poll is not None
    assert published[25] - 12.0 <= next_poll <= published[25]


def test_irregular_publishing_is_polled_at_the_interval():
    rng = random.Random(11)
    published, at = [], 0.0
    for _ in range(300):
        at += rng.uniform(20.0, 180.0)
        published.append(at)
    poller = Poller(published).until(300)
    fixed = Poller(published)
    fixed.rhythm.next_poll = lambda now: None  # type: ignore[method-assign]
    fixed.until(300)
    assert poller.rhythm.next_poll(poller.now) is None
    assert len(poller.polls) <= 1.01 * len(fixed.polls)
    ours, theirs = sorted(poller.delays), sorted(fixed.delays)
    assert ours[150] <= theirs[150] + 2.0  # the median
    assert ours[270] <= theirs[270] + 2.0  # the 90th percentile


def test_the_first_rows_found_teach_nothing():
    rhythm = Rhythm(INTERVAL, learn_fast=True)
    rhythm.observe(5.0, True)  # rows there before following began: no moment to learn
    rhythm.observe(35.0, False)
    assert rhythm.period is None
    assert rhythm.next_poll(35.0) is None


def test_a_deployment_that_never_published_is_polled_at_the_interval():
    rhythm = Rhythm(INTERVAL, learn_fast=True)
    for at in (1.0, 31.0, 61.0):
        rhythm.observe(at, False)
    assert rhythm.next_poll(61.0) is None


def test_from_its_first_snapshot_a_deployment_is_polled_faster_until_its_third():
    published = regular(60.0, 67.0)
    poller = Poller(published).until(1)
    assert poller.rhythm.next_poll(poller.now) == poller.now + INTERVAL / 3
    first = len(poller.polls)
    poller.until(2)
    gaps = {round(b - a, 6) for a, b in itertools.pairwise(poller.polls[first - 1 :])}
    assert gaps == {INTERVAL / 3}
    poller.until(3)
    assert poller.rhythm.following
    next_poll = poller.rhythm.next_poll(poller.now)
    assert next_poll is not None and next_poll > poller.now + INTERVAL


def test_without_someone_watching_the_rhythm_is_learned_at_the_interval():
    published = regular(120.0, 67.0)
    poller = Poller(published, fast=False).until(1)
    assert poller.rhythm.next_poll(poller.now) is None
    poller.until(12)
    assert poller.rhythm.following
    next_poll = poller.rhythm.next_poll(poller.now)
    assert next_poll is not None
    assert published[12] - 20.0 <= next_poll <= published[12] + 5.0


def test_snapshots_as_frequent_as_the_interval_are_polled_at_the_interval():
    published = regular(40.0, 67.0)  # a window would cost more requests than polling every 30 s
    poller = Poller(published).until(30)
    assert not poller.rhythm.following
    assert poller.rhythm.next_poll(poller.now) is None
