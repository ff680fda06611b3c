"""Resolving ``tail``'s targets: project ids, and names as the API knows them."""

from __future__ import annotations

import pytest

from tailer.api import QcApi
from tailer.auth import QcAuth
from tailer.errors import UsageError
from tailer.targets import Target, resolve

from .conftest import PROJECT, TOKEN, USER_ID


@pytest.fixture
def api(emu) -> QcApi:
    emu.add_project(888, "Momentum-Crypto")
    emu.add_project(999, "pairs")
    emu.add_project(1000, "PAIRS")
    return QcApi(emu.base_url, QcAuth(USER_ID, TOKEN))


def test_ids_need_no_request(api, emu):
    emu.stats.reset()
    assert resolve(api, ["777", "123"]) == [Target(PROJECT), Target(123)]
    assert emu.stats.requests == 0


def test_names_in_any_case_once_each_in_order(api, emu):
    emu.stats.reset()
    got = resolve(api, ["MOMENTUM-crypto", "777", "mean-reversion", "888"])
    assert got == [Target(888, "Momentum-Crypto"), Target(PROJECT)]
    assert emu.stats.by_path == {"/projects/read": 1}  # every name from one answer


def test_an_ambiguous_name_lists_the_candidates(api):
    with pytest.raises(UsageError, match=r"ambiguous.*999 \(pairs\), 1000 \(PAIRS\)"):
        resolve(api, ["Pairs"])


def test_an_unknown_name_lists_the_projects(api):
    with pytest.raises(UsageError, match=r"no project is named 'x'.*mean-reversion \(777\)"):
        resolve(api, ["x"])


def test_a_usage_error_exits_2():
    assert UsageError("x").exit_code == 2
