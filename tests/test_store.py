"""The cursor store (atomic, private, loud about corruption) and the state directory lock."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tailer.cursor import Cursor
from tailer.errors import CannotCreateError, CursorSaveError, LockedError, StateError
from tailer.store import CursorStore, StateLock, safe_name

from .conftest import fill

REPO = Path(__file__).resolve().parents[1]

FULL = Cursor(
    project_id=777,
    deploy_id="L-0123456789abcdef",
    position=42,
    trimmed=7,
    tail=("a" * 16, "b" * 16, "c" * 16),
    total=99,
    done=True,
    marks={"file": {"size": 1234, "inode": 5678, "last": "d" * 16}, "loki": {"last_ns": 1}},
)

HOSTILE_IDS = [
    "../../etc/passwd",
    "a/b",
    "a\x00b",
    "a\nb",
    "x" * 300,
    "déploiement-日本語-🚀",
    "..",
    ".",
    "",
    ".hidden",
    "a b",
    "C:\\windows",
    "\udcff",  # a lone surrogate, as surrogateescape would make from an invalid byte
]


def temp_files(store: CursorStore) -> list[Path]:
    return sorted(store.root.rglob("*.tmp"))


# -- round trip, modes, atomic replacement ---------------------------------------------------


@pytest.mark.parametrize(
    "cursor",
    [FULL, Cursor(project_id=1, deploy_id="L-x")],
    ids=["every-field-set", "defaults"],
)
def test_every_field_survives_a_save_and_load(tmp_path, cursor):
    store = CursorStore(tmp_path)
    store.save(cursor)
    assert CursorStore(tmp_path).load_all() == {(cursor.project_id, cursor.deploy_id): cursor}


def test_an_empty_state_directory_has_no_cursors(tmp_path):
    assert CursorStore(tmp_path / "never-created").load_all() == {}


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_cursor_file_is_private_whatever_the_umask(tmp_path, umask):
    store = CursorStore(tmp_path)
    old = os.umask(umask)
    try:
        store.save(FULL)
    finally:
        os.umask(old)
    assert stat.S_IMODE(store.path(777, FULL.deploy_id).stat().st_mode) == 0o600


def test_save_fsyncs_the_file_then_its_directory(tmp_path, monkeypatch):
    """A spy around the real fsync: the data, then the directory entry, reach the disk."""
    synced: list[os.stat_result] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.fstat(fd))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    store = CursorStore(tmp_path)
    store.save(FULL)
    path = store.path(777, FULL.deploy_id)
    assert [stat.S_ISREG(s.st_mode) for s in synced] == [True, False]
    assert synced[0].st_ino == path.stat().st_ino  # the temp file, renamed into place
    assert synced[1].st_ino == path.parent.stat().st_ino


def test_saving_twice_replaces_the_cursor(tmp_path):
    store = CursorStore(tmp_path)
    store.save(Cursor(777, FULL.deploy_id, position=1))
    store.save(FULL)
    assert store.load_all() == {(777, FULL.deploy_id): FULL}
    assert [p.name for p in store.path(777, FULL.deploy_id).parent.iterdir()] == [
        f"{FULL.deploy_id}.json"
    ]


def test_save_leaves_no_temp_file(tmp_path):
    store = CursorStore(tmp_path)
    for position in range(3):
        store.save(Cursor(777, FULL.deploy_id, position=position))
    assert temp_files(store) == []


def test_a_leftover_temp_file_is_removed_by_load_all_and_does_not_matter(tmp_path):
    store = CursorStore(tmp_path)
    store.save(FULL)
    project_dir = store.path(777, FULL.deploy_id).parent
    (project_dir / ".x.json.tmp").write_bytes(b'{"version": 1, "posit')
    (project_dir / f".{FULL.deploy_id}.json.tmp").write_bytes(b"\x00garbage")
    assert store.load_all() == {(777, FULL.deploy_id): FULL}
    assert temp_files(store) == []


def test_cursors_of_many_deployments_load_together(tmp_path):
    store = CursorStore(tmp_path)
    cursors = [Cursor(p, d, position=p) for p in (1, 2) for d in ("L-a", "L-b")]
    for cursor in cursors:
        store.save(cursor)
    assert store.load_all() == {(c.project_id, c.deploy_id): c for c in cursors}


# -- corrupt files are loud ------------------------------------------------------------------


def good_document() -> dict[str, object]:
    return {
        "version": 1,
        "project_id": 777,
        "deploy_id": FULL.deploy_id,
        "position": 42,
        "trimmed": 7,
        "tail": ["a" * 16],
        "total": 99,
        "done": False,
        "marks": {"file": {"size": 1234, "inode": 5678, "last": None}},
    }


def with_fields(**fields: object) -> bytes:
    return json.dumps({**good_document(), **fields}).encode()


def without(key: str) -> bytes:
    document = good_document()
    del document[key]
    return json.dumps(document).encode()


CORRUPT = {
    "garbage": b"\x00\xff\xfe not json at all",
    "empty": b"",
    "truncated": json.dumps(good_document()).encode()[:-20],
    "not-an-object": b"[1, 2, 3]",
    "unknown-version": with_fields(version=2),
    "no-version": without("version"),
    "version-true": with_fields(version=True),
    "missing-field": without("position"),
    "project-id-string": with_fields(project_id="777"),
    "deploy-id-number": with_fields(deploy_id=12),
    "position-string": with_fields(position="42"),
    "position-bool": with_fields(position=True),
    "position-float": with_fields(position=42.0),
    "tail-string": with_fields(tail="abc"),
    "tail-of-numbers": with_fields(tail=[1, 2]),
    "total-string": with_fields(total="99"),
    "total-bool": with_fields(total=True),
    "file-size-float": with_fields(file_size=12.5),
    "marks-not-an-object": with_fields(marks=[1, 2]),
    "mark-not-an-object": with_fields(marks={"file": 1234}),
    "mark-holding-a-list": with_fields(marks={"file": {"size": [1234]}}),
    "mark-holding-a-bool": with_fields(marks={"loki": {"last_ns": True}}),
    "done-int": with_fields(done=1),
    "trimmed-beyond-position": with_fields(trimmed=43, position=42),
    "negative-position": with_fields(position=-1, trimmed=0),
}


@pytest.mark.parametrize("content", CORRUPT.values(), ids=CORRUPT.keys())
def test_a_corrupt_cursor_is_an_error_naming_the_file_and_is_left_untouched(tmp_path, content):
    store = CursorStore(tmp_path)
    path = store.path(777, FULL.deploy_id)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(StateError) as caught:
        store.load_all()
    assert str(path) in str(caught.value)
    assert path.read_bytes() == content


def test_the_good_document_used_above_does_load(tmp_path):
    """Guards the table above: each corrupt case differs from a loadable file in one way."""
    store = CursorStore(tmp_path)
    path = store.path(777, FULL.deploy_id)
    path.parent.mkdir(parents=True)
    path.write_bytes(with_fields())
    assert store.load_all()[(777, FULL.deploy_id)].position == 42


def test_a_cursor_saved_before_outputs_kept_marks_loads_with_them(tmp_path):
    """Cursors saved by earlier versions held the outputs' marks as fields of their own."""
    store = CursorStore(tmp_path)
    path = store.path(777, FULL.deploy_id)
    path.parent.mkdir(parents=True)
    document = {**good_document(), "file_size": 1234, "file_inode": 5678, "last_ns": 9}
    del document["marks"]
    path.write_text(json.dumps({**document, "file_last": "d" * 16}))
    cursor = store.load_all()[(777, FULL.deploy_id)]
    assert cursor.marks == {
        "file": {"size": 1234, "inode": 5678, "last": "d" * 16},
        "loki": {"last_ns": 9},
    }
    store.save(cursor)
    saved = json.loads(path.read_text())
    assert "file_size" not in saved and saved["marks"] == cursor.marks
    assert store.load_all()[(777, FULL.deploy_id)] == cursor


