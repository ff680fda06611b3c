"""The timestamped hash, and the clock that corrects for skew."""

from email.utils import formatdate

from structlog.testing import capture_logs

from tailer.auth import QcAuth, ServerClock, auth_headers, signature

# sha256("abc:1700000000"), and base64("1234:" + that), computed with sha256sum and base64.
KNOWN_HASH = "bd3c65e40382f265264d55f094fd93b4fc17091e094df758b8eb909bb0127b26"
KNOWN_BASIC = (
    "MTIzNDpiZDNjNjVlNDAzODJmMjY1MjY0ZDU1ZjA5NGZkOTNiNGZjMTcwOTFlMDk0ZGY3NThiOGViOTA5YmIwMTI3YjI2"
)


def test_signature_matches_known_vector():
    assert signature("abc", 1700000000) == KNOWN_HASH


def test_headers_match_known_vector():
    assert auth_headers(1234, "abc", 1700000000) == {
        "Timestamp": "1700000000",
        "Authorization": f"Basic {KNOWN_BASIC}",
    }


def test_every_request_is_signed_with_the_time_it_is_sent():
    now = [1700000000.0]
    auth = QcAuth(1234, "abc", ServerClock(now=lambda: now[0]))
    first = auth.headers()
    now[0] += 61
    second = auth.headers()
    assert first["Timestamp"] == "1700000000"
    assert second["Timestamp"] == "1700000061"
    assert first["Authorization"] != second["Authorization"]


def test_repr_never_shows_the_token():
    auth = QcAuth(1234, "sekrit-token")
    assert "sekrit" not in repr(auth)
    assert "sekrit" not in str(vars(auth).get("user_id"))


def test_small_disagreement_is_noise():
    clock = ServerClock(now=lambda: 1700000000.0)
    clock.observe(formatdate(1700000002, usegmt=True))
    assert clock.offset == 0.0
    assert clock.now() == 1700000000.0


def test_skew_is_adopted_and_warned_once():
    clock = ServerClock(now=lambda: 1700000000.0)
    with capture_logs() as events:
        clock.observe(formatdate(1700003600, usegmt=True))
        clock.observe(formatdate(1700003600, usegmt=True))
    assert clock.offset == 3600.0
    assert clock.now() == 1700003600.0
    warnings = [e for e in events if e["event"] == "clock_skew"]
    assert len(warnings) == 1
    assert warnings[0]["message"] == "clock skew of 3600 s"


def test_unparseable_date_is_ignored():
    clock = ServerClock(now=lambda: 1700000000.0)
    clock.observe("not a date")
    clock.observe(None)
    assert clock.offset == 0.0
