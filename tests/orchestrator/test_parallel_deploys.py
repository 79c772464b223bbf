"""--max-parallel on two local devices running the idle task: one deploy at a time, no
model pushed, and 0 or less refused."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.models import save_tiny_model

ROOT = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, max_parallel: int | None) -> tuple[object, list[tuple[str, str]]]:
    from rich.console import Console

    from db.store import open_store
    from orchestrator.dashboard import make_display
    from orchestrator.experiment import build_experiment
    from orchestrator.inventory import load_inventory
    from orchestrator.progress import RunProgress
    from orchestrator.runs import execute_run
    from orchestrator.selection import select_devices
    from orchestrator.transport import open_transport

    model = tmp_path / "tiny"
    save_tiny_model(model)
    (tmp_path / "inventory.yaml").write_text(
        "devices:\n"
        f"  a: {{transport: local, workdir: {tmp_path / 'a'}, meter: {{kind: none}}}}\n"
        f"  b: {{transport: local, workdir: {tmp_path / 'b'}, meter: {{kind: none}}}}\n"
    )
    exp = build_experiment(
        model=str(model), variants=["dense"], tasks=["idle:seconds=0.3:query_seconds=0.1"]
    )
    states: list[tuple[str, str]] = []

    def progress_factory(run_id: str, names: list[str]) -> RunProgress:
        progress = RunProgress(run_id, names)
        progress.add_listener(
            lambda device, kind, text: (
                states.append((device, text.split(" ", 1)[0].rstrip(":")))
                if kind == "state"
                else None
            )
        )
        return progress

    summary = execute_run(
        devices=select_devices(load_inventory(tmp_path / "inventory.yaml"), "a,b"),
        experiment=exp,
        store=open_store(f"sqlite:///{tmp_path / 'results.db'}"),
        progress_factory=progress_factory,
        display_factory=lambda p: make_display(p, live=False, console=Console(file=io.StringIO())),
        open_transport=open_transport,
        cache_dir=tmp_path / "cache",
        log=lambda _m: None,
        max_parallel=max_parallel,
    )
    return summary, states


def test_one_deploy_at_a_time_and_no_model_for_the_idle_task(tmp_path: Path) -> None:
    summary, states = _run(tmp_path, max_parallel=1)
    assert summary.status == "ok", summary
    deploying = None
    for device, state in states:
        if state in ("connecting", "deploying"):
            assert deploying in (None, device), f"{device} deploys while {deploying} does"
            deploying = device
        elif device == deploying:
            deploying = None
    for name in ("a", "b"):
        assert not list((tmp_path / name / "models").rglob("*.safetensors"))  # nothing pushed
        assert list((tmp_path / name / "jobs").glob("*/journal.jsonl"))


@pytest.mark.parametrize("value", ["0", "-2"])
def test_max_parallel_below_one_is_refused(tmp_path: Path, value: str) -> None:
    for command in ("run", "deploy", "bootstrap"):
        result = subprocess.run(
            [sys.executable, "-m", "orchestrator", command, "-d", "local", "--max-parallel", value],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert "--max-parallel" in result.stderr and "Traceback" not in result.stderr


def test_execute_run_refuses_a_max_parallel_below_one(tmp_path: Path) -> None:
    from tasks.errors import ConfigError

    with pytest.raises(ConfigError, match="--max-parallel 0"):
        _run(tmp_path, max_parallel=0)
