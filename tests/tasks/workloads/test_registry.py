"""The task registry, typed parameters and the thread setting."""

from __future__ import annotations

import dataclasses

import pytest

from tasks.errors import TaskError
from tasks.workloads import TASKS, available_cores, get_task, list_tasks, set_threads
from tasks.workloads.generate import GenerateParams
from tasks.workloads.windows import TextWindowParams


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_registered_task_imports_and_describes_itself(name: str) -> None:
    task = get_task(name)
    assert task.name == name
    assert task.description and "\n" not in task.description
    params = task.parse_params({})
    assert dataclasses.is_dataclass(params)
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.seed = 1  # type: ignore[misc]


def test_list_tasks_shows_parameters_with_types_and_defaults() -> None:
    infos = {info.name: info for info in list_tasks()}
    assert list(infos) == [
        "generate",
        "perplexity",
        "next-token",
        "choice",
        "last-word",
        "idle",
        "alternating",
    ]
    gen = {p.name: p for p in infos["generate"].parameters}
    assert gen["max_new_tokens"].default == 32
    assert gen["max_new_tokens"].type_name == "int"
    assert gen["chat_template"].type_name == "bool|None"
    ppl = {p.name: p for p in infos["perplexity"].parameters}
    assert (ppl["window"].default, ppl["stride"].default, ppl["text"].default) == (
        1024,
        None,
        "builtin",
    )
    choice = {p.name: p for p in infos["choice"].parameters}
    assert (choice["data"].default, choice["on"].default, choice["delimiter"].default) == (
        "smoke",
        "device",
        " ",
    )
    assert all(p.help for info in infos.values() for p in info.parameters)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_file_parameters_are_parameters(name: str) -> None:
    task = get_task(name)
    fields = {f.name for f in dataclasses.fields(task.params_type)}
    assert set(task.file_params) <= fields
    # every task that reads a text or prompts from a file names that parameter (idle reads
    # nothing; alternating makes its own prompts)
    assert task.file_params or name in ("idle", "alternating")


def test_quality_task_descriptions_name_their_datasets() -> None:
    from tasks.workloads.named_data import NAMED_DATASETS

    for name, dataset in NAMED_DATASETS.items():
        assert name in get_task(dataset.task).description


def test_unknown_task_suggests_the_closest_and_lists_all() -> None:
    with pytest.raises(TaskError) as err:
        get_task("perplexty")
    assert "did you mean 'perplexity'" in err.value.message
    assert all(name in err.value.hint for name in TASKS)


def test_unknown_parameter_is_named_with_the_valid_ones() -> None:
    with pytest.raises(TaskError) as err:
        get_task("generate").parse_params({"max_tokens": 8})
    assert "'max_tokens'" in err.value.message and "max_new_tokens" in err.value.message
    assert "prompts" in err.value.hint and "seed" in err.value.hint


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"max_new_tokens": "many"}, "max_new_tokens"),
        ({"max_new_tokens": 0}, ">= 1"),
        ({"max_new_tokens": True}, "max_new_tokens"),
        ({"chat_template": "maybe"}, "chat_template"),
        ({"batch_size": 1.5}, "batch_size"),
        ({"prompts": 3}, "prompts"),
        ({"max_new_tokens": None}, "required"),
    ],
)
def test_bad_generate_values_raise_task_error(raw: dict, needle: str) -> None:
    with pytest.raises(TaskError, match=needle):
        get_task("generate").parse_params(raw)


def test_stride_larger_than_window_is_refused() -> None:
    with pytest.raises(TaskError, match="stride 64 is larger than window 32") as err:
        get_task("perplexity").parse_params({"window": 32, "stride": 64})
    assert err.value.message.startswith("task perplexity:")


def test_params_must_be_a_mapping() -> None:
    with pytest.raises(TaskError, match="mapping"):
        get_task("next-token").parse_params(["window", 8])  # type: ignore[arg-type]


def test_command_line_strings_are_coerced() -> None:
    params = get_task("generate").parse_params(
        {"max_new_tokens": "16", "chat_template": "false", "num_queries": "none", "seed": "7"}
    )
    assert params == GenerateParams(max_new_tokens=16, chat_template=False, seed=7)
    text = get_task("perplexity").parse_params(
        {"window": 64.0, "stride": "32", "max_tokens": "100"}
    )
    assert text == TextWindowParams(window=64, stride=32, max_tokens=100)


def test_set_threads_applies_and_reports_the_count() -> None:
    import torch

    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 == torch.get_num_threads()
        assert set_threads(None) == available_cores()
    finally:
        torch.set_num_threads(before)
    for bad in (0, -2, True):
        with pytest.raises(TaskError):
            set_threads(bad)
