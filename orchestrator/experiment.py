"""Experiments: which model, variants and tasks to run, and how to measure them.

An experiment comes from CLI flags, from a YAML file (``--experiment FILE``), or both
(flags override the file). Without either, the defaults make ``tslm-fleet run --devices
pi4,pi5`` a meaningful experiment on its own: the embedded SmolLM2 model, the dense
baseline against per-token TT at about 2x (as published, and with frequent tokens kept
dense and an adaptive rank budget), the ``generate`` and ``perplexity`` tasks.

Example file::

    name: smollm2-tt-sweep
    model: default
    variants: [dense, "tt:ratio=2", "tt:rank=8:shape=8x8x9", "svd:ratio=2", int8]
    tasks:
      - generate: {num_queries: 8, max_new_tokens: 32}
      - perplexity: {window: 512, stride: 256}
    repetitions: 3
    warmup: 1
    idle_seconds: 10
    window: {min_fresh_samples: 10, min_seconds: 2, lag_steps: 6}
    stability: {max_wait_s: 60, window_s: 3, power_tolerance: 0.05,
                temp_tolerance_c: 1.0, drift_threshold: 0.05}

``stability`` is the stable start before each trial's idle baseline (wait until the
idle power and the temperature are stable over ``window_s``, at most ``max_wait_s``; 0:
no wait) and the idle drift check after its queries (``agent/stability.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from agent.protocol import StabilityPolicy, stability_problem
from tasks.errors import ConfigError

DEFAULT_MODEL = "default"
#: the dense model, per-token TT at 2x as published (one error bound for every token), and
#: TT at 2x that keeps the calibration text's frequent tokens dense, centres the table and
#: spends the parameter budget where it buys the most accuracy
DEFAULT_VARIANTS = ("dense", "tt:ratio=2", "tt:ratio=2:keep=auto:center=true:alloc=weighted")
DEFAULT_TASKS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("generate", {}),
    ("perplexity", {}),
)
#: the demo: the same experiment, sized to finish in a few minutes on a 2-core machine
DEMO_TASKS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("generate", {"num_queries": 4, "max_new_tokens": 16}),
    ("perplexity", {"window": 256, "stride": 256, "max_tokens": 1024}),
    # smoke-set accuracy, once per variant on the controller (not comparable to published)
    ("choice", {"limit": 20, "on": "controller"}),
)


class WindowModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_fresh_samples: int = Field(10, ge=1)
    min_seconds: float = Field(0.0, ge=0)
    lag_steps: int = Field(0, ge=0)
    max_lag_s: float = Field(2.0, gt=0)


class StabilityModel(BaseModel):
    """``stability:``: the ranges are those of ``agent.protocol.STABILITY_RANGES``."""

    model_config = ConfigDict(extra="forbid")
    max_wait_s: float = StabilityPolicy.max_wait_s
    window_s: float = StabilityPolicy.window_s
    power_tolerance: float = StabilityPolicy.power_tolerance
    temp_tolerance_c: float = StabilityPolicy.temp_tolerance_c
    drift_threshold: float = StabilityPolicy.drift_threshold

    @field_validator("*")
    @classmethod
    def _in_range(cls, value: float, info: Any) -> float:
        problem = stability_problem(info.field_name, value)
        if problem:
            raise PydanticCustomError("out_of_range", problem)
        return value

    def policy(self) -> StabilityPolicy:
        return StabilityPolicy(**self.model_dump())


class ExperimentModel(BaseModel):
    """The YAML form of an experiment, validated."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    model: str = DEFAULT_MODEL
    variants: list[str] = Field(default_factory=lambda: list(DEFAULT_VARIANTS), min_length=1)
    tasks: list[str | dict[str, dict[str, Any] | None]] = Field(
        default_factory=lambda: [name for name, _ in DEFAULT_TASKS], min_length=1
    )
    repetitions: int = Field(3, ge=1)
    warmup: int = Field(1, ge=0)
    idle_seconds: float = Field(10.0, ge=0)
    window: WindowModel = Field(default_factory=WindowModel)
    stability: StabilityModel = Field(default_factory=StabilityModel)
    threads: int | None = Field(None, ge=1)
    embedding_mode: str = "on-the-fly"
    max_duration_s: float = Field(3600.0, gt=0)

    @field_validator("tasks", mode="before")
    @classmethod
    def _on_key(cls, value: Any) -> Any:
        """YAML 1.1 reads a bare ``on:`` key as ``true``: read it back as the ``on``
        task parameter (``- choice: {on: controller}``)."""
        if not isinstance(value, list):
            return value
        out = []
        for item in value:
            if isinstance(item, dict):
                item = {
                    name: (
                        {("on" if k is True else k): v for k, v in params.items()}
                        if isinstance(params, dict)
                        else params
                    )
                    for name, params in item.items()
                }
            out.append(item)
        return out

    @field_validator("embedding_mode")
    @classmethod
    def _mode(cls, value: str) -> str:
        if value not in ("on-the-fly", "materialized"):
            raise ValueError("must be 'on-the-fly' or 'materialized'")
        return value


