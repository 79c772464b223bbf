"""What a run plans before any device is contacted: variants, the model, trials.

Plain frozen records, built by :mod:`orchestrator.runs` and consumed by the device
workers of :mod:`orchestrator.scheduler`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.placement import TaskFile


@dataclass(frozen=True)
class PreparedVariant:
    """A variant compressed on the controller (no artifact for dense)."""

    spec: str
    slug: str
    method: str
    artifact_dir: Path | None
    artifact_sha256: str | None
    artifact_id: int | None


@dataclass(frozen=True)
class TrialPlan:
    """One trial of a device: a stored trial row, its variant, task and task parameters."""

    trial_id: int
    variant: PreparedVariant
    task: str
    params: dict[str, Any]
    #: queries the trial is expected to run (all repetitions), for the progress bars
    estimated_queries: int = 0
    #: controller files the job reads (``params`` names them ``workdir:...``)
    files: tuple[TaskFile, ...] = ()

    @property
    def label(self) -> str:
        """``variant / task``, as the outcome and the dashboard name the trial."""
        return f"{self.variant.spec} / {self.task}"


@dataclass(frozen=True)
class ModelPayload:
    """The base model as pushed to devices: local files and their remote location."""

    name: str
    local_files: tuple[Path, ...]
    local_root: Path  # files are pushed relative to this
    remote_rel: str  # job spec path: the .gguf file or the model directory
    remote_dir: str
    sha256: str
