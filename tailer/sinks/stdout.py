"""Standard output: raw lines (optionally prefixed) or one JSON object per line."""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TextIO

from tailer.cursor import Cursor
from tailer.errors import WriteFailedError
from tailer.records import Gap, Line, escaped, escaped_lines, expand, line_time, texts_of
from tailer.sinks import Record

_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\[\]]")


def display_name(name: str) -> str:
    """A name safe inside ``[...]``: no brackets or control characters, at most 64 chars."""
    return _UNSAFE.sub("_", name)[:64] or "_"


def line_object(line: Line) -> dict[str, Any]:
    stamp = line_time(line.text)
    return {
        "type": "line",
        "project_id": line.project_id,
        "deploy_id": line.deploy_id,
        "name": line.name,
        "line": line.number,
        "position": line.position,
        "time": stamp.isoformat() if stamp else None,
        "text": line.text,
    }


def gap_object(gap: Gap) -> dict[str, Any]:
    return {
        "type": "gap",
        "project_id": gap.project_id,
        "deploy_id": gap.deploy_id,
        "name": gap.name,
        "lost": gap.lost,
        "position": gap.position,
    }


class StdoutSink:
    """Writes to a text stream; data only (events go to stderr).

    In text mode each row is one line, its control characters escaped (``escaped``), so no
    row can pose as another; a prefix ``[name] `` marks each line when ``prefix`` is on; once
    a project has shown a second deployment in this run, its lines carry the deploy id too.
    With ``prefix=None`` it turns on from the first line of a second deployment (a redeploy
    followed by ``tail -f``): every line without a prefix is then the first deployment's.

    When the reader goes away (a closed pipe, the journal gone), ``on_closed`` is called
    once, and the sink takes no more lines; without it BrokenPipeError is raised (``tail |
    head`` then ends quietly). Any other failure to write is a WriteFailedError.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        format: str = "text",
        prefix: bool | None = False,
        on_closed: Callable[[], None] | None = None,
        paint: Callable[[str, str], str] | None = None,
    ) -> None:
        self.stream = stream
        self._paint = paint  # (key, "[label]") -> the label as shown: a colour per project
        self.format = format
        self.prefix = prefix
        self.closed = False
        self._on_closed = on_closed
        self._latest: dict[int, str] = {}  # project -> the deployment of its last line
        self._several: set[int] = set()  # projects that showed several deployments in the run

    def write(self, records: Sequence[Record]) -> None:
        if self.format == "text" and self.prefix is None:
            second = self._second_deployment(records)
            if second is None:
                self._write_plain(records)
                return
            self._write_plain(records[:second])
            self.prefix = True
            records = records[second:]
        if self.format == "text" and not self.prefix:
            self._write_plain(records)
            return
        out = []
        for record in expand(records):
            if self.format == "json":
                obj = line_object(record) if isinstance(record, Line) else gap_object(record)
                out.append(json.dumps(obj, ensure_ascii=False) + "\n")
            elif isinstance(record, Line):
                out.append(self._text(record))
        self._emit("".join(out))

    def _write_plain(self, records: Sequence[Record]) -> None:
        """The raw lines: the common case, kept cheap (no Line object per line)."""
        texts = texts_of(records)
        if texts:
            self._emit(escaped_lines(texts))

    def _second_deployment(self, records: Sequence[Record]) -> int | None:
        """The index of the first line record of a second deployment seen in this run."""
        for index, record in enumerate(records):
            if isinstance(record, Gap):
                continue
            if self._latest and self._latest.get(record.project_id) != record.deploy_id:
                return index
            self._latest[record.project_id] = record.deploy_id
        return None

    def _emit(self, text: str) -> None:
        if not self.closed:
            self._attempt(self._write_text, text)

    def _write_text(self, text: str) -> None:
        try:
            self.stream.write(text)
        except UnicodeEncodeError:  # a lone surrogate: shown as an escape, not a crash
            self.stream.write(text.encode("utf-8", "backslashreplace").decode("utf-8"))

    def flush(self) -> None:
        if not self.closed:
            self._attempt(self.stream.flush)

    def _attempt(self, action: Callable[..., object], *args: Any) -> None:
        try:
            action(*args)
        except BrokenPipeError:
            if self._on_closed is None:
                raise
            self.closed = True
            self._let_go()
            self._on_closed()
        except OSError as exc:
            raise WriteFailedError(f"stdout: cannot write: {exc.strerror or exc}") from None

    def _let_go(self) -> None:
        """Point the stream's descriptor at /dev/null: what it still buffers then goes
        nowhere, instead of failing again when the interpreter flushes it at exit."""
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)

    def close(self) -> None:
        self.flush()

    def note(self, obj: dict[str, Any]) -> None:
        """An object about the stream, not a line of it (a deployment's status), in the json
        format only: text carries log lines alone."""
        if self.format == "json":
            self._emit(json.dumps(obj, ensure_ascii=False) + "\n")
            self.flush()

    def stamp(self, cursor: Cursor) -> Cursor:
        return cursor

    def recover(self, cursors: Iterable[Cursor]) -> None:
        """Nothing to undo: a terminal or a pipe keeps what it was given."""

    def _text(self, line: Line) -> str:
        if not self.prefix:
            return escaped(line.text) + "\n"
        latest = self._latest.get(line.project_id)
        if latest is not None and latest != line.deploy_id:
            self._several.add(line.project_id)
        self._latest[line.project_id] = line.deploy_id
        label = display_name(line.name)
        if line.project_id in self._several:
            label += " " + display_name(line.deploy_id)[:10]
        shown = f"[{label}]"
        if self._paint is not None:
            shown = self._paint(str(line.project_id), shown)
        return f"{shown} {escaped(line.text)}\n"
