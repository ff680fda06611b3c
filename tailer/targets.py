"""What ``tail`` follows: projects named by id or by name, as ``list`` shows them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tailer.api import QcApi
from tailer.errors import UsageError


@dataclass(frozen=True, slots=True)
class Target:
    """One project to follow; ``name`` as the user wrote it resolved (None: from the API)."""

    project_id: int
    name: str | None = None


def resolve(api: QcApi, words: Sequence[str]) -> list[Target]:
    """The projects ``words`` name, in order and each once: a word of digits is a project id,
    any other a project name (exact, case-insensitive). A name that matches no project, or
    several, is a UsageError listing what there is to choose from."""
    names: dict[int, str] | None = None  # asked once, and only if a name is given
    targets: list[Target] = []
    for word in words:
        if word.isdigit():
            target = Target(int(word))
        else:
            if names is None:
                names = api.projects()
            target = _by_name(word, names)
        if target.project_id not in {t.project_id for t in targets}:
            targets.append(target)
    return targets


def _by_name(word: str, names: dict[int, str]) -> Target:
    wanted = word.casefold()
    found = sorted(pid for pid, name in names.items() if name.casefold() == wanted)
    if len(found) == 1:
        return Target(found[0], names[found[0]])
    if found:
        choices = ", ".join(f"{pid} ({names[pid]})" for pid in found)
        raise UsageError(f"project name {word!r} is ambiguous; use one of the ids: {choices}")
    known = ", ".join(f"{name} ({pid})" for pid, name in sorted(names.items())) or "none"
    raise UsageError(f"no project is named {word!r}; the account's projects: {known}")
