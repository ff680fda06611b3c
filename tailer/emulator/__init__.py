"""A faithful QuantConnect REST API emulator on loopback, for tests, benchmarks and demos."""

from __future__ import annotations

import errno
import random
import secrets
import signal
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import FrameType, MappingProxyType, TracebackType
from typing import Any, Self, TextIO

from tailer.emulator.export import Export
from tailer.emulator.faults import Fault, Faults
from tailer.emulator.lag import Lags
from tailer.emulator.model import Model
from tailer.emulator.scenery import Scenery
from tailer.emulator.server import Api, ApiServer, Stats
from tailer.errors import CannotListenError

__all__ = ["Emulator", "Export", "Fault", "Lags", "Scenery", "Stats", "serve"]


class Emulator:
    """The API emulator: a model of projects and deployments, served over HTTP on demand.

    ``publish_interval`` is the seconds between automatic snapshots (0: every write is
    published at once), each drawn from ``publish_interval * (1 +/- publish_jitter)`` (by
    ``seed``); with ``publish_stamp`` each snapshot first adds to every deployed project a
    line stamped with the moment it is published (benchmarks measure freshness by it);
    ``skew`` is added to the emulator's clock (its ``Date`` header and its
    timestamp check); ``latency`` is slept before every answer; ``tls`` serves HTTPS.
    ``list_ignores_project``: ``/live/list`` filters by ``status`` only, as documented, and
    answers every project's deployments whatever ``projectId`` asks. ``stale_read_rate``: the
    share of ``/live/read`` answers that name the deployment before the latest (a lagging
    replica's answer; see also ``stale_live_read``).

    Where the API's documentation is silent, a switch for each way it may behave:
    ``past_end`` (``"empty"``, or ``"error"``: a read at or past ``length`` is refused as out
    of range); ``strict_window`` (a window must be smaller than ``max_window``, not at most
    it); ``absolute_numbers`` (trimming keeps the numbers of the rows left, so a window below
    the first row still served is short, instead of renumbering them from 0);
    ``bare_answers`` (no ``errors`` field, ``logs: null`` for no rows, fields no client
    knows).
    """

    def __init__(
        self,
        user_id: int,
        api_token: str,
        *,
        publish_interval: float = 0.0,
        publish_jitter: float = 0.0,
        publish_stamp: bool = False,
        max_lines: int = 100_000,
        max_window: int = 250,
        auth_failure: str = "401",
        skew: float = 0.0,
        seed: int = 0,
        latency: float = 0.0,
        clock: Callable[[], float] = time.time,
        tls: ssl.SSLContext | None = None,
        list_ignores_project: bool = False,
        stale_read_rate: float = 0.0,
        past_end: str = "empty",
        strict_window: bool = False,
        absolute_numbers: bool = False,
        bare_answers: bool = False,
    ) -> None:
        self.user_id, self.api_token = user_id, api_token
        self.tls = tls  # serve HTTPS with this server-side context
        self.publish_interval = publish_interval
        self.publish_jitter = publish_jitter
        self.publish_stamp = publish_stamp
        self._pacing = random.Random(seed)
        self._clock = clock
        self.faults = Faults()
        self.model = Model(
            max_lines=max_lines,
            seed=seed,
            clock=lambda: clock() + skew,
            absolute=absolute_numbers,
        )
        self.api = Api(
            self.model,
            self.faults,
            user_id=user_id,
            api_token=api_token,
            max_window=max_window,
            auth_failure=auth_failure,
            skew=skew,
            latency=latency,
            clock=clock,
            list_ignores_project=list_ignores_project,
            stale_read_rate=stale_read_rate,
            past_end=past_end,
            strict_window=strict_window,
            bare_answers=bare_answers,
        )
        self._server: ApiServer | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    @property
    def stats(self) -> Stats:
        return self.api.stats

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the emulator is not serving; call start() first")
        host, port = self._server.server_address[:2]
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host!s}:{port}/api/v2"

    def start(self, host: str = "127.0.0.1", port: int = 0) -> Self:
        """Serve in a daemon thread (and publish snapshots in another, if periodic)."""
        if self._server is not None:
            raise RuntimeError("the emulator is already serving")
        try:
            self._server = ApiServer((host, port), self.api)
        except OSError as exc:  # the port taken, the host not this machine's
            raise CannotListenError(_cannot_listen(host, port, exc)) from None
        server = self._server
        if self.tls is not None:
            server.socket = self.tls.wrap_socket(server.socket, server_side=True)
        self._spawn("qc-emulator-http", lambda: server.serve_forever(poll_interval=0.05))
        if self.publish_interval > 0:
            self._spawn("qc-emulator-publisher", self._publish_periodically)
        return self

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _publish_periodically(self) -> None:
        while not self._stopping.wait(self.next_snapshot()):
            if self.publish_stamp:
                self._stamp()
            self.model.publish()

    def next_snapshot(self) -> float:
        """Seconds until the next periodic snapshot, jitter drawn."""
        jitter = self.publish_jitter
        return self.publish_interval * (1 + self._pacing.uniform(-jitter, jitter))

    def _stamp(self) -> None:
        now = self._clock()
        text = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now))
        for project_id in self.project_ids:
            if self.model.deploy_ids(project_id):
                self.model.write(
                    project_id, [f"{text} snapshot published {now:.3f}"], None, publish=False
                )

    def stop(self) -> None:
        """Stop serving: release stalled requests, cut kept-alive connections, join threads."""
        self._stopping.set()
        self.api.closing.set()
        self.api.answering.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.cut_connections()
            self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def stall(self, stalled: bool = True) -> None:
        """While stalled, requests are accepted but not answered."""
        if stalled:
            self.api.answering.clear()
        else:
            self.api.answering.set()

    def lag(self, project_id: int, lines: int = 20, answers: int = 1) -> None:
        """The project's next ``answers`` log reads are stale: they answer as the log was
        ``lines`` rows earlier (``length`` lower, the newest rows missing), like a lagging
        replica. See ``lags`` for stale answers at random."""
        self.api.lags.script(project_id, lines, answers)

    @property
    def lags(self) -> Lags:
        return self.api.lags

    @property
    def export(self) -> Export:
        """``/live/export/logs``: switch it off, set its quota and over-quota answer, spoil
        its next answers."""
        return self.api.export

    def add_project(self, project_id: int, name: str) -> None:
        self.model.add_project(project_id, name)

    def stale_live_read(self, project_id: int, answers: int = 1) -> None:
        """The project's next ``answers`` /live/read answers (0: none) name the deployment
        before its latest, as a lagging replica that has not seen the redeploy would."""
        self.api.stale_live_read(project_id, answers)

    def deploy(self, project_id: int) -> str:
        """A new Running deployment; the previous one, if still Running, becomes Stopped."""
        return self.model.deploy(project_id)

    def stop_deployment(self, project_id: int, status: str = "Stopped") -> None:
        self.model.stop_deployment(project_id, status)

    def write(self, project_id: int, lines: Iterable[str], deploy_id: str | None = None) -> None:
        """Lines for a deployment (the latest by default), visible from the next snapshot."""
        self.model.write(project_id, lines, deploy_id, publish=self.publish_interval <= 0)

    def publish(self, project_id: int | None = None) -> None:
        """Take a snapshot now: pending lines become visible (of every project if None)."""
        self.model.publish(project_id)

    def trim(self, project_id: int, n: int) -> None:
        self.model.trim(project_id, n)

    def published(self, project_id: int, deploy_id: str) -> list[str]:
        return self.model.published(project_id, deploy_id)

    def trimmed(self, project_id: int, deploy_id: str) -> int:
        """How many of the deployment's first published lines retention removed."""
        return self.model.trimmed(project_id, deploy_id)

    def visible(self, project_id: int) -> list[str]:
        return self.model.visible(project_id)

    def deployment_offset(self, project_id: int, deploy_id: str) -> int:
        return self.model.deployment_offset(project_id, deploy_id)

    def length(self, project_id: int) -> int:
        return self.model.length(project_id)

    def deploy_ids(self, project_id: int) -> list[str]:
        return self.model.deploy_ids(project_id)

    @property
    def project_ids(self) -> list[int]:
        return [project_id for project_id, _ in self.model.projects()]


