"""Lively demo algorithms that trade, log, crash and get redeployed inside an emulator."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from tailer.emulator import Emulator

ENGINE = "v2.5.0.0.17503"
ALGORITHMS = (
    ("mean-reversion", {"SPY": 451.20, "QQQ": 389.75, "IWM": 187.30}),
    ("momentum-crypto", {"BTCUSD": 43_250.0, "ETHUSD": 2_280.0, "SOLUSD": 98.40}),
    ("pairs-fx", {"EURUSD": 1.0912, "GBPUSD": 1.2698, "USDJPY": 147.82}),
)
TRACE = (
    "  at on_data",
    "    ratio = spread / volatility",
    "   at Python.Runtime.PythonException.ThrowLastAsClrException()",
    " in main.py: line 87",
)
NEW_YORK = -5 * 3600  # close enough to America/New_York for a demo


@dataclass(slots=True)
class _Algorithm:
    project_id: int
    name: str
    prices: dict[str, float]
    cash: float = 100_000.0
    holdings: dict[str, int] = field(default_factory=dict)
    orders: int = 0
    restart_at: int | None = None  # tick of the redeploy after a runtime error


class Scenery:
    """Three algorithms writing realistic lines to random projects every 0.3 to 1 s.

    Every line's text is determined by ``seed`` (only timestamps and pacing depend on the
    clock). ``tick()`` is one step of activity, callable directly from tests.
    """

    def __init__(
        self,
        emulator: Emulator,
        *,
        seed: int = 0,
        clock: Callable[[], float] = time.time,
        pace: tuple[float, float] = (0.3, 1.0),
    ) -> None:
        self._emulator = emulator
        self._rng = random.Random(seed)
        self._pacing = random.Random(seed + 1)
        self._clock = clock
        self._pace = pace
        self._ticks = 0
        self._next_redeploy = self._rng.randint(45, 90)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.algorithms: list[_Algorithm] = []
        for name, prices in ALGORITHMS:
            project_id = self._rng.randrange(10_000_000, 30_000_000)
            emulator.add_project(project_id, name)
            algorithm = _Algorithm(project_id, name, dict(prices))
            self.algorithms.append(algorithm)
            self._launch(algorithm)

    @property
    def project_ids(self) -> list[int]:
        return [a.project_id for a in self.algorithms]

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._run, name="qc-emulator-scenery", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._pacing.uniform(*self._pace)):
            self.tick()

    def _stamp(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self._clock() + NEW_YORK))

    def _write(self, algorithm: _Algorithm, lines: list[str]) -> None:
        self._emulator.write(algorithm.project_id, lines)

    def _launch(self, algorithm: _Algorithm) -> None:
        deploy_id = self._emulator.deploy(algorithm.project_id)
        algorithm.restart_at = None
        self._write(
            algorithm,
            [
                f"Launching analysis for {deploy_id} with LEAN Engine {ENGINE}",
                "Paper Brokerage account base currency: USD",
                f"{self._stamp()} Algorithm started: {algorithm.name}",
            ],
        )

    def tick(self) -> None:
        """One step: maybe a (re)deploy, then a few lines from one running algorithm."""
        self._ticks += 1
        for algorithm in self.algorithms:
            if algorithm.restart_at is not None and algorithm.restart_at <= self._ticks:
                self._launch(algorithm)
        if self._ticks >= self._next_redeploy:
            self._next_redeploy = self._ticks + self._rng.randint(45, 90)
            algorithm = self._rng.choice(self.algorithms)
            if algorithm.restart_at is None:
                self._write(algorithm, [f"{self._stamp()} Algorithm stopping: redeploy requested"])
            self._launch(algorithm)
        running = [a for a in self.algorithms if a.restart_at is None]
        if not running:
            return
        algorithm = self._rng.choice(running)
        roll = self._rng.random()
        if roll < 0.02:
            self._crash(algorithm)
        elif roll < 0.40:
            self._trade(algorithm)
        elif roll < 0.75:
            self._debug(algorithm)
        elif roll < 0.95:
            self._portfolio(algorithm)
        else:
            self._write(algorithm, ["Brokerage Info: Paper Brokerage heartbeat OK"])

    def _move(self, algorithm: _Algorithm, symbol: str) -> float:
        price = algorithm.prices[symbol] * (1 + self._rng.gauss(0, 0.002))
        algorithm.prices[symbol] = price
        return price

    def _trade(self, algorithm: _Algorithm) -> None:
        symbol = self._rng.choice(sorted(algorithm.prices))
        price = self._move(algorithm, symbol)
        side = self._rng.choice(("BUY", "SELL"))
        quantity = max(1, round(self._rng.uniform(2_000, 20_000) / price))
        fees = max(1.0, 0.005 * quantity)
        algorithm.orders += 1
        signed = quantity if side == "BUY" else -quantity
        algorithm.holdings[symbol] = algorithm.holdings.get(symbol, 0) + signed
        algorithm.cash -= signed * price + fees
        digits = 4 if price < 10 else 2
        stamp, order = self._stamp(), algorithm.orders
        self._write(
            algorithm,
            [
                f"{stamp} Order submitted: {side} {quantity} {symbol} @ MARKET (id {order})",
                f"{stamp} Order filled: {side} {quantity} {symbol} @ {price:.{digits}f}, "
                f"fees ${fees:.2f}",
            ],
        )

    def _debug(self, algorithm: _Algorithm) -> None:
        symbol = self._rng.choice(sorted(algorithm.prices))
        price = self._move(algorithm, symbol)
        zscore, rsi = self._rng.gauss(0, 1.2), self._rng.uniform(15, 85)
        self._write(
            algorithm,
            [f"{self._stamp()} DEBUG {symbol} price={price:.4g} zscore={zscore:.2f} rsi={rsi:.1f}"],
        )

    def _portfolio(self, algorithm: _Algorithm) -> None:
        value = sum(q * algorithm.prices[s] for s, q in algorithm.holdings.items())
        held = sum(1 for q in algorithm.holdings.values() if q)
        self._write(
            algorithm,
            [
                f"{self._stamp()} Portfolio: equity ${algorithm.cash + value:,.2f}, "
                f"cash ${algorithm.cash:,.2f}, holdings {held}"
            ],
        )

    def _crash(self, algorithm: _Algorithm) -> None:
        """A fatal error: the message, its stack trace (no timestamps), status RuntimeError."""
        message = "Runtime Error: ZeroDivisionError : division by zero at on_data"
        self._write(algorithm, [f"{self._stamp()} {message}", *TRACE])
        self._emulator.stop_deployment(algorithm.project_id, "RuntimeError")
        algorithm.restart_at = self._ticks + self._rng.randint(5, 15)
