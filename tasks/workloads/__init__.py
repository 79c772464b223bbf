"""The registry of workloads: the name a user types -> the module and class of the task.

``--task NAME`` on the command line and ``tasks[].name`` in a job spec are looked up in
:data:`TASKS`; the task modules are imported only when asked for, and they import torch
and transformers only when a task is prepared, so listing tasks stays fast.
"""

from __future__ import annotations

import difflib
import importlib
import os

from tasks.errors import TaskError
from tasks.workloads.base import PreparedTask, QueryResult, Score, Task
from tasks.workloads.params import ParamInfo, TaskInfo, describe_params

__all__ = [
    "TASKS",
    "ParamInfo",
    "PreparedTask",
    "QueryResult",
    "Score",
    "Task",
    "TaskInfo",
    "get_task",
    "list_tasks",
    "needs_model",
    "set_threads",
]

#: task name -> "module:Class"
TASKS: dict[str, str] = {
    "generate": "tasks.workloads.generate:GenerateTask",
    "perplexity": "tasks.workloads.perplexity:PerplexityTask",
    "next-token": "tasks.workloads.next_token:NextTokenTask",
    "choice": "tasks.workloads.choice:ChoiceTask",
    "last-word": "tasks.workloads.last_word:LastWordTask",
    "idle": "tasks.workloads.idle:IdleTask",
    "alternating": "tasks.workloads.alternating:AlternatingTask",
}


def get_task(name: str) -> Task:
    """The task registered as ``name``; unknown names raise :class:`TaskError`."""
    target = TASKS.get(name)
    if target is None:
        close = difflib.get_close_matches(name, list(TASKS), n=1)
        guess = f" (did you mean {close[0]!r}?)" if close else ""
        raise TaskError(
            f"unknown task {name!r}{guess}",
            hint=f"known tasks: {', '.join(TASKS)} (see tslm-fleet tasks)",
        )
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)()


def needs_model(name: str) -> bool:
    """Whether the task ``name`` runs on a loaded model (``idle`` does not)."""
    return bool(getattr(get_task(name), "needs_model", True))


def list_tasks() -> list[TaskInfo]:
    """Every registered task with its description and parameters, in registry order."""
    infos = []
    for name in TASKS:
        task = get_task(name)
        infos.append(
            TaskInfo(
                name=name,
                description=task.description,
                parameters=describe_params(task.params_type),
            )
        )
    return infos


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_threads(threads: int | None) -> int:
    """Apply ``--threads`` to torch (None: all available cores); return the count in use.

    This is the one place the thread count is set; tasks never change it.
    """
    if threads is not None and (isinstance(threads, bool) or threads < 1):
        raise TaskError(f"threads must be a positive integer, got {threads!r}")
    import torch

    torch.set_num_threads(threads or available_cores())
    return torch.get_num_threads()
