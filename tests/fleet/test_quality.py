"""Task quality on real SSH devices: ``choice:data=FILE`` pushed with the job to each
board, and the same task ``on=controller`` run once per variant on the controller."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fleet.harness import cli, run_args, run_id_of, run_status, trials, write_experiment

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

ITEMS = [
    {"context": "The keeper climbed the", "choices": ["stairs", "sea", "bread"], "gold": 0},
    {"context": "Question: what do bees carry?\nAnswer:", "choices": ["pollen", "soil"], "gold": 0},
    {"context": "The train was", "choices": ["late", "blue", "loud", "wet"], "gold": 1},
]


@pytest.mark.timeout(600)
def test_choice_from_a_file_on_devices_and_on_the_controller(
    fleet_factory, tiny_model: Path, tmp_path: Path
) -> None:
    fleet = fleet_factory(2)
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(item) + "\n" for item in ITEMS))
    exp = write_experiment(
        tmp_path / "exp.yaml",
        tiny_model,
        variants=("dense", "tt:rank=2"),
        tasks=(
            ("choice", {"data": str(data)}),
            ("choice", {"data": str(data), "on": "controller"}),
        ),
    )
    db = f"sqlite:///{tmp_path / 'results.db'}"
    run = cli(*run_args(fleet, "pi4,pi5", exp, db, tmp_path / "cache"), cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    run_id = run_id_of(run.stdout)
    assert run_status(db, run_id) == "ok"
    rows = trials(db, run_id)
    assert sorted((r["device"], r["variant"]) for r in rows) == sorted(
        (d, v) for d in ("pi4", "pi5", "controller") for v in ("dense", "tt:rank=2")
    )
    assert {r["status"] for r in rows} == {"ok"} and {r["task"] for r in rows} == {"choice"}

    results = json.loads(
        cli("results", "--run", run_id, "--format", "json", "--db", db, cwd=tmp_path).stdout
    )
    for variant in ("dense", "tt:rank=2"):
        scores = [r["scores"] for r in results if r["variant"] == variant]
        assert len(scores) == 3 and all(s == scores[0] for s in scores)  # board-independent
        assert scores[0]["items"] == 3
    for device in fleet.devices:  # the file went to each board, named by its content
        pushed = list((device.home / ".tslm" / "data").glob("*-items.jsonl"))
        assert [p.read_text() for p in pushed] == [data.read_text()]
    table = cli("compare", "--run", run_id, "--db", db, cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "controller" in table.stdout and "acc" in table.stdout
