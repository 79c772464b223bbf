"""The alternating task: heavy queries compute for their time, light ones sleep."""

from __future__ import annotations

import pytest

from tasks.errors import TaskError
from tasks.workloads import get_task


def test_heavy_and_light_queries_alternate(llama, tokenizer) -> None:
    task = get_task("alternating")
    params = task.parse_params({"queries": "4", "heavy_s": "0.2", "light_s": 0.1})
    prepared = task.prepare(llama, tokenizer, params)
    assert prepared.num_queries() == 4
    results = [prepared.run_query(i) for i in range(4)]
    assert [r.extra["load"] for r in results] == ["heavy", "light", "heavy", "light"]
    for r in results:
        if r.extra["load"] == "heavy":
            assert r.extra["passes"] >= 1 and r.latency_s >= 0.2
        else:
            assert r.extra["passes"] == 0 and 0.1 <= r.latency_s < 0.5
    scores = {s.metric: s.value for s in prepared.scores(results)}
    assert scores["passes"] == sum(r.extra["passes"] for r in results)
    assert scores["passes_per_s"] > 0


def test_bad_parameters_are_refused() -> None:
    task = get_task("alternating")
    with pytest.raises(TaskError, match="heavy_s"):
        task.parse_params({"heavy_s": 0})
    with pytest.raises(TaskError, match="queries"):
        task.parse_params({"queries": "many"})
