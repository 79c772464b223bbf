"""The items of the ``choice`` and ``last-word`` tasks: reading, validating, subsetting.

Data comes from one of

* ``smoke``: a built-in smoke set, written for this project to let the demo and the tests
  run offline. Its numbers are NOT comparable to any published benchmark figure;
* a JSONL file: ``{"context": str, "choices": [str, ...], "gold": int}`` a line for
  ``choice``, ``{"text": str}`` a line for ``last-word`` (other keys are ignored);
* a dataset name (``hellaswag``, ``arc_easy``, ...; see :mod:`tasks.workloads.named_data`).

Every item keeps its ``doc_id``, its 0-based position in the full source (as lm-eval's
``doc_id``), so a subset (``limit=N``, with ``seed=`` a random one) records which items
it scored.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from tasks.errors import TaskError

SMOKE = "smoke"
SMOKE_NOTE = (
    "built-in smoke set written for tslm-fleet; not comparable to published benchmark numbers"
)
SMOKE_FILES = {"choice": "smoke_choice.jsonl", "last-word": "smoke_last_word.jsonl"}


@dataclass(frozen=True)
class ChoiceItem:
    """One multiple-choice item: lm-eval's ``doc_to_text``, ``doc_to_choice``, target."""

    doc_id: int
    context: str
    choices: tuple[str, ...]
    gold: int


@dataclass(frozen=True)
class LastWordItem:
    """One LAMBADA-style passage, split as lm-eval's ``lambada_openai`` splits it."""

    doc_id: int
    text: str

    @property
    def context(self) -> str:
        """Every space-separated word but the last, joined by single spaces."""
        return " ".join(self.text.split(" ")[:-1])

    @property
    def target(self) -> str:
        """The last space-separated word, after one space."""
        return " " + self.text.split(" ")[-1]


Item = TypeVar("Item", ChoiceItem, LastWordItem)


@dataclass(frozen=True)
class ItemSet:
    """The items a task scores, where they came from and which subset was taken."""

    source: str
    items: tuple[Any, ...]
    total: int
    smoke: bool = False

    @property
    def doc_ids(self) -> list[int]:
        return [item.doc_id for item in self.items]

    def details(self) -> dict[str, Any]:
        """What a score records about its data."""
        out: dict[str, Any] = {
            "data": self.source,
            "items": len(self.items),
            "source_items": self.total,
            "doc_ids": self.doc_ids,
        }
        if self.smoke:
            out["note"] = SMOKE_NOTE
        return out


# ---------------------------------------------------------------------- records


def choice_item(record: Any, doc_id: int, where: str) -> ChoiceItem:
    """Validate one ``choice`` record; ``where`` names it in errors (``file:line``)."""
    record = _object(record, where)
    context = _field(record, "context", str, where)
    choices = _field(record, "choices", list, where)
    if not choices:
        raise TaskError(f"{where}: 'choices' is an empty list", hint="give two or more choices")
    if len(choices) < 2:
        raise TaskError(f"{where}: 'choices' has one entry", hint="give two or more choices")
    for k, choice in enumerate(choices):
        if not isinstance(choice, str) or not choice:
            raise TaskError(f"{where}: choices[{k}] must be a non-empty string, got {choice!r}")
    gold = _field(record, "gold", int, where)
    if isinstance(gold, bool) or not 0 <= gold < len(choices):
        raise TaskError(
            f"{where}: 'gold' {gold!r} is out of range for {len(choices)} choices",
            hint=f"gold is the 0-based index of the right choice (0..{len(choices) - 1})",
        )
    return ChoiceItem(doc_id, context, tuple(choices), gold)


def last_word_item(record: Any, doc_id: int, where: str) -> LastWordItem:
    """Validate one ``last-word`` record; ``where`` names it in errors (``file:line``)."""
    record = _object(record, where)
    text = _field(record, "text", str, where)
    if not text.strip():
        raise TaskError(f"{where}: 'text' is empty")
    if text.split(" ")[-1] == "":
        raise TaskError(
            f"{where}: 'text' ends with a space, so its last word is empty",
            hint="strip trailing spaces; the last space-separated word is the target",
        )
    return LastWordItem(doc_id, text)


def _object(record: Any, where: str) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise TaskError(f"{where}: expected a JSON object, got {type(record).__name__}")
    return record


def _field(record: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in record:
        raise TaskError(
            f"{where}: missing field {key!r}", hint=f"the fields present are {sorted(record)}"
        )
    value = record[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TaskError(f"{where}: {key!r} must be {kind.__name__}, got {value!r}")
    return value


ITEM_PARSERS: dict[str, Callable[[Any, int, str], Any]] = {
    "choice": choice_item,
    "last-word": last_word_item,
}


# ---------------------------------------------------------------------- files


def read_jsonl(path: Path, make: Callable[[Any, int, str], Item]) -> list[Item]:
    """Every non-empty line of ``path`` parsed by ``make`` (errors name ``file:line``)."""
    try:
        content = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise TaskError(
            f"data file {path} does not exist",
            hint=f"pass an existing JSONL file, '{SMOKE}', or a dataset name",
        ) from exc
    except UnicodeDecodeError as exc:
        raise TaskError(f"data file {path} is not UTF-8 text") from exc
    except OSError as exc:
        raise TaskError(f"data file {path} cannot be read: {exc.strerror}") from exc
    items: list[Item] = []
    for line_no, line in enumerate(content.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise TaskError(
                f"{where}: not a JSON line ({exc})", hint="write one JSON object per line"
            ) from exc
        items.append(make(record, len(items), where))
    if not items:
        raise TaskError(f"data file {path} holds no items", hint="write one JSON object per line")
    return items


def smoke_items(task: str) -> list[Any]:
    """The built-in smoke set of ``task`` (see :data:`SMOKE_NOTE`)."""
    file = resources.files("tasks.data").joinpath(SMOKE_FILES[task])
    with resources.as_file(file) as path:
        return read_jsonl(path, ITEM_PARSERS[task])


def subset(items: Sequence[Item], limit: int | None, seed: int | None) -> list[Item]:
    """The first ``limit`` items, or with ``seed`` a seeded random ``limit`` of them.

    A random subset keeps the source order, so the same seed always scores the same
    items in the same order.
    """
    if limit is None or limit >= len(items):
        return list(items)
    if seed is None:
        return list(items[:limit])
    chosen = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in chosen]