@dataclass(frozen=True)
class TaskRequest:
    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Experiment:
    """A resolved experiment: model x variants x tasks plus measurement settings."""

    name: str
    model: str
    variants: tuple[str, ...]
    tasks: tuple[TaskRequest, ...]
    repetitions: int
    warmup: int
    idle_seconds: float
    min_fresh_samples: int
    min_window_s: float
    threads: int | None
    embedding_mode: str
    max_duration_s: float
    #: known load steps before each trial's queries to measure the meter's lag (0: none)
    lag_steps: int = 0
    max_lag_s: float = 2.0
    stability: StabilityPolicy = field(default_factory=StabilityPolicy)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model,
            "variants": list(self.variants),
            "tasks": [{t.name: dict(t.params)} for t in self.tasks],
            "repetitions": self.repetitions,
            "warmup": self.warmup,
            "idle_seconds": self.idle_seconds,
            "window": {
                "min_fresh_samples": self.min_fresh_samples,
                "min_seconds": self.min_window_s,
                "lag_steps": self.lag_steps,
                "max_lag_s": self.max_lag_s,
            },
            "stability": self.stability.to_dict(),
            "threads": self.threads,
            "embedding_mode": self.embedding_mode,
            "max_duration_s": self.max_duration_s,
        }


def parse_task_option(text: str) -> TaskRequest:
    """``--task NAME[:key=value...]`` -> TaskRequest (values parsed as YAML scalars).

    A piece without ``=`` continues the value before it, so values may hold colons:
    ``perplexity:text=builtin:dialogue``, ``perplexity:text=hf:wikitext:CONFIG:test``.
    """
    name, *pieces = text.split(":")
    raw: dict[str, str] = {}
    key = None
    for piece in pieces:
        k, sep, value = piece.partition("=")
        if sep and k:
            key, raw[k] = k, value
        elif key is not None:
            raw[key] += ":" + piece
        else:
            raise ConfigError(f"--task {text!r}: expected NAME[:key=value...], got {piece!r}")
    params: dict[str, Any] = {k: yaml.safe_load(v) for k, v in raw.items()}
    if not name:
        raise ConfigError(f"--task {text!r}: missing task name")
    return TaskRequest(name=name, params=params)


def _task_requests(items: list[Any], where: str) -> tuple[TaskRequest, ...]:
    out = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            out.append(parse_task_option(item))
        elif isinstance(item, dict) and len(item) == 1:
            ((name, params),) = item.items()
            out.append(TaskRequest(name=name, params=dict(params or {})))
        else:
            raise ConfigError(
                f"{where}: tasks[{i}] must be a name or a one-key mapping "
                "{name: {param: value}}"
            )
    return tuple(out)


