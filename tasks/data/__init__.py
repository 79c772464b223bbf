"""Built-in data shipped with tslm-fleet, all written for this project.

Texts (:data:`TEXTS`, keyed by the name a user types after ``builtin:``):

* ``eval.txt`` (``eval``): the default evaluation text of the ``perplexity`` and
  ``next-token`` tasks, short pieces of everyday and technical English prose;
* ``dialogue.txt`` (``dialogue``): a second evaluation text of another genre, short
  conversations between people (service counters, phone calls, friends, meetings), so
  that quality is never judged on one text alone;
* ``calibration.txt`` (``calibration``): a separate text with different content, for
  compression methods that use statistics of real text, so that no method is tuned on the
  text it is scored on. It is never an evaluation text.

``prompts.jsonl`` is the prompt set of the ``generate`` task, one ``{"prompt": ...}`` a line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

from tasks.errors import TaskError


@dataclass(frozen=True)
class BuiltinText:
    """One built-in text: its file in this package, its genre and what it is for."""

    name: str
    file: str
    genre: str
    #: True for texts that tasks score; False for the calibration text
    evaluation: bool


#: built-in text name -> the text; the first evaluation text is the default
TEXTS: dict[str, BuiltinText] = {
    text.name: text
    for text in (
        BuiltinText("eval", "eval.txt", "expository and narrative prose", evaluation=True),
        BuiltinText("dialogue", "dialogue.txt", "conversations between people", evaluation=True),
        BuiltinText("calibration", "calibration.txt", "expository prose", evaluation=False),
    )
}
DEFAULT_EVALUATION_TEXT = "eval"
PROMPTS_FILE = "prompts.jsonl"


def _read(name: str) -> str:
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def evaluation_texts() -> tuple[str, ...]:
    """Names of every built-in evaluation text, the default first.

    Code that reports quality on "every built-in text" iterates over this; pass
    ``builtin:NAME`` as a task's ``text`` parameter to score one of them.
    """
    return tuple(name for name, text in TEXTS.items() if text.evaluation)


def builtin_text(kind: str = DEFAULT_EVALUATION_TEXT) -> str:
    """The built-in text named ``kind`` (see :data:`TEXTS`)."""
    if kind not in TEXTS:
        raise TaskError(
            f"unknown built-in text {kind!r}",
            hint=f"known built-in texts: {', '.join(TEXTS)}",
        )
    return _read(TEXTS[kind].file)


def builtin_prompts() -> list[str]:
    """The built-in prompt set of the ``generate`` task, in file order."""
    return [json.loads(line)["prompt"] for line in _read(PROMPTS_FILE).splitlines() if line.strip()]
