"""Where each task of a run runs, and the data files its jobs carry.

A quality task whose answer does not depend on the board (accuracy, perplexity) may say
``on=controller``: it then runs once per variant on the controller itself, through the
``local`` transport and the same agent, artifact and job spec the boards get, and its
results are stored under the device named ``controller``. Every other task runs on each
selected device.

A task parameter that names a file on the controller (``data=items.jsonl``,
``text=notes.txt``, ``prompts=...``) is pushed with the job, content-addressed under the
agent's ``data/`` folder, and the job spec names it ``workdir:data/...``. A named
dataset (``data=hellaswag``) for a device is first written as JSONL on the controller,
since a board has neither the hub nor the ``datasets`` package.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.protocol import WORKDIR_PREFIX
from tasks.errors import ConfigError
from tasks.hashing import sha256_file

#: the device name quality results run with ``on=controller`` are stored under
CONTROLLER = "controller"
#: where pushed task data lives in an agent's work directory
DATA_DIR = "data"


@dataclass(frozen=True)
class TaskFile:
    """A controller file a task reads, and where the device finds it."""

    local: Path
    remote: str
    sha256: str


def placement(task: Any) -> str:
    """``controller`` or ``device``: a task request's ``on`` parameter (default device)."""
    on = task.params.get("on", "device")
    return CONTROLLER if on == CONTROLLER else "device"


def controller_device(cache_dir: Path) -> Any:
    """The controller as a device: the ``local`` transport, no meter, a work directory
    of its own in the controller cache, the controller's Python."""
    from orchestrator.inventory import Device, MeterConfig

    return Device(
        name=CONTROLLER,
        transport="local",
        host=None,
        user=None,
        port=22,
        identity_file=None,
        known_hosts=Path("~/.ssh/known_hosts").expanduser(),
        python=sys.executable,
        workdir=str(cache_dir / "controller-agent"),
        board="local",
        meter=MeterConfig("none"),
        source="on=controller",
    )


def place_tasks(
    devices: Sequence[Any], tasks: Sequence[Any], cache_dir: Path
) -> list[tuple[Any, tuple[Any, ...]]]:
    """Each device with the tasks it runs; the controller is added when a task asks."""
    taken = [d for d in devices if d.name == CONTROLLER]
    if taken:
        raise ConfigError(
            f"{taken[0].source or 'the inventory'}: the device name '{CONTROLLER}' is "
            "reserved for quality tasks run with on=controller",
            hint="rename that device in the inventory",
        )
    on_device = tuple(t for t in tasks if placement(t) == "device")
    on_controller = tuple(t for t in tasks if placement(t) == CONTROLLER)
    for where, group in (("each device", on_device), (CONTROLLER, on_controller)):
        _one_trial_per_task(where, group)
    placed = [(d, on_device) for d in devices] if on_device else []
    if on_controller:
        placed.append((controller_device(cache_dir), on_controller))
    return placed


def _one_trial_per_task(where: str, tasks: Sequence[Any]) -> None:
    """A trial is one (device, variant, task): the same task twice on one device would
    mix two parameter sets in one trial."""
    seen: dict[str, Any] = {}
    for task in tasks:
        if task.name in seen:
            raise ConfigError(
                f"task {task.name} is asked twice for {where} ({seen[task.name].params} and "
                f"{task.params}); results are kept per device, variant and task",
                hint="run the second parameter set as a run of its own, or put one of "
                "them on=controller",
            )
        seen[task.name] = task


def task_files(task: Any, data_cache: Path) -> tuple[dict[str, Any], tuple[TaskFile, ...]]:
    """The job-spec parameters of a task request and the files its job must carry."""
    from tasks.workloads import get_task

    registered = get_task(task.name)
    registered.parse_params(dict(task.params))  # bad parameters fail here, before any device
    params = dict(task.params)
    files = []
    for key in getattr(registered, "file_params", ()):
        value = params.get(key)
        if not isinstance(value, str):
            continue
        local = _local_file(task.name, key, value, data_cache)
        if local is None:
            continue
        sha = sha256_file(local)
        remote = f"{DATA_DIR}/{sha[:16]}-{local.name}"
        params[key] = f"{WORKDIR_PREFIX}{remote}"
        files.append(TaskFile(local=local, remote=remote, sha256=sha))
    return params, tuple(files)


def _local_file(task: str, key: str, value: str, data_cache: Path) -> Path | None:
    """The controller file ``value`` names (written first for a named dataset), or None."""
    path = Path(value).expanduser()
    if path.is_file():
        return path.resolve()
    if "/" in value or value.startswith((".", "~")):
        raise ConfigError(
            f"task {task}: parameter {key!r}: file {value} does not exist on the controller",
            hint="pass an existing file; it is pushed to the devices with the job",
        )
    if task in ("choice", "last-word") and key == "data":
        from tasks.workloads.items import SMOKE
        from tasks.workloads.named_data import NAMED_DATASETS, materialize

        if value in NAMED_DATASETS:
            return materialize(task, value, data_cache)
        if value != SMOKE:
            raise ConfigError(
                f"task {task}: data {value!r} is neither a file nor a known dataset",
                hint="pass an existing JSONL file, 'smoke', or one of "
                + ", ".join(n for n, d in NAMED_DATASETS.items() if d.task == task),
            )
    return None
