"""Redaction: a URL's user part, and secrets a server echoes, never reach a message."""

from __future__ import annotations

import pytest

from tailer.redaction import credentials_in, redact, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://127.0.0.1:3100/loki/api/v1/push", "http://127.0.0.1:3100/loki/api/v1/push"),
        ("http://user:pw@loki:3100/loki/api/v1/push", "http://***@loki:3100/loki/api/v1/push"),
        ("https://glc_token@logs.example/push", "https://***@logs.example/push"),
        ("http://user:pw@loki:99999/push", "http://***@loki:99999/push"),  # a bad port
        ("http://user:p@ss@loki/push", "http://***@loki/push"),
        ("user:pw@loki:3100/push", "***@loki:3100/push"),  # no scheme
        ("http//user:pw@loki/push", "***@loki/push"),  # a typo
        ("http://loki/search?q=a@b", "http://loki/search?q=a@b"),  # not a user part
    ],
)
def test_a_url_is_shown_without_its_user_part(url, shown):
    assert redact_url(url) == shown


def test_echoed_credentials_are_masked_in_every_form_sent():
    url = "http://us%40er:p%2Fss-w0rd@loki/push"
    known = credentials_in(url, "admin", "hunter2-secret", "bearer-token-1234")
    echoed = (
        "Authorization: Basic YWRtaW46aHVudGVyMi1zZWNyZXQ= (admin:hunter2-secret) "
        "bearer-token-1234 p/ss-w0rd p%2Fss-w0rd dXNAZXI6cC9zcy13MHJk at http://us%40er:x@loki"
    )
    shown = redact(echoed, known)
    for secret in ("hunter2-secret", "YWRtaW46", "bearer-token-1234", "p/ss-w0rd", "p%2Fss"):
        assert secret not in shown
    assert "dXNAZXI6cC9zcy13MHJk" not in shown and "us%40er:x" not in shown
    assert shown.startswith("Authorization: [redacted]")


def test_redact_keeps_an_ordinary_reason_readable():
    reason = "entry for stream '{job=\"qc-tail\"}' has timestamp too old: 2026-03-01T09:30:00Z"
    assert redact(reason, credentials_in("http://loki/push")) == reason
