"""A batch of jobs in one agent process: one base-model load, per-job journals, the same
results as jobs run alone, and the fate of queued jobs when the batch stops or dies."""

from __future__ import annotations

import io
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from agent.batch import run_batch
from agent.jobs import Workdir, claim_job, claim_jobs, job_status
from agent.journal import read_events
from agent.protocol import Event, JobSpec
from agent.runner import run_job
from tests.agent.conftest import add_artifact, assert_gapless, job_dict, run_agent, write_job

PPL = {"name": "perplexity", "params": {"max_tokens": 48, "window": 16, "stride": 8}}
GEN = {
    "name": "generate",
    "params": {"num_queries": 3, "max_new_tokens": 4, "chat_template": False},
}


def _events(workdir: Path, job_id: str) -> list[Event]:
    return list(read_events(Workdir.open(workdir).job(job_id).journal))


def _outputs(events: list[Event]) -> list[tuple[object, ...]]:
    """What must not depend on how the model was loaded: outputs and scores."""
    queries = [
        (e["task"], e["rep"], e["index"], e.get("output_sha256"))
        for e in events
        if e.type == "query"
    ]
    scores = [
        (e["task"], e["rep"], e["metric"], e["value"])
        for e in events
        if e.type == "score" and not e["metric"].endswith("_s")  # timings differ
    ]
    return queries + scores


def _phases(events: list[Event], phase: str) -> list[Event]:
    return [e for e in events if e.type == "phase" and e["phase"] == phase]


@pytest.fixture(scope="module")
def lossy_artifact_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A rank-1 tensor train: lossy enough to change the tiny model's outputs."""
    from tasks.artifacts import build_artifact
    from tasks.compression.spec import parse_variant
    from tasks.models import resolve_model

    info = build_artifact(
        resolve_model(tiny_model_dir), parse_variant("tt:rank=1"), tmp_path_factory.mktemp("a")
    )
    return info.path


def test_a_batch_loads_the_base_model_once_and_matches_jobs_run_alone(
    workdir: Path, lossy_artifact_dir: Path
) -> None:
    artifact = add_artifact(workdir, lossy_artifact_dir)
    specs = [
        JobSpec.from_dict(job_dict(workdir, "dense-1", tasks=[GEN, PPL])),
        JobSpec.from_dict(
            job_dict(workdir, "tt-1", artifact=artifact, variant="tt:rank=1", tasks=[GEN, PPL])
        ),
        JobSpec.from_dict(job_dict(workdir, "dense-2", tasks=[GEN, PPL])),
    ]
    wd = Workdir.open(workdir)
    paths, locks = claim_jobs(wd, specs)
    assert run_batch(specs, wd, paths, locks, echo=io.StringIO()) == ["ok", "ok", "ok"]
    batch = {s.job_id: _events(workdir, s.job_id) for s in specs}
    for events in batch.values():
        assert_gapless(events)
    # the load's energy is recorded once: only the first job has a load window
    kinds = [[w["kind"] for w in batch[s.job_id] if w.type == "window"][:2] for s in specs]
    assert kinds == [["load", "idle"], ["idle", "queries"], ["idle", "queries"]]
    loads = [_phases(batch[s.job_id], "loading")[0]["base_model"] for s in specs]
    assert loads == ["load", "reuse", "reuse"]

    # the same jobs, each alone in a fresh process state, give identical outputs and scores
    alone = {}
    for spec in specs:
        single = JobSpec.from_dict({**spec.to_dict(), "job_id": spec.job_id + "-alone"})
        single_paths, single_locks = claim_job(wd, single)
        assert run_job(single, wd, single_paths, single_locks, io.StringIO()) == "ok"
        alone[spec.job_id] = list(read_events(single_paths.journal))
    for spec in specs:
        assert _outputs(batch[spec.job_id]) == _outputs(alone[spec.job_id])
        assert _outputs(batch[spec.job_id])
    # dense after a compressed variant is dense again
    assert _outputs(batch["dense-1"]) == _outputs(batch["dense-2"])
    assert _outputs(batch["dense-1"]) != _outputs(batch["tt-1"])


def test_a_stopped_batch_stops_the_running_job_and_ends_the_queued_ones(
    workdir: Path,
) -> None:
    long = {
        "name": "generate",
        "params": {"num_queries": 500, "max_new_tokens": 4, "chat_template": False},
    }
    specs = [JobSpec.from_dict(job_dict(workdir, f"job-{i}", tasks=[long])) for i in (1, 2)]
    wd = Workdir.open(workdir)
    paths, locks = claim_jobs(wd, specs)
    assert job_status(wd, "job-2").state == "running"  # queued: held by the batch
    assert not paths[1].pid_file.exists()  # no pid until it starts

    def stop_when_running() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(e.type == "query" for e in read_events(paths[0].journal)) or any(
                e.type == "phase" and e["phase"] == "running" for e in read_events(paths[0].journal)
            ):
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.05)

    threading.Thread(target=stop_when_running, daemon=True).start()
    assert run_batch(specs, wd, paths, locks, echo=None) == ["stopped", "stopped"]
    second = _events(workdir, "job-2")
    assert_gapless(second)
    assert second[-1]["status"] == "stopped" and second[-1]["queries"] == 0
    assert job_status(wd, "job-1").state == "done" and job_status(wd, "job-2").state == "done"