# -- a full disk -----------------------------------------------------------------------------


def test_a_save_that_hits_a_full_disk_keeps_the_old_cursor(tiny_tmpfs):
    store = CursorStore(tiny_tmpfs / "state")
    old = Cursor(777, FULL.deploy_id, position=1)
    store.save(old)
    fill(tiny_tmpfs / "filler")

    with pytest.raises(CursorSaveError, match="disk is full") as caught:
        store.save(FULL)

    assert str(tiny_tmpfs / "state") in str(caught.value)
    assert temp_files(store) == []
    assert CursorStore(tiny_tmpfs / "state").load_all() == {(777, FULL.deploy_id): old}
    (tiny_tmpfs / "filler").unlink()
    store.save(FULL)
    assert store.load_all() == {(777, FULL.deploy_id): FULL}


# -- names from the API ----------------------------------------------------------------------


@pytest.mark.parametrize("deploy_id", HOSTILE_IDS, ids=repr)
def test_a_hostile_deploy_id_stays_inside_the_store(tmp_path, deploy_id):
    store = CursorStore(tmp_path / "state")
    path = store.path(777, deploy_id)
    assert path.parent == store.root / "777"
    assert path.resolve().is_relative_to(store.root.resolve())
    assert not path.name.startswith(".")  # never mistaken for a temp file
    cursor = Cursor(777, deploy_id, position=3)
    store.save(cursor)
    assert store.load_all() == {(777, deploy_id): cursor}
    assert [p.parent for p in (tmp_path / "state").rglob("*") if p.is_file()] == [path.parent]


