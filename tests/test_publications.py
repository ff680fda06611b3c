"""Telling a quiet pair of windows from reads of the log's end, on a clock of our own."""

from __future__ import annotations

from concurrent.futures import Future

from tailer.api import LogWindow
from tailer.cursor import Cursor
from tailer.publications import PATIENCE, STEP, EndRead, Publications
from tailer.realign import End

CURSOR = Cursor(1, "L-1")
END: End = (90, 0, 100, ("a", "b"))
MOVED: End = (90, 0, 100, ("b", "c"))


class Ends:
    """Reads of the end, each taking one tick of a clock the test also stamps windows with."""

    def __init__(self, *ends: End | None) -> None:
        self.ends = list(ends)
        self.now = 0.0
        self.known: list[End | None] = []
        self.pauses: list[float] = []

    def read(self, known: End | None) -> EndRead:
        self.known.append(known)
        asked = self.tick()
        return EndRead(asked, self.tick(), self.ends.pop(0))

    def pause(self, seconds: float) -> None:
        self.pauses.append(seconds)

    def window(self) -> LogWindow:
        asked = self.tick()
        return LogWindow(("x",), 100, 0, asked, self.tick())

    def tick(self) -> float:
        self.now += 1.0
        return self.now


def watching(ends: Ends) -> Publications:
    """Publications whose first read of the end is made, then lines delivered from a window."""
    published = Publications(ends.read, ends.pause)
    published.watch()
    published.delivered(ends.window(), CURSOR)
    return published


def test_two_windows_between_alike_reads_of_the_end_are_quiet() -> None:
    ends = Ends(END, END)
    published = watching(ends)
    assert published.quiet(CURSOR, ends.window(), list)
    assert ends.known == [None, END]  # the second read watched the rows the first found


def test_a_read_of_the_end_unlike_the_one_before_is_a_publication() -> None:
    ends = Ends(END, MOVED)
    published = watching(ends)
    assert not published.quiet(CURSOR, ends.window(), list)


def test_a_window_asked_before_the_first_read_of_the_end_is_not_quiet() -> None:
    ends = Ends(END, END)
    published = Publications(ends.read, ends.pause)
    earlier = ends.window()
    published.watch()
    published.delivered(earlier, CURSOR)
    assert not published.quiet(CURSOR, ends.window(), list)


def test_an_end_that_cannot_be_watched_is_never_quiet() -> None:
    ends = Ends(None, None)
    published = watching(ends)
    assert not published.quiet(CURSOR, ends.window(), list)


def test_lines_from_another_answer_or_one_of_unknown_time_are_not_quiet() -> None:
    ends = Ends(END, END)
    published = watching(ends)
    assert not published.quiet(Cursor(1, "L-1"), ends.window(), list)  # another cursor
    assert not published.quiet(CURSOR, LogWindow(("x",), 100, 0), list)  # an export's
    assert len(ends.known) == 1  # neither asked for a read


def test_one_read_after_a_group_answered_covers_all_of_it() -> None:
    """The windows asked ahead and on their way are awaited before the end is read, so the
    next windows need no read of their own."""
    ends = Ends(END, END)
    published = Publications(ends.read, ends.pause)
    published.watch()
    first, second = ends.window(), ends.window()
    group = [Future[LogWindow]() for _ in range(3)]
    answers = []
    for future in group:
        future.set_running_or_notify_cancel()
        answers.append(ends.window())
        future.set_result(answers[-1])
    published.delivered(first, CURSOR)
    assert published.quiet(CURSOR, second, lambda: group)
    previous = second
    for window in answers:
        published.delivered(previous, CURSOR)
        assert published.quiet(CURSOR, window, list)
        previous = window
    assert len(ends.known) == 2


def test_after_a_reset_the_end_is_read_again_before_any_window_is_quiet() -> None:
    ends = Ends(END, END, END)
    published = Publications(ends.read, ends.pause)
    published.watch()
    published.reset()
    published.delivered(ends.window(), CURSOR)
    assert not published.quiet(CURSOR, ends.window(), list)
    published.watch()
    assert ends.known == [None, None]


def test_a_group_held_up_is_not_awaited_past_a_second_without_an_answer() -> None:
    """Read-ahead held up (behind another deployment's silent server, say): after a second
    with no answer of the group the end is read without it, and later groups are not awaited
    in this catch-up. Signs of life all the while."""
    ends = Ends(END, END, END)
    published = watching(ends)
    stuck = Future[LogWindow]()
    window = ends.window()
    assert published.quiet(CURSOR, window, lambda: [stuck])
    assert len(ends.pauses) == round(PATIENCE / STEP)
    published.delivered(window, CURSOR)
    assert published.quiet(CURSOR, ends.window(), lambda: [Future[LogWindow]()])
    assert len(ends.pauses) == round(PATIENCE / STEP)  # not awaited again