def test_a_killed_batch_leaves_its_queued_jobs_dead_and_never_started(workdir: Path) -> None:
    long = {
        "name": "generate",
        "params": {"num_queries": 2000, "max_new_tokens": 4, "chat_template": False},
    }
    first = write_job(workdir, job_dict(workdir, "job-a", tasks=[long]), "a.json")
    second = write_job(workdir, job_dict(workdir, "job-b", tasks=[GEN]), "b.json")
    started = run_agent(workdir, "start", str(first), str(second))
    assert started.returncode == 0, started.stderr
    lines = [json.loads(line) for line in started.stdout.splitlines()]
    assert [line["job_id"] for line in lines] == ["job-a", "job-b"]
    assert lines[0]["pid"] == lines[1]["pid"]  # one process for the batch
    wd = Workdir.open(workdir)
    deadline = time.monotonic() + 60
    while not any(e.type == "phase" and e["phase"] == "running" for e in _events(workdir, "job-a")):
        assert time.monotonic() < deadline, "job-a never ran"
        time.sleep(0.1)
    os.kill(lines[0]["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while job_status(wd, "job-a").state == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    a, b = job_status(wd, "job-a"), job_status(wd, "job-b")
    assert a.state == "dead" and a.last_seq
    assert b.state == "dead" and b.last_seq is None  # never started: can run again
    followed = run_agent(workdir, "follow", "job-b")
    assert followed.returncode == 3 and "died" in followed.stderr
    # the device lock went with the process: a new batch may start
    again = run_agent(
        workdir,
        "start",
        str(write_job(workdir, job_dict(workdir, "job-b2", tasks=[GEN]), "c.json")),
    )
    assert again.returncode == 0, again.stderr
    assert run_agent(workdir, "follow", "job-b2").returncode == 0


def test_a_batch_naming_a_job_twice_is_refused(workdir: Path) -> None:
    spec = write_job(workdir, job_dict(workdir, "twice"))
    result = run_agent(workdir, "start", str(spec), str(spec))
    assert result.returncode == 2 and "names a job twice" in result.stderr


def test_stopping_a_queued_job_stops_its_batch(workdir: Path) -> None:
    long = {
        "name": "generate",
        "params": {"num_queries": 2000, "max_new_tokens": 4, "chat_template": False},
    }
    first = write_job(workdir, job_dict(workdir, "job-a", tasks=[long]), "a.json")
    second = write_job(workdir, job_dict(workdir, "job-b", tasks=[GEN]), "b.json")
    assert run_agent(workdir, "start", str(first), str(second)).returncode == 0
    wd = Workdir.open(workdir)
    deadline = time.monotonic() + 60
    while not any(e.type == "phase" and e["phase"] == "running" for e in _events(workdir, "job-a")):
        assert time.monotonic() < deadline, "job-a never ran"
        time.sleep(0.1)
    stopped = run_agent(workdir, "stop", "job-b", "--wait", "30")
    assert stopped.returncode == 0, stopped.stderr
    assert json.loads(stopped.stdout)["state"] == "done"
    assert job_status(wd, "job-a").done_status == "stopped"
    assert job_status(wd, "job-b").done_status == "stopped"


def test_a_variant_that_no_longer_reads_the_base_table_releases_its_pages(
    tiny_model_dir: Path, lossy_artifact_dir: Path, tmp_path: Path
) -> None:
    import torch

    from agent.memory import _file_mapping_of
    from agent.models import LoadedModels
    from tasks.artifacts import load_artifact
    from tasks.models import resolve_model

    ref = resolve_model(tiny_model_dir)
    models = LoadedModels()
    ids = torch.tensor([[1, 5, 9, 13]])
    dense, _ = models.model_for(ref, tmp_path, None, "on-the-fly")
    table = dense.get_input_embeddings().weight
    start = table.data_ptr()
    assert _file_mapping_of(start, start + 4096, Path("/proc/self")) is not None  # mapped
    with torch.no_grad():
        before = dense(ids).logits.clone()
    assert models.released_bytes == 0  # dense reads its table
    # the tiny model's head is its own weight: the variant reads the base table no more
    variant, _ = models.model_for(ref, tmp_path, load_artifact(lossy_artifact_dir), "on-the-fly")
    assert variant.get_input_embeddings() is not table
    assert models.released_bytes >= 4096
    # dense again reads the released table back from its file, unchanged
    again, _ = models.model_for(ref, tmp_path, None, "on-the-fly")
    with torch.no_grad():
        assert torch.equal(again(ids).logits, before)
    assert models.released_bytes == 0 and models.base_loads == 1