def test_hostile_deploy_ids_get_distinct_names():
    names = [safe_name(deploy_id) for deploy_id in HOSTILE_IDS]
    assert len(set(names)) == len(HOSTILE_IDS)


@pytest.mark.parametrize(
    "deploy_id",
    ["L-abc\n", "L-abc\r", "L-a\nb", "\nL-abc", "L-abc\x00", "L-abc/..", "..", "L-\x1b[2J"],
    ids=repr,
)
def test_a_name_with_a_control_character_or_a_slash_is_never_taken_as_plain(deploy_id):
    name = safe_name(deploy_id)
    assert re.fullmatch(r"[A-Za-z0-9_-]{0,48}~[0-9a-f]{20}", name), name


def test_names_of_300_characters_are_shortened_and_kept_apart():
    names = {safe_name("L-" + "a" * 298), safe_name("L-" + "a" * 297 + "b")}
    assert len(names) == 2 and all(len(name) <= 80 for name in names)


def test_deploy_ids_that_differ_only_in_case_get_distinct_names():
    assert safe_name("L-abc") == "L-abc" and safe_name("L-ABC") == "L-ABC"


def test_plain_deploy_ids_keep_their_own_name():
    assert safe_name("L-0123456789abcdef") == "L-0123456789abcdef"


def test_long_deploy_ids_that_differ_only_at_the_end_get_distinct_names():
    assert safe_name("x" * 300) != safe_name("x" * 299 + "y")
    assert safe_name("a/" + "b" * 100 + "1") != safe_name("a/" + "b" * 100 + "2")


def test_a_plain_deploy_id_never_takes_the_name_given_to_a_sanitised_one():
    """A deploy id spelled like the stand-in of another must not share its file."""
    stand_in = safe_name("a/b")
    assert safe_name(stand_in) != stand_in


def test_two_long_deploy_ids_keep_two_cursors(tmp_path):
    store = CursorStore(tmp_path)
    first, second = Cursor(777, "x" * 300, position=1), Cursor(777, "x" * 299 + "y", position=2)
    store.save(first)
    store.save(second)
    positions = {cursor.position for cursor in store.load_all().values()}
    assert positions == {1, 2}


@settings(max_examples=300, deadline=None, database=None)
@given(st.text())
def test_any_deploy_id_maps_to_one_harmless_file_name_under_the_root(deploy_id):
    root = Path("/state/cursors")
    path = CursorStore(Path("/state")).path(777, deploy_id)
    assert path.parent == root / "777"
    assert path.name not in {".json", "..json"}
    assert not path.name.startswith(".")
    assert "/" not in path.name
    assert "\x00" not in path.name
    assert len(path.name.encode()) <= 255


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.text(), unique=True, max_size=20))
def test_safe_name_is_injective_on_samples(deploy_ids):
    assert len({safe_name(deploy_id) for deploy_id in deploy_ids}) == len(deploy_ids)


