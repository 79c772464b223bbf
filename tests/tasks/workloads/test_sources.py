"""Built-in data and the text / prompt sources users can pass."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from tasks.data import TEXTS, builtin_prompts, builtin_text, evaluation_texts
from tasks.errors import TaskError
from tasks.workloads.sources import builtin_text_source, load_prompts, load_text


def _sentences(text: str) -> set[str]:
    return {s.strip() for s in re.split(r"[.!?]\s", text) if len(s.split()) > 4}


def test_builtin_texts_are_long_varied_and_disjoint() -> None:
    evaluation, calibration = builtin_text("eval"), builtin_text("calibration")
    assert len(evaluation.split()) > 2000
    assert len(calibration.split()) > 1200
    # several pieces, each with its own title line
    assert evaluation.count("\n\n") > 20
    assert not _sentences(evaluation) & _sentences(calibration)
    assert load_text("builtin") == evaluation


def test_evaluation_texts_are_of_different_genres_and_never_the_calibration_text() -> None:
    names = evaluation_texts()
    assert names[0] == "eval" and "dialogue" in names and "calibration" not in names
    assert len({TEXTS[n].genre for n in names}) == len(names)
    calibration = _sentences(builtin_text("calibration"))
    seen: set[str] = set()
    for name in names:
        text = builtin_text(name)
        assert len(text.split()) > 2000, name
        sentences = _sentences(text)
        assert not sentences & calibration, name
        assert not sentences & seen, name
        seen |= sentences
        assert load_text(builtin_text_source(name)) == text
    assert builtin_text_source("eval") == "builtin"
    assert load_text("builtin:dialogue") == builtin_text("dialogue")


def test_dialogue_text_is_conversation() -> None:
    turns = [ln for ln in builtin_text("dialogue").splitlines() if ": " in ln[:30]]
    assert len(turns) > 120


def test_unknown_builtin_text() -> None:
    with pytest.raises(TaskError) as err:
        builtin_text("train")
    assert "calibration" in err.value.hint


@pytest.mark.parametrize("source", ["builtin:calibration", "builtin:poems", "builtin:"])
def test_builtin_source_names_an_evaluation_text(source: str) -> None:
    with pytest.raises(TaskError, match="names no built-in evaluation text") as err:
        load_text(source)
    assert "builtin:dialogue" in err.value.hint


def test_builtin_prompts() -> None:
    prompts = builtin_prompts()
    assert len(prompts) == 24 == len(set(prompts))
    assert all(p.strip() == p and p for p in prompts)
    assert load_prompts("builtin") == prompts


def test_prompt_file_one_a_line(tmp_path: Path) -> None:
    path = tmp_path / "prompts.txt"
    path.write_text("first prompt\n\n  second prompt  \nthird\n")
    assert load_prompts(str(path)) == ["first prompt", "second prompt", "third"]


def test_prompt_file_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"  # recognised by content, not only by extension
    path.write_text(
        "\n".join(
            json.dumps({"prompt": p, "id": i}) for i, p in enumerate(["a {b}", "line\nbreak"])
        )
        + "\n"
    )
    assert load_prompts(str(path)) == ["a {b}", "line\nbreak"]


def test_bad_jsonl_line_is_located(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "ok"}\n{"text": "no prompt field"}\n')
    with pytest.raises(TaskError, match=r"p\.jsonl:2: .*'prompt'"):
        load_prompts(str(path))


@pytest.mark.parametrize("loader", [load_text, load_prompts])
def test_missing_and_empty_files(tmp_path: Path, loader) -> None:
    with pytest.raises(TaskError, match="does not exist") as err:
        loader(str(tmp_path / "nope.txt"))
    assert "builtin" in err.value.hint
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(TaskError):
        loader(str(empty))


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("café crème".encode("latin-1"))
    with pytest.raises(TaskError, match="UTF-8"):
        load_text(str(path))


@pytest.mark.skipif(
    importlib.util.find_spec("datasets") is not None, reason="the datasets package is installed"
)
def test_dataset_source_without_datasets_package() -> None:
    with pytest.raises(TaskError, match="optional 'datasets' package") as err:
        load_text("hf:wikitext:wikitext-2-raw-v1:test")
    assert "tslm-fleet[datasets]" in err.value.hint


def test_dataset_source_needs_a_name() -> None:
    with pytest.raises(TaskError, match="names no dataset"):
        load_prompts("hf:")
