"""Tests for tailer.metrics_listener: /metrics and /healthz over loopback."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tailer.errors import CannotListenError
from tailer.metrics import Metrics
from tailer.metrics_listener import MetricsListener


def get(port: int, path: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_metrics_are_served_in_the_prometheus_text_format() -> None:
    metrics = Metrics()
    metrics.delivered("files", 3)
    exporter = MetricsListener(("127.0.0.1", 0), metrics, lambda: None)
    try:
        status, kind, text = get(exporter.port, "/metrics")
    finally:
        exporter.close()

    assert status == 200 and kind.startswith("text/plain")
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert families["qc_tail_lines"].samples[0].value == 3


def test_healthz_follows_the_verdict_with_a_one_line_reason() -> None:
    verdict: list[str | None] = [None]
    exporter = MetricsListener(("127.0.0.1", 0), Metrics(), lambda: verdict[0])
    try:
        healthy = get(exporter.port, "/healthz")
        verdict[0] = "the worker of files has shown no progress for 90 s (limit 60 s)"
        stuck = get(exporter.port, "/healthz")
        verdict[0] = None
        again = get(exporter.port, "/healthz")
    finally:
        exporter.close()

    assert healthy[0] == 200 and healthy[2] == "ok\n"
    assert stuck[0] == 503
    assert stuck[2] == "the worker of files has shown no progress for 90 s (limit 60 s)\n"
    assert again[0] == 200


def test_an_address_in_use_is_a_clear_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(
            CannotListenError, match=rf"metrics.listen: cannot listen on 127.0.0.1:{port}"
        ):
            MetricsListener(("127.0.0.1", port), Metrics(), lambda: None)


def test_ipv6_loopback_is_served() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        exporter = MetricsListener(("::1", 0), Metrics(), lambda: None)
    except CannotListenError:
        pytest.skip("no IPv6 loopback here")
    try:
        with urllib.request.urlopen(f"http://[::1]:{exporter.port}/healthz", timeout=10) as answer:
            assert answer.status == 200
    finally:
        exporter.close()
