"""Built-in data shipped with tslm-fleet, all written for this project.

* ``eval.txt``: the evaluation text scored by the ``perplexity`` and ``next-token`` tasks
  (short pieces of everyday and technical English prose);
* ``calibration.txt``: a separate text with different content, for compression methods
  that use statistics of real text, so that no method is tuned on the text it is scored on;
* ``prompts.jsonl``: the prompt set of the ``generate`` task, one ``{"prompt": ...}`` a line.
"""

from __future__ import annotations

import json
from importlib import resources

from tasks.errors import TaskError

#: built-in text name -> file in this package
TEXTS: dict[str, str] = {"eval": "eval.txt", "calibration": "calibration.txt"}
PROMPTS_FILE = "prompts.jsonl"


def _read(name: str) -> str:
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def builtin_text(kind: str = "eval") -> str:
    """The built-in ``"eval"`` or ``"calibration"`` text."""
    if kind not in TEXTS:
        raise TaskError(f"unknown built-in text {kind!r} (known: {', '.join(TEXTS)})")
    return _read(TEXTS[kind])


def builtin_prompts() -> list[str]:
    """The built-in prompt set of the ``generate`` task, in file order."""
    return [json.loads(line)["prompt"] for line in _read(PROMPTS_FILE).splitlines() if line.strip()]
