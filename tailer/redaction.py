"""Secrets kept out of messages: credentials in URLs, and whatever a server echoes back."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from urllib.parse import quote, unquote, urlsplit, urlunsplit

MASK = "[redacted]"
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s@]*@")
_AUTHORIZATION = re.compile(
    r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)(?:(?:basic|bearer)\s+)?[^\s\"',;]+"
)
_SIGNATURE = re.compile(r"[A-Za-z0-9+/]{40,}={0,2}")  # hex digests and base64 headers alike


def redact_url(url: str) -> str:
    """``url`` without its user and password: ``http://***@host:3100/loki/api/v1/push``.

    The whole user part goes: a token is sometimes the user name, with no password.
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # a broken port or IPv6 literal: still nothing of the user part
        parts = None
    if parts is not None and parts.netloc:
        if "@" not in parts.netloc:
            return url
        return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))
    masked = _USERINFO.sub(r"\1***@", url)
    if "@" in masked and "***@" not in masked:  # not a URL as parsers see it: mask all before
        masked = "***@" + masked.rpartition("@")[2]
    return masked


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Text from elsewhere (a server's error body, an exception), minus the ``secrets``
    given, any URL's user part, any Authorization value, and anything shaped like a
    signature or a base64 header."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    text = _USERINFO.sub(r"\1***@", text)
    text = _AUTHORIZATION.sub(r"\1" + MASK, text)
    return _SIGNATURE.sub(MASK, text)


def credentials_in(
    url: str, username: str | None = None, password: str | None = None, token: str | None = None
) -> list[str]:
    """Every form a server could echo of these credentials and of those in ``url``: as
    given, percent-decoded, and as the Basic value sent for them."""
    try:
        parts = urlsplit(url)
        in_url = [(parts.username, parts.password)]
    except ValueError:
        in_url = []
    found: list[str] = [token] if token else []
    for user, secret in [(username, password), *in_url]:
        if secret:
            found += [secret, quote(secret, safe=""), _basic(user or "", secret)]
            found += [_basic(unquote(user or ""), unquote(secret)), unquote(secret)]
        elif user:  # a token given as the user name
            found += [user, unquote(user), _basic(unquote(user), "")]
    return sorted(set(found), key=len, reverse=True)  # the longest first: no half-masked ones


def _basic(username: str, password: str) -> str:
    return base64.b64encode(f"{username}:{password}".encode()).decode()
