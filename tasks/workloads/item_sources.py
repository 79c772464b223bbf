"""Where the items of the ``choice`` and ``last-word`` tasks come from, by ``data=`` value:
``smoke`` (the built-in smoke sets), a JSONL file, or a dataset name."""

from __future__ import annotations

from pathlib import Path

from tasks.workloads.items import ITEM_PARSERS, SMOKE, ItemSet, read_jsonl, smoke_items, subset
from tasks.workloads.named_data import load_named


def load_items(task: str, data: str, limit: int | None, seed: int | None) -> ItemSet:
    """The items of ``task`` named by ``data`` (see the module docstring), subset taken."""
    smoke = data == SMOKE
    if smoke:
        items = smoke_items(task)
    elif _is_file(data):
        items = read_jsonl(Path(data).expanduser(), ITEM_PARSERS[task])
    else:
        items = load_named(task, data)
    return ItemSet(data, tuple(subset(items, limit, seed)), len(items), smoke)


def _is_file(data: str) -> bool:
    path = Path(data).expanduser()
    return path.exists() or "/" in data or data.endswith((".jsonl", ".json"))
