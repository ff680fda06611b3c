"""Tests for tailer.discovery's shards: which instance owns which project."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

from tailer.config import DiscoveryConfig
from tailer.discovery import Discovery, shard_of


def test_a_project_belongs_to_one_shard_whatever_process_asks() -> None:
    here = [shard_of(project_id, 5) for project_id in range(1, 50)]
    code = "from tailer.discovery import shard_of; print([shard_of(p, 5) for p in range(1, 50)])"
    elsewhere = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345"},
    ).stdout.strip()

    assert str(here) == elsewhere
    assert shard_of(23456789, 3) == shard_of(23456789, 3)


def test_shards_split_projects_roughly_evenly() -> None:
    counts = Counter(shard_of(project_id, 4) for project_id in range(10_000_000, 10_004_000))

    assert set(counts) == {1, 2, 3, 4}
    assert all(800 <= count <= 1200 for count in counts.values()), counts


def test_discovery_wants_only_its_shard_of_the_listed_projects() -> None:
    projects = (1, 2, 3, 4, 5, 6, 7, 8, 9)
    owners = {
        k: {
            p
            for p in range(1, 20)
            if Discovery(None, DiscoveryConfig(projects=projects, shard=(k, 3))).wants(p)
        }  # type: ignore[arg-type]
        for k in (1, 2, 3)
    }

    assert sorted(p for owned in owners.values() for p in owned) == list(projects)
    assert all(owned.isdisjoint(owners[j]) for k, owned in owners.items() for j in owners if j != k)