def bench_line(i: int) -> str:
    """The ``i``-th line of a benchmark project: an order fill of realistic length."""
    hour, minute, second = 9 + i // 36_000 % 14, i // 600 % 60, i // 10 % 60
    side, quantity = ("BUY", 100 + i % 9 * 25) if i % 2 == 0 else ("SELL", 50 + i % 7 * 10)
    return (
        f"2026-03-02 {hour:02d}:{minute:02d}:{second:02d} Order filled: {side} {quantity} SPY"
        f" @ {451 + i % 97 / 100:.2f}, fees $1.00 #{i}"
    )


def _cannot_listen(host: str, port: int, exc: OSError) -> str:
    why = {
        errno.EADDRINUSE: "the port is in use (another emulator?); choose another --port, or "
        "--port 0 for a free one",
        errno.EACCES: "permission denied (ports below 1024 need root); choose another --port",
        errno.EADDRNOTAVAIL: "the address is not this machine's; choose another --host",
    }.get(exc.errno or 0, exc.strerror or str(exc))
    return f"emulator: cannot listen on {host}:{port}: {why}"


def serve(
    host: str,
    port: int,
    *,
    user_id: int,
    api_token: str,
    publish_interval: float,
    max_lines: int,
    export: tuple[str, int] = ("429", 45),
    lively: bool,
    stop: threading.Event,
    out: TextIO,
    preload: int | None = None,
    projects: int | None = None,
    latency: float = 0.0,
    fault_rate: float = 0.0,
    fault_kinds: Sequence[str] = (),
    auth_failure: str = "401",
    skew: float = 0.0,
    list_ignores_project: bool = False,
    stale_read_rate: float = 0.0,
    lag_rate: float = 0.0,
    lag_lines: int = 20,
    unknowns: Mapping[str, Any] = MappingProxyType({}),
    active: int = 0,
    active_every: float = 30.0,
    active_lines: int = 10,
    publish_jitter: float = 0.0,
    publish_stamp: bool = False,
    seed: int = 0,
) -> None:
    """Serve until ``stop`` is set, after printing how to point qc-tail at the emulator.

    With ``preload`` or ``projects`` (benchmarks), projects ``1..projects`` (project 1 named
    ``bench``) are each deployed with ``preload`` published lines. ``latency`` is slept before
    every answer. ``fault_rate`` of the requests get one of ``fault_kinds`` (all the transient
    ones if empty); refused credentials take the ``auth_failure`` shape; the server's clock is
    ``skew`` seconds off; ``list_ignores_project`` and ``stale_read_rate`` are as in
    ``Emulator``; ``lag_rate`` of the log reads are stale, up to ``lag_lines`` rows behind;
    ``unknowns`` holds the switches of ``Emulator`` for what the documentation leaves open.
    ``export`` is the export endpoint's over-quota shape (or ``off``) and its quota.
    SIGUSR1 prints ``stats requests=N logs_read=M export=E`` (main thread only). After
    SIGUSR2, projects ``1..active`` each get ``active_lines`` new lines every ``active_every``
    seconds (a fleet benchmark's active share).
    ``publish_jitter``, ``publish_stamp`` and ``seed`` pace the snapshots as in ``Emulator``.
    """
    emulator = Emulator(
        user_id,
        api_token,
        publish_interval=publish_interval,
        publish_jitter=publish_jitter,
        publish_stamp=publish_stamp,
        seed=seed,
        max_lines=max_lines,
        latency=latency,
        auth_failure=auth_failure,
        skew=skew,
        list_ignores_project=list_ignores_project,
        stale_read_rate=stale_read_rate,
        **unknowns,
    ).start(host, port)
    _set_export(emulator, export)
    _set_faults(emulator, fault_rate, fault_kinds, lag_rate, lag_lines)
    if preload is not None or projects is not None:
        _preload(emulator, preload or 0, projects or 1)
    scenery = Scenery(emulator).start() if lively else None

    in_main = threading.current_thread() is threading.main_thread()
    activity = (emulator, stop, active, active_every, active_lines)
    handlers = _bench_signals(emulator, out, activity) if in_main else {}
    previous = _install(handlers)
    try:
        _announce(emulator, out, user_id, api_token)
        stop.wait()
    finally:
        _install(previous)
        if scenery is not None:
            scenery.stop()
        emulator.stop()


