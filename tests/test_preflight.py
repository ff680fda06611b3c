"""What `check` asks Loki: its /ready beside the push path."""

from __future__ import annotations

import pytest

from tailer.preflight import ready_url


@pytest.mark.parametrize(
    ("push", "ready"),
    [
        ("http://127.0.0.1:3100/loki/api/v1/push", "http://127.0.0.1:3100/ready"),
        (
            "https://u:p@gw.example/tenant-a/loki/api/v1/push",
            "https://u:p@gw.example/tenant-a/ready",
        ),
        ("http://loki:3100/api/prom/push", "http://loki:3100/ready"),
        ("http://gw.example/custom/ingest", "http://gw.example/custom/ingest"),  # asked as is
    ],
)
def test_ready_is_asked_beside_the_push_path(push, ready):
    assert ready_url(push) == ready
