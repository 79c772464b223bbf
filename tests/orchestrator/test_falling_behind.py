"""A device that falls behind while the others run is named, and still runs its trials.

Two local devices run the model-free ``idle`` task through the real run loop; device
``b``'s link comes up only well after ``a`` began measuring (a slow board or network,
played by opening its real local transport late).
"""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

from testbed.models import save_tiny_model

BEHIND_AFTER_S = 0.5


def test_a_device_that_falls_behind_is_named_and_not_dropped(tmp_path: Path) -> None:
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
    (tmp_path / "exp.yaml").write_text(
        f"model: {model}\nvariants: [dense]\n"
        "tasks:\n  - idle: {seconds: 1, query_seconds: 0.2}\n"
        "repetitions: 1\nwarmup: 0\nidle_seconds: 0\n"
    )
    exp = build_experiment(file=tmp_path / "exp.yaml")
    a_measuring = threading.Event()

    def progress_factory(run_id: str, names: list[str]) -> RunProgress:
        progress = RunProgress(run_id, names)
        progress.add_listener(
            lambda device, kind, text: (
                a_measuring.set() if (device, text.split(" ", 1)[0]) == ("a", "running") else None
            )
        )
        return progress

    def slow_link_to_b(device: Any) -> Any:
        if device.name == "b":
            assert a_measuring.wait(120), "device a never began measuring"
            threading.Event().wait(4 * BEHIND_AFTER_S)
        return open_transport(device)

    console = Console(file=io.StringIO(), width=200)
    lines: list[str] = []
    store = open_store(f"sqlite:///{tmp_path / 'results.db'}")
    summary = execute_run(
        devices=select_devices(load_inventory(tmp_path / "inventory.yaml"), "a,b"),
        experiment=exp,
        store=store,
        progress_factory=progress_factory,
        display_factory=lambda p: make_display(p, live=False, console=console),
        open_transport=slow_link_to_b,
        cache_dir=tmp_path / "cache",
        log=lines.append,
        behind_after_s=BEHIND_AFTER_S,
    )
    assert summary.behind == ("b",)  # named in the summary the run command prints
    assert "b is falling behind: still connecting" in console.file.getvalue()  # and as it happens
    assert summary.status == "ok"  # and not dropped: its trial ran to the end
    outcomes = {o.device: o for o in summary.outcomes}
    assert outcomes["b"].ok and list(outcomes["b"].trials.values()) == ["ok"]
    assert list((tmp_path / "b" / "jobs").glob("*/journal.jsonl"))
