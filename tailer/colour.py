"""Colour for the ``[name]`` prefixes of a terminal, one per target, as stern does."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TextIO

PALETTE = (36, 33, 32, 35, 34, 31, 96, 93, 92, 95, 94, 91)
"""ANSI foreground colours, the most readable first (cyan, yellow, green, magenta, ...)."""


def wanted(choice: str, stream: TextIO, env: Mapping[str, str]) -> bool:
    """Whether to colour what goes to ``stream``: ``always``, ``never``, or (``auto``) only on
    a terminal that can show it, and not when ``NO_COLOR`` is set (no-color.org)."""
    if choice != "auto":
        return choice == "always"
    if env.get("NO_COLOR") or env.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream: no terminal
        return False


class Painter:
    """Paints each label in its own colour, given in the order labels first appear (so the
    first twelve targets never share one); the same label keeps its colour."""

    def __init__(self, palette: tuple[int, ...] = PALETTE) -> None:
        self._palette = palette
        self._given: dict[str, int] = {}

    def __call__(self, key: str, text: str) -> str:
        code = self._given.setdefault(key, self._palette[len(self._given) % len(self._palette)])
        return f"\x1b[{code}m{text}\x1b[0m"
