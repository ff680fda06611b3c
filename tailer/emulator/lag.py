"""Stale answers: which /live/logs/read answer comes from a lagging replica, and how far behind."""

from __future__ import annotations

import random
import threading


class Lags:
    """The lag plan: scripted stale answers first, per project, then random ones if set.

    A stale answer shows the project as it was ``lines`` rows earlier: its ``length`` that
    much lower and the rows past it missing, as a replica or cache that has not yet seen the
    latest snapshot would (nothing trimmed since, so the rows it does show are in place).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._script: dict[int, list[int]] = {}
        self._rate = 0.0
        self._lines = 0
        self._project: int | None = None
        self._rng = random.Random(0)

    def script(self, project_id: int, lines: int, answers: int = 1) -> None:
        """The project's next ``answers`` log reads answer ``lines`` rows behind."""
        if lines < 1 or answers < 1:
            raise ValueError(f"lines and answers must be positive, not {lines} and {answers}")
        with self._lock:
            self._script.setdefault(project_id, []).extend([lines] * answers)

    def random(self, rate: float, lines: int, seed: int = 0, project_id: int | None = None) -> None:
        """Each log read (of ``project_id``, or any) lags with probability ``rate``, by 1 to
        ``lines`` rows, reproducibly."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be within [0, 1], not {rate}")
        if lines < 1:
            raise ValueError(f"lines must be positive, not {lines}")
        with self._lock:
            self._rate, self._lines, self._project = rate, lines, project_id
            self._rng = random.Random(seed)

    def clear(self) -> None:
        """Back to fresh answers only."""
        with self._lock:
            self._script.clear()
            self._rate, self._lines, self._project = 0.0, 0, None

    @property
    def pending(self) -> int:
        """Scripted stale answers not yet given."""
        with self._lock:
            return sum(len(lags) for lags in self._script.values())

    def take(self, project_id: int) -> int:
        """How many rows behind the next answer about ``project_id`` is (0: a fresh one)."""
        with self._lock:
            scripted = self._script.get(project_id)
            if scripted:
                return scripted.pop(0)
            chosen = self._rate and self._project in (None, project_id)
            if chosen and self._rng.random() < self._rate:
                return self._rng.randint(1, self._lines)
        return 0