def load_experiment_file(path: Path) -> ExperimentModel:
    """Read and validate an experiment YAML file (errors name the file and field)."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"experiment file {path} does not exist") from exc
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read experiment file: {exc}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: an experiment file is a mapping of settings")
    try:
        return ExperimentModel.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ConfigError(
            f"{path}: {loc}: {first['msg']}",
            hint=f"{len(exc.errors())} problem(s) in total; see the example in "
            "orchestrator/experiment.py's documentation",
        ) from exc


def experiment_from_dict(data: dict[str, Any], where: str) -> Experiment:
    """Rebuild an experiment stored with a run (``Experiment.to_dict()``), for ``--resume``."""
    try:
        model = ExperimentModel.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            f"{where}: the stored experiment is not valid: {exc.errors()[0]['msg']}"
        ) from exc
    return Experiment(
        name=model.name or "experiment",
        model=model.model,
        variants=tuple(model.variants),
        tasks=_task_requests(list(model.tasks), where),
        repetitions=model.repetitions,
        warmup=model.warmup,
        idle_seconds=model.idle_seconds,
        min_fresh_samples=model.window.min_fresh_samples,
        min_window_s=model.window.min_seconds,
        threads=model.threads,
        embedding_mode=model.embedding_mode,
        max_duration_s=model.max_duration_s,
        lag_steps=model.window.lag_steps,
        max_lag_s=model.window.max_lag_s,
        stability=model.stability.policy(),
    )


#: what each run flag decides in an experiment (``--experiment`` and ``--demo``: all)
FLAG_FIELDS: dict[str, tuple[str, ...]] = {
    "--model": ("model",),
    "--variant": ("variants",),
    "--task": ("tasks",),
    "--queries": ("tasks",),
    "--repetitions": ("repetitions",),
    "--stable-wait": ("stability",),
}
_ALL_FIELDS = (
    "model",
    "variants",
    "tasks",
    "repetitions",
    "warmup",
    "idle_seconds",
    "window",
    "stability",
    "threads",
    "embedding_mode",
    "max_duration_s",
)


def resume_conflicts(stored: Experiment, requested: Experiment, flags: list[str]) -> list[str]:
    """Where the experiment ``flags`` ask for differs from the run being resumed.

    ``flags``: the experiment flags given (``--variant``, ``--experiment``, ...); only the
    fields they decide are compared. Empty when the flags agree with the stored run.
    """
    fields: dict[str, str] = {}
    for flag in flags:
        for name in FLAG_FIELDS.get(flag, _ALL_FIELDS):
            fields.setdefault(name, flag)
    have, want = stored.to_dict(), requested.to_dict()
    return [
        f"{name} (from {flag}): the run has {_shown(have[name])}, the flags ask for "
        f"{_shown(want[name])}"
        for name, flag in fields.items()
        if have[name] != want[name]
    ]


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_shown(v)}" for k, v in value.items())
    return str(value)


def build_experiment(
    *,
    file: Path | None = None,
    model: str | None = None,
    variants: list[str] | None = None,
    tasks: list[str] | None = None,
    queries: int | None = None,
    repetitions: int | None = None,
    stable_wait_s: float | None = None,
    demo: bool = False,
) -> Experiment:
    """Combine an experiment file (optional), CLI overrides and the defaults."""
    base = load_experiment_file(file) if file else ExperimentModel()
    where = str(file) if file else "defaults"
    task_reqs = _task_requests(list(base.tasks), where)
    repetitions_value = base.repetitions
    warmup, idle = base.warmup, base.idle_seconds
    if demo and file is None:
        task_reqs = tuple(TaskRequest(n, dict(p)) for n, p in DEMO_TASKS)
        repetitions_value, idle = 2, 3.0
    if tasks:
        task_reqs = tuple(parse_task_option(t) for t in tasks)
    if queries is not None:
        if queries < 1:
            raise ConfigError("--queries must be >= 1")
        task_reqs = tuple(
            TaskRequest(t.name, {**t.params, "num_queries": queries}) if t.name == "generate" else t
            for t in task_reqs
        )
    if repetitions is not None:
        if repetitions < 1:
            raise ConfigError("--repetitions must be >= 1")
        repetitions_value = repetitions
    stability = base.stability.policy()
    if stable_wait_s is not None:
        problem = stability_problem("max_wait_s", stable_wait_s)
        if problem:
            raise ConfigError(f"--stable-wait: {problem}")
        stability = replace(stability, max_wait_s=float(stable_wait_s))
    return Experiment(
        name=base.name or ("demo" if demo else "experiment"),
        model=model or base.model,
        variants=tuple(dict.fromkeys(variants or base.variants)),
        tasks=task_reqs,
        repetitions=repetitions_value,
        warmup=warmup,
        idle_seconds=idle,
        min_fresh_samples=base.window.min_fresh_samples,
        min_window_s=base.window.min_seconds,
        threads=base.threads,
        embedding_mode=base.embedding_mode,
        max_duration_s=base.max_duration_s,
        lag_steps=base.window.lag_steps,
        max_lag_s=base.window.max_lag_s,
        stability=stability,
    )
