"""Items of the choice and last-word tasks: JSONL files, smoke sets, subsets, named datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.errors import TaskError
from tasks.workloads import get_task
from tasks.workloads.item_sources import load_items
from tasks.workloads.items import SMOKE_NOTE, LastWordItem, smoke_items
from tasks.workloads.named_data import (
    NAMED_DATASETS,
    arc_record,
    hellaswag_record,
    lambada_record,
    load_named,
    materialize,
    piqa_record,
)


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _choice(context="Q:", choices=("a", "b"), gold=0) -> str:
    return json.dumps({"context": context, "choices": list(choices), "gold": gold})


def test_choice_file_is_read_in_order_with_doc_ids(tmp_path: Path) -> None:
    path = _write(tmp_path / "items.jsonl", [_choice("one", gold=1), "", _choice("two")])
    data = load_items("choice", str(path), None, None)
    assert [i.context for i in data.items] == ["one", "two"]
    assert data.doc_ids == [0, 1] and data.items[0].gold == 1
    assert not data.smoke and "note" not in data.details()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"context": "x", "choices": ["a", "b"], "gold": 0', "not a JSON line"),
        ('["context"]', "expected a JSON object"),
        (_choice(gold=2), "'gold' 2 is out of range for 2 choices"),
        (_choice(gold=-1), "'gold' -1 is out of range"),
        (_choice(gold=True), "'gold' must be int"),
        (_choice(choices=()), "'choices' is an empty list"),
        (_choice(choices=("only",)), "'choices' has one entry"),
        (_choice(choices=("a", "")), r"choices\[1\] must be a non-empty string"),
        ('{"context": "x", "gold": 0}', "missing field 'choices'"),
        ('{"context": 3, "choices": ["a", "b"], "gold": 0}', "'context' must be str"),
    ],
)
def test_bad_choice_lines_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = _write(tmp_path / "bad.jsonl", [_choice(), _choice(), line])
    with pytest.raises(TaskError, match=message) as err:
        load_items("choice", str(path), None, None)
    assert err.value.message.startswith(f"{path}:3: ")


def test_bad_last_word_lines(tmp_path: Path) -> None:
    path = _write(tmp_path / "lw.jsonl", ['{"text": "a b c"}', '{"text": "ends with "}'])
    with pytest.raises(TaskError, match=r"lw\.jsonl:2: 'text' ends with a space"):
        load_items("last-word", str(path), None, None)
    with pytest.raises(TaskError, match=r"empty\.jsonl holds no items"):
        load_items("last-word", str(_write(tmp_path / "empty.jsonl", ["", " "])), None, None)
    with pytest.raises(TaskError, match="does not exist") as err:
        load_items("last-word", str(tmp_path / "missing.jsonl"), None, None)
    assert "smoke" in err.value.hint


def test_last_word_split_is_lambadas() -> None:
    item = LastWordItem(0, "He  said  goodbye")  # runs of spaces kept, as lm-eval's split(' ')
    assert item.context == "He  said " and item.target == " goodbye"
    assert item.context + item.target == item.text


def test_limit_takes_the_first_items_and_seed_a_recorded_random_subset(tmp_path: Path) -> None:
    path = _write(tmp_path / "i.jsonl", [_choice(f"q{i}") for i in range(20)])
    first = load_items("choice", str(path), 5, None)
    assert first.doc_ids == [0, 1, 2, 3, 4] and first.total == 20
    seeded = load_items("choice", str(path), 5, 7)
    assert seeded.doc_ids == load_items("choice", str(path), 5, 7).doc_ids
    assert seeded.doc_ids == sorted(seeded.doc_ids) != first.doc_ids
    assert [i.context for i in seeded.items] == [f"q{d}" for d in seeded.doc_ids]
    assert seeded.details()["doc_ids"] == seeded.doc_ids
    assert seeded.details()["source_items"] == 20
    assert load_items("choice", str(path), 50, 1).doc_ids == list(range(20))


def test_seed_needs_limit_and_on_is_checked() -> None:
    task = get_task("choice")
    with pytest.raises(TaskError, match="needs limit"):
        task.parse_params({"seed": "3"})
    with pytest.raises(TaskError, match="'on' is 'board'") as err:
        task.parse_params({"on": "board"})
    assert "controller" in err.value.hint
    assert task.parse_params({"on": "controller", "limit": "4", "seed": "1"}).limit == 4
    assert get_task("perplexity").parse_params({"on": "controller"}).on == "controller"


@pytest.mark.parametrize("task", ["choice", "last-word"])
def test_smoke_sets_are_labelled_and_well_formed(task: str) -> None:
    items = smoke_items(task)
    assert len(items) == 40
    data = load_items(task, "smoke", None, None)
    assert data.smoke and data.details()["note"] == SMOKE_NOTE
    assert "not comparable" in SMOKE_NOTE
    if task == "choice":
        assert len({i.context for i in items}) == 40
        assert len({i.gold for i in items}) == 4  # the right answer is not always first
    else:
        assert len({i.target for i in items}) > 30


# ---------------------------------------------------------------------- named datasets


def test_hellaswag_mapping_matches_lm_evals_preprocessing() -> None:
    doc = {
        "activity_label": "Making a sandwich",
        "ctx_a": "A man lays two slices of bread on a board.",
        "ctx_b": "he",
        "endings": [
            "spreads butter on both slices [title] Add the filling.",
            " closes the sandwich  and cuts it. ",
            "throws the bread [step] away.",
            "eats the board.",
        ],
        "label": "1",
    }
    record = hellaswag_record(doc)
    assert record["context"] == ("Making a sandwich: A man lays two slices of bread on a board. He")
    assert record["choices"] == [
        "spreads butter on both slices. Add the filling.",
        "closes the sandwich and cuts it.",
        "throws the bread away.",
        "eats the board.",
    ]
    assert record["gold"] == 1


def test_arc_and_piqa_and_lambada_mappings() -> None:
    arc = {
        "question": "Which gas do plants take in?",
        "choices": {"text": ["oxygen", "carbon dioxide", "helium"], "label": ["1", "2", "3"]},
        "answerKey": "2",
    }
    assert arc_record(arc) == {
        "context": "Question: Which gas do plants take in?\nAnswer:",
        "choices": ["oxygen", "carbon dioxide", "helium"],
        "gold": 1,
    }
    piqa = {"goal": "Dry wet shoes", "sol1": "use newspaper", "sol2": "use a freezer", "label": 0}
    assert piqa_record(piqa) == {
        "context": "Question: Dry wet shoes\nAnswer:",
        "choices": ["use newspaper", "use a freezer"],
        "gold": 0,
    }
    assert lambada_record({"text": "a b c", "domain": None}) == {"text": "a b c"}
    assert {d.task for d in NAMED_DATASETS.values()} == {"choice", "last-word"}


def test_unknown_and_misplaced_dataset_names() -> None:
    with pytest.raises(
        TaskError, match=r"unknown dataset name 'hellaswg' \(did you mean 'hellaswag'"
    ) as err:
        load_items("choice", "hellaswg", None, None)
    assert "arc_easy" in err.value.hint and "JSONL" in err.value.hint
    with pytest.raises(TaskError, match="'lambada_openai' is a last-word dataset"):
        load_items("choice", "lambada_openai", None, None)


def test_unreachable_dataset_says_how_to_pass_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no traffic leaves this machine
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-tslm-hf-home")
    with pytest.raises(TaskError, match=r"dataset 'arc_easy' \(allenai/ai2_arc, split test\)") as e:
        load_named("choice", "arc_easy")
    assert "choice:data=FILE" in e.value.hint and '"gold": int' in e.value.hint


def test_a_named_dataset_is_written_as_jsonl_for_a_device(tmp_path, monkeypatch) -> None:
    datasets = pytest.importorskip("datasets")
    rows = [
        {"goal": f"Goal {i}", "sol1": "first way", "sol2": "second way", "label": i % 2}
        for i in range(5)
    ]
    asked = []

    def load_dataset(path, config, split):  # the hub cannot be reached from here
        asked.append((path, config, split))
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    path = materialize("choice", "piqa", tmp_path / "data")
    assert asked == [("baber/piqa", None, "validation")]
    assert path.name.startswith("piqa-") and path == materialize(
        "choice", "piqa", tmp_path / "data"
    )
    data = load_items("choice", str(path), 2, 3)
    assert data.total == 5 and [i.context for i in data.items] == [
        f"Question: Goal {d}\nAnswer:" for d in data.doc_ids
    ]
    assert [i.gold for i in data.items] == [d % 2 for d in data.doc_ids]
    rows[2] = {"goal": "broken", "sol1": "a", "sol2": "b"}
    with pytest.raises(TaskError, match=r"dataset piqa \(baber/piqa, split validation\) row 2"):
        load_named("choice", "piqa")