def _set_export(emulator: Emulator, export: tuple[str, int]) -> None:
    """The export endpoint: its over-quota shape (``off``: no endpoint) and its quota."""
    shape, emulator.export.quota = export
    emulator.export.enabled = shape != "off"
    emulator.export.over_quota = shape if shape != "off" else "429"


def _set_faults(
    emulator: Emulator,
    fault_rate: float,
    fault_kinds: Sequence[str],
    lag_rate: float,
    lag_lines: int,
) -> None:
    """Random faults (all the transient kinds if ``fault_kinds`` is empty) and stale reads."""
    if fault_rate:
        if fault_kinds:
            emulator.faults.random(fault_rate, fault_kinds, seed=secrets.randbelow(2**31))
        else:
            emulator.faults.random(fault_rate, seed=secrets.randbelow(2**31))
    if lag_rate:
        emulator.lags.random(lag_rate, lag_lines, seed=secrets.randbelow(2**31))


def _preload(emulator: Emulator, preload: int, projects: int) -> None:
    """Projects ``1..projects`` (project 1 named ``bench``), each deployed with ``preload``
    published lines."""
    lines = [bench_line(i) for i in range(preload)]
    for project_id in range(1, projects + 1):
        emulator.add_project(project_id, "bench" if project_id == 1 else f"bench-{project_id}")
        emulator.deploy(project_id)
        emulator.write(project_id, lines)
    emulator.publish()


