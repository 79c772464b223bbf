"""Where a task's text and prompts come from.

A source is one of

* ``"builtin"``: the default evaluation text or the prompt set shipped in :mod:`tasks.data`;
* ``"builtin:NAME"`` (texts only): the built-in evaluation text ``NAME``
  (:func:`tasks.data.evaluation_texts` lists them);
* a file path: plain text for texts; for prompts, one prompt a line, or JSONL with a
  ``"prompt"`` field (a ``.jsonl`` file, or any file whose non-empty lines are all JSON
  objects);
* ``"hf:DATASET[:CONFIG[:SPLIT]]"``: a Hugging Face dataset (split ``test`` by default),
  which needs the optional ``datasets`` package and a reachable hub or local cache.
"""

from __future__ import annotations

import json
from pathlib import Path

from tasks.data import DEFAULT_EVALUATION_TEXT, builtin_prompts, builtin_text, evaluation_texts
from tasks.errors import TaskError

BUILTIN = "builtin"
BUILTIN_PREFIX = "builtin:"
HF_PREFIX = "hf:"
#: columns tried, in order, when reading a dataset
TEXT_COLUMNS = ("text", "content", "document")
PROMPT_COLUMNS = ("prompt", "instruction", "question", "text")


def load_text(source: str) -> str:
    """The text named by ``source`` (see the module docstring)."""
    if source == BUILTIN:
        return builtin_text(DEFAULT_EVALUATION_TEXT)
    if source.startswith(BUILTIN_PREFIX):
        return builtin_text(_evaluation_text_name(source))
    if source.startswith(HF_PREFIX):
        # lm-evaluation-harness joins the documents of a corpus the same way
        text = "\n\n".join(_load_dataset_column(source, TEXT_COLUMNS))
    else:
        text = _read_file(source, "text")
    if not text.strip():
        raise TaskError(
            f"text source {source!r} is empty", hint="pass a file with some prose, or use 'builtin'"
        )
    return text


def builtin_text_source(name: str) -> str:
    """The ``text`` source that names the built-in evaluation text ``name``."""
    return BUILTIN if name == DEFAULT_EVALUATION_TEXT else f"{BUILTIN_PREFIX}{name}"


def _evaluation_text_name(source: str) -> str:
    name = source[len(BUILTIN_PREFIX) :]
    if name not in evaluation_texts():
        raise TaskError(
            f"{source!r} names no built-in evaluation text",
            hint="built-in evaluation texts: "
            + ", ".join(f"{BUILTIN_PREFIX}{n}" for n in evaluation_texts()),
        )
    return name


def load_prompts(source: str) -> list[str]:
    """The prompts named by ``source`` (see the module docstring), in order."""
    if source == BUILTIN:
        return builtin_prompts()
    if source.startswith(HF_PREFIX):
        prompts = [p for p in _load_dataset_column(source, PROMPT_COLUMNS) if p.strip()]
    else:
        prompts = _parse_prompt_file(source, _read_file(source, "prompts"))
    if not prompts:
        raise TaskError(
            f"prompt source {source!r} holds no prompts",
            hint="write one prompt a line, or JSONL with a 'prompt' field",
        )
    return prompts


def _read_file(source: str, what: str) -> str:
    path = Path(source).expanduser()
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise TaskError(
            f"{what} file {source} does not exist",
            hint=f"pass an existing file, '{BUILTIN}', or '{HF_PREFIX}DATASET[:CONFIG[:SPLIT]]'",
        ) from exc
    except UnicodeDecodeError as exc:
        raise TaskError(f"{what} file {source} is not UTF-8 text") from exc
    except OSError as exc:
        raise TaskError(f"{what} file {source} cannot be read: {exc.strerror}") from exc


def _parse_prompt_file(source: str, content: str) -> list[str]:
    lines = [(n, line) for n, line in enumerate(content.splitlines(), 1) if line.strip()]
    if source.endswith(".jsonl") or (lines and all(_is_json_object(ln) for _, ln in lines)):
        prompts = []
        for n, line in lines:
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise TaskError(f"{source}:{n}: not a JSON line") from exc
            prompt = obj.get("prompt") if isinstance(obj, dict) else None
            if not isinstance(prompt, str):
                raise TaskError(f"{source}:{n}: expected an object with a string 'prompt' field")
            prompts.append(prompt)
        return prompts
    return [line.strip() for _, line in lines]


def _is_json_object(line: str) -> bool:
    if not line.lstrip().startswith("{"):
        return False
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _load_dataset_column(source: str, columns: tuple[str, ...]) -> list[str]:
    spec = source[len(HF_PREFIX) :]
    name, config, split = [*spec.split(":"), None, None][:3]
    if not name:
        raise TaskError(
            f"dataset source {source!r} names no dataset",
            hint=f"write it as {HF_PREFIX}DATASET[:CONFIG[:SPLIT]]",
        )
    try:
        import datasets
    except ImportError as exc:
        raise TaskError(
            f"dataset source {source!r} needs the optional 'datasets' package",
            hint="pip install 'tslm-fleet[datasets]', or pass a local file "
            "with --text-file / --prompts-file",
        ) from exc
    try:
        data = datasets.load_dataset(name, config or None, split=split or "test")
    except Exception as exc:  # the hub, the cache and the loader raise many kinds
        raise TaskError(
            f"dataset {source!r} cannot be loaded: {exc}",
            hint="check the name and that the hub or a local cache is "
            "reachable; or pass a local file",
        ) from exc
    for column in columns:
        if column in data.column_names:
            return [str(v) for v in data[column]]
    raise TaskError(
        f"dataset {source!r} has none of the columns {', '.join(columns)} "
        f"(it has {', '.join(data.column_names)})"
    )
