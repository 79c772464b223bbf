"""``tslm-fleet tasks`` lists the registry, without loading torch."""

from __future__ import annotations

import json
import subprocess
import sys

from tasks.workloads import TASKS


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "tasks", *args],
        capture_output=True,
        text=True,
        check=True,
    )


def test_tasks_lists_every_task_with_its_parameters() -> None:
    out = _cli().stdout
    for name in TASKS:
        assert f"{name}:" in out
    for param in ("max_new_tokens", "chat_template", "window", "stride"):
        assert param in out


def test_tasks_json() -> None:
    listed = json.loads(_cli("--json").stdout)
    assert [t["name"] for t in listed] == list(TASKS)
    generate = {p["name"]: p for p in listed[0]["parameters"]}
    assert generate["max_new_tokens"] == {
        "name": "max_new_tokens",
        "type": "int",
        "default": 32,
        "help": generate["max_new_tokens"]["help"],
    }


def test_listing_tasks_does_not_import_torch() -> None:
    code = (
        "from tasks.workloads import list_tasks; list_tasks(); import sys; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
