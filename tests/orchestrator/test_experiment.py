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


def test_stability_settings_come_from_the_file_and_reach_the_job(tmp_path) -> None:
    from agent.protocol import JobSpec
    from orchestrator.experiment import build_experiment, experiment_from_dict

    path = tmp_path / "exp.yaml"
    path.write_text("stability: {max_wait_s: 30, window_s: 2, drift_threshold: 0.1}\n")
    experiment = build_experiment(file=path)
    assert experiment.stability.max_wait_s == 30 and experiment.stability.window_s == 2
    assert experiment.stability.power_tolerance == 0.05  # the default
    # stored with the run and read back for --resume
    assert experiment_from_dict(experiment.to_dict(), "run").stability == experiment.stability
    assert build_experiment(file=path, stable_wait_s=0).stability.max_wait_s == 0
    spec = JobSpec.from_dict(
        {
            "spec_version": 1,
            "job_id": "j",
            "run_id": "r",
            "model": {"path": "m", "sha256": "0" * 64},
            "variant": "dense",
            "tasks": [{"name": "generate"}],
            "stability": experiment.stability.to_dict(),
        }
    )
    assert spec.stability == experiment.stability


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("max_wait_s: -5", "stability.max_wait_s: must be >= 0"),
        ("power_tolerance: 0", "stability.power_tolerance: must be > 0"),
        ("temp_tolerance_c: 50", "stability.temp_tolerance_c: must be > 0 and <= 20"),
        ("drift_threshold: 2", "stability.drift_threshold: must be > 0 and <= 1"),
        ("window: 3", "stability.window: Extra inputs are not permitted"),
    ],
)
def test_out_of_range_stability_settings_name_the_field(tmp_path, setting, message) -> None:
    from orchestrator.experiment import build_experiment

    path = tmp_path / "exp.yaml"
    path.write_text(f"stability: {{{setting}}}\n")
    with pytest.raises(ConfigError, match=message):
        build_experiment(file=path)


def test_a_negative_stable_wait_flag_is_refused() -> None:
    from orchestrator.experiment import build_experiment

    with pytest.raises(ConfigError, match="--stable-wait: must be >= 0"):
        build_experiment(stable_wait_s=-1)