# -- the state directory lock ----------------------------------------------------------------

HOLD = """
import sys
from pathlib import Path
from tailer.store import StateLock
lock = StateLock(Path(sys.argv[1]))
lock.acquire()
print("held", flush=True)
sys.stdin.read()
lock.release()
"""


@pytest.fixture
def holder(tmp_path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the lock of ``tmp_path`` until its stdin closes."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "held\n"
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


def test_a_second_process_is_refused_the_lock_and_told_the_holders_pid(tmp_path, holder):
    with pytest.raises(LockedError, match=rf"\(pid {holder.pid}\)"):
        StateLock(tmp_path).acquire()


def test_the_lock_can_be_taken_once_the_other_process_releases_it(tmp_path, holder):
    assert holder.stdin is not None
    holder.stdin.close()  # the holder releases and exits
    assert holder.wait(timeout=10) == 0
    lock = StateLock(tmp_path)
    lock.acquire()
    lock.release()


def test_the_lock_is_freed_when_its_holder_is_killed(tmp_path, holder):
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    lock = StateLock(tmp_path)
    lock.acquire()
    assert (tmp_path / "lock").read_text() == f"{os.getpid()}\n"
    lock.release()


def test_after_release_the_lock_can_be_taken_again_in_the_same_process(tmp_path):
    first, second = StateLock(tmp_path), StateLock(tmp_path)
    first.acquire()
    with pytest.raises(LockedError, match=rf"\(pid {os.getpid()}\)"):
        second.acquire()
    first.release()
    second.acquire()
    second.release()
    first.acquire()
    first.release()


@pytest.mark.parametrize("where", ["under-a-file", "proc"])
def test_a_state_directory_that_cannot_be_made_is_a_clear_error(tmp_path, where):
    (tmp_path / "file").write_text("")
    state = tmp_path / "file" / "state" if where == "under-a-file" else Path("/proc/qc-tail")
    with pytest.raises(CannotCreateError) as caught:
        StateLock(state).acquire()
    assert caught.value.exit_code == 73
    assert f"state.dir = {state}" in str(caught.value)


def test_a_save_into_a_state_directory_that_cannot_take_it_keeps_the_old_cursor(tmp_path):
    """Stands in for a read-only one (root writes through modes): a file where the
    project's cursor directory should be."""
    store = CursorStore(tmp_path / "state")
    store.save(Cursor(777, "L-a", position=1))
    (store.root / "778").write_text("")
    with pytest.raises(CursorSaveError, match="cannot save a cursor"):
        store.save(Cursor(778, "L-b", position=2))
    assert store.load_all() == {(777, "L-a"): Cursor(777, "L-a", position=1)}


def test_load_project_reads_only_that_projects_cursors(tmp_path):
    store = CursorStore(tmp_path)
    store.save(Cursor(1, "L-a", position=3))
    store.save(Cursor(1, "L-b", position=4))
    store.save(Cursor(2, "L-c", position=5))
    assert store.load_project(1) == {
        (1, "L-a"): Cursor(1, "L-a", position=3),
        (1, "L-b"): Cursor(1, "L-b", position=4),
    }
    assert store.load_project(3) == {}
    assert CursorStore(tmp_path / "none").load_project(1) == {}


def test_a_cursor_saved_before_runs_were_kept_loads_without_one(tmp_path):
    """Older cursor files have no ``run`` nor ``anchor``: the run is then not known."""
    store = CursorStore(tmp_path)
    path = store.path(777, FULL.deploy_id)
    path.parent.mkdir(parents=True)
    path.write_bytes(with_fields())
    cursor = store.load_all()[(777, FULL.deploy_id)]
    assert (cursor.run, cursor.anchor) == (0, None)
