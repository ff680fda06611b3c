"""The stop flag: waits that end on a signal, and keep the watchdog fed while they last."""

import contextlib
import signal
import threading
import time

import pytest

from tailer.shutdown import Interrupted, Shutdown, Stopping


def test_a_wait_feeds_the_heartbeat_while_it_lasts():
    shutdown = Shutdown()
    beats = []
    with shutdown.beating(lambda: beats.append(time.monotonic()), 0.05):
        assert shutdown.wait(0.3) is False
    assert len(beats) >= 4
    fed = len(beats)
    assert shutdown.wait(0.1) is False
    assert len(beats) == fed  # not once the beating is over


def test_a_stop_request_ends_a_wait_early():
    shutdown = Shutdown()
    threading.Timer(0.05, shutdown.request).start()
    started = time.monotonic()
    assert shutdown.wait(10) is True
    assert time.monotonic() - started < 5


def test_a_signal_inside_a_critical_section_waits_for_its_end():
    shutdown = Shutdown()
    shutdown.install()
    try:
        done = []
        with pytest.raises(Interrupted) as raised, shutdown.critical():
            signal.raise_signal(signal.SIGTERM)
            done.append("the write in hand")
        assert done == ["the write in hand"]
        assert raised.value.signum == signal.SIGTERM
    finally:
        shutdown.uninstall()


def test_a_signal_outside_a_critical_section_interrupts_at_once():
    shutdown = Shutdown()
    shutdown.install()
    try:
        with pytest.raises(Interrupted):
            signal.raise_signal(signal.SIGINT)
    finally:
        shutdown.uninstall()
    assert shutdown.requested


@pytest.mark.parametrize("critical", [False, True])
def test_a_signal_landing_inside_the_events_own_wait_does_not_deadlock(critical):
    """A handler runs in the main thread, perhaps inside ``event.wait()`` while that holds
    the event's lock (a ``demo`` hung forever so). Here the lock is held as the wait holds
    it, and the handler runs; a thread guards against the hang, which the old handler had."""
    shutdown = Shutdown()
    outcome: list[str] = []

    def land() -> None:
        try:
            with contextlib.ExitStack() as stack:
                if critical:
                    stack.enter_context(shutdown.critical())
                with shutdown.event._cond:  # held, as inside event.wait()
                    shutdown._handle(signal.SIGTERM, None)
                    outcome.append("handled")
        except Interrupted:
            outcome.append("interrupted")

    lander = threading.Thread(target=land, daemon=True)
    lander.start()
    lander.join(timeout=10)
    assert not lander.is_alive(), "the handler deadlocked on the event's lock"
    assert outcome == (["handled", "interrupted"] if critical else ["interrupted"])
    assert shutdown.requested and shutdown.event.is_set() == critical


def test_a_worker_thread_begins_no_critical_section_after_a_stop_and_settle_waits_for_one():
    """Signals reach the main thread only: a worker's write in hand is waited for by
    ``settle``; once stopping, a worker does not begin another (``Stopping``)."""
    shutdown = Shutdown()
    inside, release = threading.Event(), threading.Event()
    outcome: list[str] = []

    def work() -> None:
        with shutdown.worker():
            with shutdown.critical():
                inside.set()
                release.wait(timeout=10)
                outcome.append("the write in hand")
            try:
                with shutdown.critical():
                    outcome.append("another write")
            except Stopping:
                outcome.append("stopping")

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    assert inside.wait(timeout=10)
    threading.Timer(0.2, release.set).start()
    shutdown.settle()
    assert outcome[:1] == ["the write in hand"]  # done before settle returned
    worker.join(timeout=10)
    assert outcome == ["the write in hand", "stopping"]
