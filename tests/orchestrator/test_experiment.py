"""Task options on the command line: ``--task NAME[:key=value...]``."""

from __future__ import annotations

import pytest

from orchestrator.experiment import parse_task_option
from tasks.errors import ConfigError


def test_values_are_yaml_scalars_and_may_hold_colons() -> None:
    request = parse_task_option("choice:data=hellaswag:limit=500:seed=1:on=controller")
    assert request.name == "choice"
    assert request.params == {"data": "hellaswag", "limit": 500, "seed": 1, "on": "controller"}
    request = parse_task_option("perplexity:text=builtin:dialogue:window=256")
    assert request.params == {"text": "builtin:dialogue", "window": 256}
    request = parse_task_option("perplexity:text=hf:wikitext:wikitext-2-raw-v1:test")
    assert request.params == {"text": "hf:wikitext:wikitext-2-raw-v1:test"}


@pytest.mark.parametrize("text", ["generate:oops", ":window=3", "generate:=3"])
def test_malformed_task_options(text: str) -> None:
    with pytest.raises(ConfigError, match="--task"):
        parse_task_option(text)


def test_a_bare_on_key_in_an_experiment_file_is_the_on_parameter(tmp_path) -> None:
    from orchestrator.experiment import build_experiment

    path = tmp_path / "exp.yaml"
    path.write_text("tasks:\n  - choice: {on: controller, limit: 4}\n  - generate\n")
    experiment = build_experiment(file=path)
    assert experiment.tasks[0].params == {"on": "controller", "limit": 4}