def _announce(emulator: Emulator, out: TextIO, user_id: int, api_token: str) -> None:
    """How to point qc-tail at the emulator, and the projects it serves."""
    projects_text = " ".join(str(p) for p in emulator.project_ids) or "none (lively is off)"
    out.write(
        f"export QC_BASE_URL={emulator.base_url} QC_USER_ID={user_id} "
        f"QC_API_TOKEN={api_token}  # projects: {projects_text}\n"
    )
    out.flush()


Handler = Callable[[int, FrameType | None], None]


def _bench_signals(
    emulator: Emulator, out: TextIO, activity: tuple[Any, ...]
) -> dict[int, Handler]:
    """SIGUSR1 prints the request counters; SIGUSR2 starts the active share's lines."""

    def report(signum: int, frame: FrameType | None) -> None:
        stats = emulator.stats
        logs_read = stats.by_path.get("/live/logs/read", 0)
        exports = stats.by_path.get("/live/export/logs", 0)
        out.write(f"stats requests={stats.requests} logs_read={logs_read} export={exports}\n")
        out.flush()

    def activate(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=_activity, args=activity, daemon=True).start()

    return {signal.SIGUSR1: report, signal.SIGUSR2: activate}


def _install(handlers: dict[int, Any]) -> dict[int, Any]:
    """Install signal handlers; the ones they replace, to put back."""
    return {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}


def _activity(
    emulator: Emulator, stop: threading.Event, active: int, every: float, lines: int
) -> None:
    """Projects ``1..active`` each get ``lines`` new lines, published, every ``every`` s."""
    written = 0
    while active and not stop.is_set():
        for project_id in range(1, active + 1):
            emulator.write(project_id, [bench_line(written + i) for i in range(lines)])
        written += lines
        emulator.publish()
        stop.wait(every)
