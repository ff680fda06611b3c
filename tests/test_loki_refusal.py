"""Loki's refusals read: the texts are the real Loki binary's, as it answered our pushes."""

from __future__ import annotations

import pytest

from tailer.sinks.loki_refusal import Refusal, problem, refusals

STREAM = '{job="t2", name="oldnew", service_name="oldnew"}'
TOO_OLD = (
    f"3 errors like: entry for stream '{STREAM}' has timestamp too old: 2026-11-21T16:37:25Z, "
    "oldest acceptable timestamp is: 2026-11-24T17:27:25Z\n"
)
ONE_TOO_OLD = (
    f"entry for stream '{STREAM}' has timestamp too old: 2026-11-21T16:40:19Z, oldest "
    "acceptable timestamp is: 2026-11-24T17:30:19Z\n"
)
TWO_STREAMS = (
    '30 errors like: entry for stream \'{job="t", name="c", service_name="c"}\' has '
    "timestamp too old: 2026-11-21T16:27:18Z, oldest acceptable timestamp is: "
    '2026-11-24T17:27:18Z; 30 errors like: entry for stream \'{job="t", name="b", '
    'service_name="b"}\' has timestamp too old: 2026-11-21T16:27:18Z, oldest acceptable '
    "timestamp is: 2026-11-24T17:27:18Z\n"
)
OLD_AND_LONG = (
    f"3 errors like: entry for stream '{STREAM}' has timestamp too old: 2026-11-21T16:37:25Z, "
    "oldest acceptable timestamp is: 2026-11-24T17:27:25Z; 1 errors like: max entry size "
    f"'262144' bytes exceeded for stream '{STREAM}' while adding an entry with length "
    "'300000' bytes\n"
)
TOO_LONG = (
    f"max entry size '262144' bytes exceeded for stream '{STREAM}' while adding an entry "
    "with length '300000' bytes\n"
)
TOO_NEW = f"entry for stream '{STREAM}' has timestamp too new: 2026-12-01T18:30:19Z\n"
BEHIND = (
    "entry with timestamp 2026-12-01 14:37:25.045682465 +0000 UTC ignored, reason: 'entry too "
    "far behind, entry timestamp is: 2026-12-01T14:37:25Z, oldest acceptable timestamp is: "
    "2026-12-01T15:37:25Z',\nentry with timestamp 2026-12-01 14:37:25.045682466 +0000 UTC "
    "ignored, reason: 'entry too far behind, entry timestamp is: 2026-12-01T14:37:25Z, oldest "
    "acceptable timestamp is: 2026-12-01T15:37:25Z',\nuser 'fake', total ignored: 2 out of 4 "
    'for stream: {job="t2", name="ok", service_name="ok"}\n'
)
BAD_LABEL = "couldn't parse labels: 1:2: parse error: unexpected character inside braces: '9'\n"


@pytest.mark.parametrize(
    ("text", "entries", "expected"),
    [
        (TOO_OLD, 6, [Refusal("too old", 3)]),
        (ONE_TOO_OLD, 1, [Refusal("too old", 1)]),
        (TWO_STREAMS, 60, [Refusal("too old", 60)]),
        (OLD_AND_LONG, 8, [Refusal("too old", 3), Refusal("too long", 1)]),
        (TOO_LONG, 5, [Refusal("too long", 1)]),
        (TOO_NEW, 2, [Refusal("too new", 1)]),
        (BEHIND, 4, [Refusal("too far behind", 2)]),
        (BAD_LABEL, 7, [Refusal("refused", 7)]),  # names no entry: the whole push
        ("fault injected: 400 Bad Request", 3, [Refusal("refused", 3)]),
        (TWO_STREAMS, 10, [Refusal("too old", 10)]),  # misread: never more than were sent
    ],
)
def test_a_400_names_the_entries_it_refused(text, entries, expected):
    assert refusals(text, entries) == expected


class _Answer:
    status_code = 302
    headers = {"Location": "https://logs.example/loki/api/v1/push"}  # noqa: RUF012


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (401, "Loki refuses our credentials (HTTP 401 from http://h/push)"),
        (403, "Loki forbids this to our credentials (HTTP 403 from http://h/push)"),
        (404, "no Loki API at http://h/push (HTTP 404)"),
        (405, "Loki refuses the request (HTTP 405 from http://h/push)"),
    ],
)
def test_other_refusals_are_said_in_words_to_act_on(status, expected):
    assert problem(status, "http://h/push") == expected


def test_a_redirect_names_where_it_leads():
    expected = "http://h/push redirects to https://logs.example/loki/api/v1/push (HTTP 302)"
    assert problem(302, "http://h/push", _Answer()).startswith(expected)
