"""Shared by the benchmarks: the emulator in its own process, measured child processes, the
machine's description, and the auth headers of hand-written clients."""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import platform
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self

BENCH = Path(__file__).resolve().parent
USER_ID = 4242
TOKEN = "bench-0123456789abcdef0123456789abcdef"


def qc_tail() -> str:
    """The ``qc-tail`` script of this interpreter's environment (else the one on PATH)."""
    beside = Path(sys.executable).parent / "qc-tail"
    if beside.exists():
        return str(beside)
    found = shutil.which("qc-tail")
    if found is None:
        raise SystemExit("qc-tail not found: run with the virtualenv's python")
    return found


def auth_headers(user_id: int | str, token: str) -> dict[str, str]:
    """QuantConnect's headers for one request: a timestamp and its salted hash."""
    stamp = str(int(time.time()))
    digest = hashlib.sha256(f"{token}:{stamp}".encode()).hexdigest()
    basic = base64.b64encode(f"{user_id}:{digest}".encode()).decode()
    return {"Timestamp": stamp, "Authorization": f"Basic {basic}"}


class EmulatorProcess:
    """``qc-tail emulator`` as a separate process (its own interpreter and GIL).

    ``stats()`` asks it (SIGUSR1) for its request counters.
    """

    def __init__(
        self,
        *,
        preload: int | None = None,
        projects: int | None = None,
        latency_ms: float = 0.0,
        publish_interval: float = 0.0,
        extra: Sequence[str] = (),
    ) -> None:
        self.command = [qc_tail(), "--log-level", "warning", "emulator", "--quiet", *extra]
        self.command += ["--user-id", str(USER_ID), "--api-token", TOKEN]
        self.command += ["--latency", str(latency_ms), "--publish-interval", str(publish_interval)]
        if preload is not None:
            self.command += ["--preload", str(preload)]
        if projects is not None:
            self.command += ["--projects", str(projects)]
        self.base_url = ""
        self._process: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str] = queue.Queue()

    def __enter__(self) -> Self:
        self._process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
        )
        stdout = self._process.stdout
        assert stdout is not None
        threading.Thread(target=self._pump, args=(stdout,), daemon=True).start()
        first = self._next_line(timeout=120)
        if not first.startswith("export "):
            raise RuntimeError(f"unexpected first line from the emulator: {first!r}")
        for word in first.split("#")[0].split()[1:]:
            name, _, value = word.partition("=")
            if name == "QC_BASE_URL":
                self.base_url = value
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def _pump(self, stdout: IO[str]) -> None:
        for line in stdout:
            self._lines.put(line.rstrip("\n"))

    def _next_line(self, timeout: float) -> str:
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError("the emulator said nothing in time") from None

    def stats(self) -> dict[str, int]:
        """``{"requests": N, "logs_read": M}``, counted by the emulator since it started."""
        assert self._process is not None
        self._process.send_signal(signal.SIGUSR1)
        while True:
            line = self._next_line(timeout=10)
            if line.startswith("stats "):
                return {k: int(v) for k, v in (w.split("=") for w in line.split()[1:])}

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a user pointed at this emulator."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "QC_BASE_URL": self.base_url,
            "QC_USER_ID": str(USER_ID),
            "QC_API_TOKEN": TOKEN,
        }
        env.update(extra)
        return env


@dataclass(frozen=True, slots=True)
class Run:
    """One finished child process: wall seconds from spawn to exit, and its own rusage."""

    wall: float
    cpu: float
    max_rss_mb: float
    returncode: int


def measure(
    command: Sequence[str],
    env: Mapping[str, str],
    *,
    stdout: IO[bytes] | int = subprocess.DEVNULL,
    stderr: IO[bytes] | int = subprocess.DEVNULL,
    timeout: float = 600,
) -> Run:
    """Run ``command`` to its end: wall time of the whole process (interpreter start-up
    included) and, from ``wait4``, the peak RSS and CPU time of that process alone."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command, env=dict(env), stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr
    )
    killer = threading.Timer(timeout, process.kill)
    killer.start()
    try:
        _, status, usage = os.wait4(process.pid, 0)
    finally:
        killer.cancel()
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    return Run(
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        max_rss_mb=usage.ru_maxrss / 1024,
        returncode=process.returncode,
    )


def machine() -> str:
    """nproc, CPU, Python, load and date: the header of every report."""
    cpu = "?"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    return (
        f"date {now}; nproc {len(os.sched_getaffinity(0))} ({cpu}); "
        f"Python {platform.python_version()} ({sys.executable}); "
        f"{platform.system()} {platform.release()}; load average {load}"
    )


def median(values: Sequence[float]) -> float:
    return statistics.median(values)
