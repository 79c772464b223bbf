"""Shared pieces of the agent tests: a tiny offline model in a work directory, job specs.

The model is :func:`testbed.models.save_tiny_model`'s 2-layer LLaMA.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.protocol import Event, parse_event
from tasks.hashing import sha256_path
from testbed.fleet import meter_roots
from testbed.models import save_tiny_model

ROOT = Path(__file__).resolve().parents[2]
MODEL_REL = "models/tiny-llama"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("tiny-model") / "tiny-llama"
    save_tiny_model(target)
    return target


@pytest.fixture
def workdir(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """A fresh agent work directory holding the tiny model under models/."""
    root = tmp_path / "wd"
    shutil.copytree(tiny_model_dir, root / MODEL_REL)
    return root


def job_dict(workdir: Path, job_id: str = "job-1", **overrides: Any) -> dict[str, Any]:
    """A valid job spec for the tiny model (generate, 'none' meter), with overrides."""
    spec: dict[str, Any] = {
        "spec_version": 1,
        "job_id": job_id,
        "run_id": "run-1",
        "model": {
            "path": MODEL_REL,
            "sha256": sha256_path(workdir / MODEL_REL),
            "name": "tiny-llama",
        },
        "artifact": None,
        "variant": "dense",
        "tasks": [
            {
                "name": "generate",
                "params": {"num_queries": 6, "max_new_tokens": 3, "chat_template": False},
            }
        ],
        "repetitions": 2,
        "warmup": 1,
        "idle_seconds": 0.2,
        "window": {"min_fresh_samples": 3, "min_seconds": 0.0},
        "threads": 1,
        "meter": {"kind": "none"},
    }
    spec.update(overrides)
    if "meter_roots" not in overrides:
        # an emulated meter's folder is allowed, as the inventory's defaults would allow it
        spec["meter_roots"] = meter_roots([spec["meter"]])
    return spec


def write_job(workdir: Path, spec: dict[str, Any], name: str = "job.json") -> Path:
    path = workdir.parent / name
    path.write_text(json.dumps(spec))
    return path


def agent_cmd(workdir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "agent", "--workdir", str(workdir), *args]


def run_agent(workdir: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        agent_cmd(workdir, *args), cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def parse_lines(text: str) -> list[Event]:
    """Every line of an event stream, validated against the protocol."""
    return [parse_event(line) for line in text.splitlines() if line.strip()]


def assert_gapless(events: list[Event], first: int = 1) -> None:
    assert [e.seq for e in events] == list(range(first, first + len(events)))
    assert events[0].type == "hello"
    assert events[-1].type == "done"
    assert [e.type for e in events].count("done") == 1


@pytest.fixture(scope="session")
def tiny_artifact_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tensor-train artifact of the tiny model's embedding, built by the real compressor."""
    from tasks.artifacts import build_artifact
    from tasks.compression.spec import parse_variant
    from tasks.models import resolve_model

    info = build_artifact(
        resolve_model(tiny_model_dir),
        parse_variant("tt:rank=4"),
        tmp_path_factory.mktemp("artifacts"),
    )
    assert info is not None
    return info.path


def add_artifact(workdir: Path, artifact_dir: Path) -> dict[str, str]:
    """Copy an artifact into the work directory; returns the job spec's artifact ref."""
    target = workdir / "artifacts" / artifact_dir.name
    shutil.copytree(artifact_dir, target)
    return {
        "path": f"artifacts/{artifact_dir.name}",
        "sha256": sha256_path(target / "manifest.json"),
    }
