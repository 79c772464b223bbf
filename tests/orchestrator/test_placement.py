"""Where tasks run (on=controller) and the data files their jobs carry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.experiment import TaskRequest
from orchestrator.inventory import parse_inventory
from orchestrator.placement import CONTROLLER, place_tasks, task_files
from tasks.errors import ConfigError, TaskError
from tasks.hashing import sha256_file

INVENTORY = """
devices:
  pi4: {host: 127.0.0.1, meter: {kind: none}}
  pi5: {host: 127.0.0.2, meter: {kind: none}}
"""


def _devices(text: str = INVENTORY) -> list:
    return list(parse_inventory(text).devices.values())


def test_controller_tasks_run_once_on_the_controller(tmp_path: Path) -> None:
    tasks = [
        TaskRequest("generate", {}),
        TaskRequest("choice", {"on": "controller"}),
        TaskRequest("perplexity", {"on": "device"}),
    ]
    placed = place_tasks(_devices(), tasks, tmp_path)
    names = [(d.name, [t.name for t in ts]) for d, ts in placed]
    assert names == [
        ("pi4", ["generate", "perplexity"]),
        ("pi5", ["generate", "perplexity"]),
        (CONTROLLER, ["choice"]),
    ]
    controller = placed[-1][0]
    assert controller.transport == "local" and controller.meter.kind == "none"
    assert controller.workdir.startswith(str(tmp_path))


def test_only_controller_tasks_leave_the_boards_idle(tmp_path: Path) -> None:
    placed = place_tasks(_devices(), [TaskRequest("last-word", {"on": "controller"})], tmp_path)
    assert [d.name for d, _ in placed] == [CONTROLLER]


def test_a_device_named_controller_is_refused(tmp_path: Path) -> None:
    devices = _devices("devices:\n  controller: {transport: local}\n")
    with pytest.raises(ConfigError, match="'controller' is reserved") as err:
        place_tasks(devices, [TaskRequest("choice", {})], tmp_path)
    assert "inventory" in err.value.message and "rename" in err.value.hint


def test_data_files_are_pushed_content_addressed(tmp_path: Path) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"context": "Q", "choices": ["a", "b"], "gold": 1}) + "\n")
    params, files = task_files(TaskRequest("choice", {"data": str(items), "limit": 1}), tmp_path)
    (file,) = files
    assert file.local == items.resolve() and file.sha256 == sha256_file(items)
    assert file.remote == f"data/{file.sha256[:16]}-items.jsonl"
    assert params == {"data": f"workdir:{file.remote}", "limit": 1}


@pytest.mark.parametrize(
    "task",
    [
        TaskRequest("choice", {}),
        TaskRequest("choice", {"data": "smoke"}),
        TaskRequest("perplexity", {"text": "builtin:dialogue"}),
        TaskRequest("generate", {"prompts": "builtin"}),
    ],
)
def test_builtin_data_travels_inside_the_agent(task: TaskRequest, tmp_path: Path) -> None:
    assert task_files(task, tmp_path) == (dict(task.params), ())


def test_bad_task_input_fails_on_the_controller(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist on the controller"):
        task_files(TaskRequest("choice", {"data": "./missing.jsonl"}), tmp_path)
    with pytest.raises(ConfigError, match="neither a file nor a known dataset") as err:
        task_files(TaskRequest("choice", {"data": "hellaswg"}), tmp_path)
    assert "hellaswag" in err.value.hint
    with pytest.raises(TaskError, match="unknown parameter 'gld'"):
        task_files(TaskRequest("choice", {"gld": 1}), tmp_path)


def test_the_same_task_twice_on_one_device_is_refused(tmp_path: Path) -> None:
    tasks = [TaskRequest("choice", {"data": "a.jsonl"}), TaskRequest("choice", {"limit": 3})]
    with pytest.raises(ConfigError, match="task choice is asked twice for each device") as err:
        place_tasks(_devices(), tasks, tmp_path)
    assert "on=controller" in err.value.hint
    tasks[1] = TaskRequest("choice", {"limit": 3, "on": "controller"})
    assert len(place_tasks(_devices(), tasks, tmp_path)) == 3
