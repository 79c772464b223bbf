"""Benchmark datasets by name, mapped into task items with lm-eval's preprocessing.

Each name is the lm-evaluation-harness task of the same name: the same hub dataset,
configuration and split (lm-eval scores ``test`` where a task has one, else
``validation``), and the same ``doc_to_text`` / ``doc_to_choice`` / ``doc_to_target``,
written here as plain functions of one record. They need the optional ``datasets``
package and a reachable hub or a local ``datasets`` cache; without either, the error
says how to pass the items as a JSONL file instead.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.errors import TaskError
from tasks.workloads.items import ChoiceItem, LastWordItem, choice_item, last_word_item


def hellaswag_preprocess(text: str) -> str:
    """lm-eval's HellaSwag clean-up of WikiHow artifacts."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def hellaswag_record(doc: dict[str, Any]) -> dict[str, Any]:
    """A HellaSwag record: the activity label and both context parts, the four endings."""
    ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
    return {
        "context": hellaswag_preprocess(doc["activity_label"] + ": " + ctx),
        "choices": [hellaswag_preprocess(ending) for ending in doc["endings"]],
        "gold": int(doc["label"]),
    }


def arc_record(doc: dict[str, Any]) -> dict[str, Any]:
    """An ARC record: ``Question: ...\\nAnswer:``, the choice texts, the key's position."""
    labels = list(doc["choices"]["label"])
    return {
        "context": f"Question: {doc['question']}\nAnswer:",
        "choices": list(doc["choices"]["text"]),
        "gold": labels.index(doc["answerKey"]),
    }


def piqa_record(doc: dict[str, Any]) -> dict[str, Any]:
    """A PIQA record: ``Question: GOAL\\nAnswer:`` and the two solutions."""
    return {
        "context": f"Question: {doc['goal']}\nAnswer:",
        "choices": [doc["sol1"], doc["sol2"]],
        "gold": int(doc["label"]),
    }


def lambada_record(doc: dict[str, Any]) -> dict[str, Any]:
    """A LAMBADA record: the passage (the task splits off its last word)."""
    return {"text": doc["text"]}


@dataclass(frozen=True)
class NamedDataset:
    """Where a named dataset lives on the hub and how one record becomes an item."""

    name: str
    task: str
    path: str
    config: str | None
    split: str
    to_record: Callable[[dict[str, Any]], dict[str, Any]]


#: dataset name (as lm-eval names the task) -> where it is and how it maps
NAMED_DATASETS: dict[str, NamedDataset] = {
    d.name: d
    for d in (
        NamedDataset(
            "hellaswag", "choice", "Rowan/hellaswag", None, "validation", hellaswag_record
        ),
        NamedDataset("arc_easy", "choice", "allenai/ai2_arc", "ARC-Easy", "test", arc_record),
        NamedDataset(
            "arc_challenge", "choice", "allenai/ai2_arc", "ARC-Challenge", "test", arc_record
        ),
        NamedDataset("piqa", "choice", "baber/piqa", None, "validation", piqa_record),
        NamedDataset(
            "lambada_openai",
            "last-word",
            "EleutherAI/lambada_openai",
            "default",
            "test",
            lambada_record,
        ),
    )
}

_MAKERS: dict[str, Callable[[Any, int, str], Any]] = {
    "choice": choice_item,
    "last-word": last_word_item,
}
_FORMATS = {
    "choice": '{"context": str, "choices": [str, ...], "gold": int}',
    "last-word": '{"text": str}',
}


def named_dataset(task: str, name: str) -> NamedDataset:
    """The dataset registered as ``name`` for ``task``; unknown names raise TaskError."""
    known = [n for n, d in NAMED_DATASETS.items() if d.task == task]
    dataset = NAMED_DATASETS.get(name)
    if dataset is None:
        close = difflib.get_close_matches(name, known, n=1)
        guess = f" (did you mean {close[0]!r}?)" if close else ""
        raise TaskError(
            f"task {task}: unknown dataset name {name!r}{guess}",
            hint=f"datasets of {task}: {', '.join(known)}; or 'smoke', or a JSONL file "
            f"of {_FORMATS[task]} lines",
        )
    if dataset.task != task:
        raise TaskError(
            f"task {task}: dataset {name!r} is a {dataset.task} dataset",
            hint=f"run it as {dataset.task}:data={name}; datasets of {task}: {', '.join(known)}",
        )
    return dataset


def load_named(task: str, name: str) -> list[ChoiceItem] | list[LastWordItem]:
    """Every item of the dataset ``name`` in source order, mapped for ``task``."""
    dataset = named_dataset(task, name)
    rows = _load_rows(task, dataset)
    make = _MAKERS[task]
    where = f"dataset {name} ({dataset.path}, split {dataset.split})"
    items = []
    for i, row in enumerate(rows):
        try:
            record = dataset.to_record(dict(row))
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            raise TaskError(
                f"{where} row {i}: cannot be mapped: {type(exc).__name__}: {exc}"
            ) from exc
        items.append(make(record, i, f"{where} row {i}"))
    return items


def _load_rows(task: str, dataset: NamedDataset) -> Any:
    fallback = (
        f"or write the items as JSONL, one {_FORMATS[task]} a line, and pass "
        f"{task}:data=FILE (the 'smoke' set runs offline)"
    )
    try:
        import datasets
    except ImportError as exc:
        raise TaskError(
            f"dataset {dataset.name!r} needs the optional 'datasets' package",
            hint=f"pip install 'tslm-fleet[datasets]', {fallback}",
        ) from exc
    try:
        return datasets.load_dataset(dataset.path, dataset.config, split=dataset.split)
    except Exception as exc:  # the hub, the cache and the loader raise many kinds
        raise TaskError(
            f"dataset {dataset.name!r} ({dataset.path}, split {dataset.split}) cannot be "
            f"loaded: {type(exc).__name__}: {exc}",
            hint=f"reach the Hugging Face hub or fill the local datasets cache; {fallback}",
        ) from exc


def item_record(item: ChoiceItem | LastWordItem) -> dict[str, Any]:
    """The JSONL record of one item (the task's file format)."""
    if isinstance(item, ChoiceItem):
        return {"context": item.context, "choices": list(item.choices), "gold": item.gold}
    return {"text": item.text}


def materialize(task: str, name: str, directory: Path) -> Path:
    """Write the dataset ``name``, mapped for ``task``, as a JSONL file in ``directory``.

    The controller does this for a device, which has neither the hub nor ``datasets``:
    the file keeps every item in source order (so ``limit``/``seed`` pick the same
    items) and is named by its content's sha256.
    """
    body = "".join(
        json.dumps(item_record(i), ensure_ascii=False) + "\n" for i in load_named(task, name)
    )
    data = body.encode("utf-8")
    path = directory / f"{name}-{hashlib.sha256(data).hexdigest()[:16]}.jsonl"
    if not path.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path
