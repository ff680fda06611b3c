"""Events: structlog is loaded at the first event, configured as the command asked."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import textwrap

import pytest

from .conftest import PROJECT, cli_env, daemon_config, loaded, qc_tail, stamp


def fresh_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``code`` in an interpreter of its own (this one has structlog loaded already)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env or None,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_events_configured_before_structlog_loads_keep_their_level_and_format():
    result = fresh_python(
        """
        import sys
        from tailer import logs

        logs.configure("warning", "json", sys.stdout)
        log = logs.get_logger("here")
        print("loaded before an event:", "structlog" in sys.modules)
        log.info("below_the_level", n=1)
        log.warning("at_the_level", n=2)
        log.error("above_it", n=3)
        """
    )
    assert result.returncode == 0, result.stderr
    first, *events = result.stdout.splitlines()
    assert first == "loaded before an event: False"
    parsed = [json.loads(event) for event in events]
    assert [(e["event"], e["level"], e["n"]) for e in parsed] == [
        ("at_the_level", "warning", 2),
        ("above_it", "error", 3),
    ]
    assert all(e["timestamp"].endswith("Z") for e in parsed)


def test_a_configuration_after_structlog_loaded_applies_at_once():
    """Loggers bound before it (tests capturing events, say) see the new one."""
    result = fresh_python(
        """
        import sys
        import structlog
        from tailer import logs

        log = logs.get_logger("here")
        logs.configure("error", "json", sys.stdout)
        log.warning("below_the_level")
        log.error("at_the_level")
        """
    )
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["event"] for line in result.stdout.splitlines()] == ["at_the_level"]


def test_a_tail_that_says_nothing_never_loads_structlog(emu, tmp_path):
    """Its start-up is the imports it needs: structlog (and the asyncio it imports) is not
    one of them while nothing is said. ``run --once``, which says it started, loads it."""
    emu.deploy(PROJECT)
    emu.write(PROJECT, [stamp(i) for i in range(30)])
    emu.publish()
    assert loaded(emu, ("structlog", "asyncio"), "tail", str(PROJECT), "-n", "5") == (
        [stamp(i) for i in range(25, 30)],
        {"structlog": False, "asyncio": False},
    )
    config = str(daemon_config(tmp_path, emu))
    assert loaded(emu, ("structlog",), "--config", config, "run", "--once") == (
        [],
        {"structlog": True},
    )


def test_a_hangup_as_structlog_loads_never_hangs_run(emu, tmp_path):
    """logrotate's SIGHUP (``systemctl reload``) may come at any time once ``run`` handles
    it; its handler says ``reopened`` on the main thread, which must not be loading
    structlog then (the handler would wait for itself: the process hung, never stopping)."""
    emu.deploy(PROJECT)
    emu.write(PROJECT, [stamp(i) for i in range(5)])
    emu.publish()
    config = str(daemon_config(tmp_path, emu))
    code = (
        "import os, signal, sys, threading\n"
        "class Hangup:\n"  # SIGHUP as structlog begins to load, on the thread loading it
        "    def find_spec(self, name, path=None, target=None):\n"
        "        main = threading.current_thread() is threading.main_thread()\n"
        "        if name == 'structlog' and main:\n"
        "            sys.meta_path.remove(self)\n"
        "            if callable(signal.getsignal(signal.SIGHUP)):\n"  # once run handles it
        "                os.kill(os.getpid(), signal.SIGHUP)\n"
        "        return None\n"
        "sys.meta_path.insert(0, Hangup())\n"
        "from tailer.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "--config", config, "run", "--once"],
        env=cli_env(emu),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line)["event"] for line in result.stderr.splitlines()]
    assert events[0] == "started" and events[-1] == "stopping"
    assert (tmp_path / "out" / str(PROJECT)).is_dir()


@pytest.mark.parametrize("fmt", [(), ("--log-format", "json")])
def test_with_stderr_closed_events_stay_off_stdout(emu, tmp_path, fmt):
    """``2>&-``: no traceback, and no event among the lines (structlog, given no stream,
    would print to stdout): ``run`` says it started and stopped."""
    emu.deploy(PROJECT)
    emu.write(PROJECT, [stamp(i) for i in range(3)])
    emu.publish()
    config = daemon_config(tmp_path, emu, more="stdout = true\n")
    command = shlex.join(qc_tail(*fmt, "--config", str(config), "run", "--once"))
    result = subprocess.run(
        ["sh", "-c", f"exec {command} 2>&-"],
        env=cli_env(emu),
        stdout=subprocess.PIPE,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert result.stdout.splitlines() == [f"[mean-reversion] {stamp(i)}" for i in range(3)]
