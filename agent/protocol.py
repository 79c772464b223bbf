"""The wire contract between the controller and the device agent.

Two documents cross the wire:

* the **job spec** (``job.json``), written by the controller, validated here by the agent;
* the **event stream**, JSON lines written by the agent to stdout and to its journal.

Every event carries ``seq`` (1, 2, ... per job), ``type``, ``t`` (agent monotonic
seconds, the same clock as query timing and power samples) and ``wall`` (UTC ISO time).
The fields each type must carry are listed in :data:`EVENT_FIELDS`; extra fields are
allowed (forward compatible), missing or mistyped required fields are a
:class:`~tasks.errors.ProtocolError`.

This module is imported by the controller as well as the agent, so it uses the
standard library only.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

from tasks.errors import JobSpecError, ProtocolError

PROTOCOL_VERSION = 1
JOB_SPEC_VERSION = 1
#: a task parameter ``workdir:REL`` names the file REL pushed into the agent's work
#: directory (a data file of the controller's); the agent passes the task its real path
WORKDIR_PREFIX = "workdir:"

_NUM = (int, float)
_OPT_NUM = (int, float, type(None))
_OPT_STR = (str, type(None))
_OPT_BOOL = (bool, type(None))
_OPT_INT = (int, type(None))

#: Required fields per event type (beyond seq/type/t/wall) and their accepted types.
EVENT_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    # versions, board, meter; first event of every job
    "hello": {
        "protocol": (int,),
        "job_id": (str,),
        "agent_version": (str,),
        "bundle_sha256": _OPT_STR,
        "host": (str,),
        "board": _OPT_STR,
        "python": (str,),
        "torch": _OPT_STR,
        "transformers": _OPT_STR,
        "threads": (int,),
        "meter_kind": (str,),
        "meter_description": (str,),
        "meter_period_s": _OPT_NUM,
    },
    # loading, warmup, idle, running, stopping, ...
    "phase": {"phase": (str,)},
    # periodic dashboard summary
    "power": {"watts": _OPT_NUM, "samples": (int,), "fresh_samples": (int,)},
    # one finished query with its measurements
    "query": {
        "task": (str,),
        "rep": (int,),
        "index": (int,),
        "t_start": _NUM,
        "t_end": _NUM,
        "latency_s": _NUM,
        "ttft_s": _OPT_NUM,
        "prompt_tokens": (int,),
        "output_tokens": (int,),
        "tokens_per_s": _OPT_NUM,
        "output_sha256": _OPT_STR,
        "energy_j": _OPT_NUM,
        "net_energy_j": _OPT_NUM,
        "samples": (int,),
        "fresh_samples": (int,),
        "under_resolved": (bool,),
        "throttled": _OPT_BOOL,
        "temp_c": _OPT_NUM,
    },
    # energy over a window: kind is "load", "idle", "queries" or "idle_after" (the idle
    # power measured again after the queries, for the drift check)
    "window": {
        "kind": (str,),
        "task": _OPT_STR,
        "rep": (int, type(None)),
        "index": (int,),
        "t_start": _NUM,
        "t_end": _NUM,
        "duration_s": _NUM,
        "queries": (int,),
        "energy_j": _OPT_NUM,
        "net_energy_j": _OPT_NUM,
        "energy_j_per_query": _OPT_NUM,
        "net_energy_j_per_query": _OPT_NUM,
        "mean_power_w": _OPT_NUM,
        "median_power_w": _OPT_NUM,
        "samples": (int,),
        "fresh_samples": (int,),
        "under_resolved": (bool,),
        "throttled": _OPT_BOOL,
        "temp_c_before": _OPT_NUM,
        "temp_c_after": _OPT_NUM,
        "freq_mhz_before": _OPT_NUM,
        "freq_mhz_after": _OPT_NUM,
        "throttled_flags_before": _OPT_STR,
        "throttled_flags_after": _OPT_STR,
    },
    # a task metric such as perplexity
    "score": {"task": (str,), "metric": (str,), "value": _NUM},
    "warning": {"message": (str,), "code": (str,)},
    "error": {"message": (str,), "error_type": (str,)},
    # last event of every job; status is ok, failed or stopped
    "done": {"status": (str,), "queries": (int,), "duration_s": _NUM},
}

#: Fields an event type may carry, checked for their type when present (an agent of an
#: earlier version leaves them out).
EVENT_OPTIONAL_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    # the job's peak resident set (scope "job": since the job started; "process": since
    # the agent process started) and the median decode time per token of its queries
    "done": {
        "peak_rss_bytes": _OPT_INT,
        "peak_rss_scope": (str,),
        "decode_s_per_token": _OPT_NUM,
        "decode_queries": (int,),
    },
}

EVENT_TYPES = frozenset(EVENT_FIELDS)
DONE_STATUSES = frozenset({"ok", "failed", "stopped"})
WINDOW_KINDS = frozenset({"load", "idle", "queries", "idle_after"})


def utc_now_iso() -> str:
    """UTC wall-clock time as ISO 8601 with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Event:
    """One validated event of a job's stream."""

    seq: int
    type: str
    t: float
    wall: str
    data: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "type": self.type, "t": self.t, "wall": self.wall, **self.data}

    def to_json(self) -> str:
        """One JSON line (no trailing newline); NaN and infinity become null."""
        return json.dumps(_finite(self.to_dict()), separators=(",", ":"), allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def make_event(seq: int, type: str, t: float, wall: str | None = None, **data: Any) -> Event:
    """Build an event and validate it against :data:`EVENT_FIELDS`."""
    event = Event(seq=seq, type=type, t=float(t), wall=wall or utc_now_iso(), data=dict(data))
    validate_event(event.to_dict())
    return event


def validate_event(obj: Any, where: str = "event") -> None:
    """Raise :class:`ProtocolError` unless ``obj`` is a well-formed event."""
    if not isinstance(obj, dict):
        raise ProtocolError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for key, types in (("seq", (int,)), ("type", (str,)), ("t", _NUM), ("wall", (str,))):
        if key not in obj:
            raise ProtocolError(f"{where}: missing field '{key}'")
        if not isinstance(obj[key], types) or isinstance(obj[key], bool):
            raise ProtocolError(f"{where}: field '{key}' has type {type(obj[key]).__name__}")
    kind = obj["type"]
    if kind not in EVENT_FIELDS:
        raise ProtocolError(
            f"{where}: unknown event type '{kind}' (known: {', '.join(sorted(EVENT_TYPES))})",
            hint="the agent on the device may be newer than this controller; upgrade tslm-fleet",
        )
    if obj["seq"] < 1:
        raise ProtocolError(f"{where}: seq must be >= 1, got {obj['seq']}")
    for key, types in EVENT_FIELDS[kind].items():
        if key not in obj:
            raise ProtocolError(f"{where} seq {obj['seq']} ({kind}): missing field '{key}'")
        value = obj[key]
        bad_bool = isinstance(value, bool) and bool not in types
        if bad_bool or not isinstance(value, types):
            raise ProtocolError(
                f"{where} seq {obj['seq']} ({kind}): field '{key}' has type {type(value).__name__}"
            )
    for key, types in EVENT_OPTIONAL_FIELDS.get(kind, {}).items():
        value = obj.get(key)
        if key in obj and (
            (isinstance(value, bool) and bool not in types) or not isinstance(value, types)
        ):
            raise ProtocolError(
                f"{where} seq {obj['seq']} ({kind}): field '{key}' has type {type(value).__name__}"
            )
    if kind == "hello" and obj["protocol"] != PROTOCOL_VERSION:
        raise ProtocolError(
            f"{where}: agent speaks protocol {obj['protocol']}, this controller speaks "
            f"{PROTOCOL_VERSION}",
            hint="redeploy the agent bundle with this controller's version (tslm-fleet deploy)",
        )
    if kind == "done" and obj["status"] not in DONE_STATUSES:
        raise ProtocolError(
            f"{where}: done status '{obj['status']}' is not one of ok/failed/stopped"
        )
    if kind == "window" and obj["kind"] not in WINDOW_KINDS:
        raise ProtocolError(
            f"{where}: window kind '{obj['kind']}' is not one of {'/'.join(sorted(WINDOW_KINDS))}"
        )


def parse_event(line: str | bytes, where: str = "event") -> Event:
    """Parse and validate one JSON line of the event stream."""
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        text = line if isinstance(line, str) else line.decode("utf-8", "replace")
        raise ProtocolError(f"{where}: not a JSON line: {text[:120]!r}") from exc
    validate_event(obj, where)
    core = {k: obj.pop(k) for k in ("seq", "type", "t", "wall")}
    return Event(
        seq=core["seq"], type=core["type"], t=float(core["t"]), wall=core["wall"], data=obj
    )


# --------------------------------------------------------------------------- job spec

_JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def safe_relative_path(value: Any, where: str) -> str:
    """Validate a path that must stay inside the agent's work directory.

    Returns the normalised POSIX relative path; raises :class:`JobSpecError` for absolute
    paths, ``..`` components, empty strings and non-strings.
    """
    if not isinstance(value, str) or not value.strip():
        raise JobSpecError(f"{where}: expected a relative path inside the work directory")
    if "\x00" in value or "\\" in value:
        raise JobSpecError(f"{where}: path {value!r} contains a forbidden character")
    path = PurePosixPath(value)
    if path.is_absolute() or value.startswith("~"):
        raise JobSpecError(
            f"{where}: path {value!r} is absolute; it must be relative to the "
            "agent's work directory"
        )
    if any(part == ".." for part in path.parts):
        raise JobSpecError(f"{where}: path {value!r} leaves the agent's work directory ('..')")
    return str(path)


@dataclass(frozen=True)
class FileRef:
    """A file or directory inside the work directory, with the sha256 the agent verifies.

    For a directory artifact the sha256 is that of its ``manifest.json``.
    """

    path: str
    sha256: str


@dataclass(frozen=True)
class TaskSpec:
    name: str
    params: dict[str, Any]


@dataclass(frozen=True)
class MeterSpec:
    """Meter configuration as in inventory.yaml (``kind`` plus driver options)."""

    kind: str
    options: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.options}


@dataclass(frozen=True)
class WindowPolicy:
    """How back-to-back queries are grouped into energy windows.

    A window closes once it holds at least ``min_fresh_samples`` fresh meter samples and
    lasts at least ``min_seconds``; with a coarse meter this means several queries per
    window. A window with fewer fresh samples at the end of a repetition is flagged
    under-resolved.
    """

    min_fresh_samples: int = 10
    min_seconds: float = 0.0
    #: known load steps run before the queries to measure the meter's lag (0: none)
    lag_steps: int = 0
    #: a lag beyond this (seconds) is refused: a warning, and energies left unshifted
    max_lag_s: float = 2.0


@dataclass(frozen=True)
class StabilityPolicy:
    """The stable start of a trial and the drift check after it.

    Before the idle baseline the agent waits until the idle power and the CPU temperature
    are stable: over the last ``window_s`` seconds, the median power of the second half
    differs from the first half's by at most ``power_tolerance`` (relative) and the
    temperature spans at most ``temp_tolerance_c``. After ``max_wait_s`` (0: no wait) the
    trial runs anyway and is flagged. After the queries the idle power is measured again
    (``idle_seconds`` long); a relative change beyond ``drift_threshold`` is flagged.
    """

    max_wait_s: float = 60.0
    window_s: float = 3.0
    power_tolerance: float = 0.05
    temp_tolerance_c: float = 1.0
    drift_threshold: float = 0.05

    def to_dict(self) -> dict[str, float]:
        return {
            "max_wait_s": self.max_wait_s,
            "window_s": self.window_s,
            "power_tolerance": self.power_tolerance,
            "temp_tolerance_c": self.temp_tolerance_c,
            "drift_threshold": self.drift_threshold,
        }


#: stability field -> (lowest, highest, whether the lowest is allowed): the ranges the
#: experiment file and job.json are held to
STABILITY_RANGES: dict[str, tuple[float, float, bool]] = {
    "max_wait_s": (0.0, 3600.0, True),
    "window_s": (0.0, 600.0, False),
    "power_tolerance": (0.0, 1.0, False),
    "temp_tolerance_c": (0.0, 20.0, False),
    "drift_threshold": (0.0, 1.0, False),
}


def stability_problem(name: str, value: float) -> str | None:
    """Why ``value`` is out of range for stability field ``name`` (None when it is fine)."""
    low, high, low_ok = STABILITY_RANGES[name]
    if (value < low if low_ok else value <= low) or value > high:
        sign = ">=" if low_ok else ">"
        return f"must be {sign} {low:g} and <= {high:g}, got {value:g}"
    return None


@dataclass(frozen=True)
class JobSpec:
    """A validated job: one trial (device x variant x task) of a run."""

    job_id: str
    run_id: str
    model: FileRef
    model_name: str
    artifact: FileRef | None
    variant: str
    embedding_mode: str
    tasks: tuple[TaskSpec, ...]
    repetitions: int
    warmup: int
    idle_seconds: float
    window: WindowPolicy
    threads: int | None
    meter: MeterSpec
    max_duration_s: float
    stability: StabilityPolicy = StabilityPolicy()
    #: first seq number of this job's events: a retried trial continues its numbering so
    #: that (trial, seq) stays unique across attempts
    seq_start: int = 1
    #: whether the agent keeps every power sample in the job directory (samples.csv)
    record_samples: bool = True
    #: folders beyond the system locations where meter paths may point (inventory
    #: ``defaults: {meter_roots: [...]}``)
    meter_roots: tuple[str, ...] = ()
    spec_version: int = JOB_SPEC_VERSION

    @classmethod
    def from_dict(cls, obj: Any, where: str = "job.json") -> JobSpec:
        return _parse_job(obj, where)

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec_version": self.spec_version,
            "job_id": self.job_id,
            "run_id": self.run_id,
            "model": {
                "path": self.model.path,
                "sha256": self.model.sha256,
                "name": self.model_name,
            },
            "artifact": (
                None
                if self.artifact is None
                else {"path": self.artifact.path, "sha256": self.artifact.sha256}
            ),
            "variant": self.variant,
            "embedding_mode": self.embedding_mode,
            "tasks": [{"name": t.name, "params": dict(t.params)} for t in self.tasks],
            "repetitions": self.repetitions,
            "warmup": self.warmup,
            "idle_seconds": self.idle_seconds,
            "window": {
                "min_fresh_samples": self.window.min_fresh_samples,
                "min_seconds": self.window.min_seconds,
                "lag_steps": self.window.lag_steps,
                "max_lag_s": self.window.max_lag_s,
            },
            "stability": self.stability.to_dict(),
            "threads": self.threads,
            "meter": self.meter.to_dict(),
            "limits": {"max_duration_s": self.max_duration_s},
            "seq_start": self.seq_start,
            "record_samples": self.record_samples,
            "meter_roots": list(self.meter_roots),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_JOB_KEYS = {
    "spec_version",
    "job_id",
    "run_id",
    "model",
    "artifact",
    "variant",
    "embedding_mode",
    "tasks",
    "repetitions",
    "warmup",
    "idle_seconds",
    "window",
    "stability",
    "threads",
    "meter",
    "limits",
    "seq_start",
    "record_samples",
    "meter_roots",
}


def _need(obj: dict, key: str, types: tuple[type, ...], where: str, default: Any = ...) -> Any:
    if key not in obj:
        if default is ...:
            raise JobSpecError(f"{where}: missing field '{key}'")
        return default
    value = obj[key]
    if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
        names = "/".join(t.__name__ for t in types)
        raise JobSpecError(f"{where}.{key}: expected {names}, got {type(value).__name__}")
    return value


def _file_ref(obj: Any, where: str) -> FileRef:
    if not isinstance(obj, dict):
        raise JobSpecError(f"{where}: expected an object with 'path' and 'sha256'")
    path = safe_relative_path(obj.get("path"), f"{where}.path")
    sha = _need(obj, "sha256", (str,), where)
    if not _SHA_RE.match(sha):
        raise JobSpecError(f"{where}.sha256: expected 64 lowercase hex digits")
    return FileRef(path=path, sha256=sha)


def _parse_job(obj: Any, where: str) -> JobSpec:
    if not isinstance(obj, dict):
        raise JobSpecError(f"{where}: expected a JSON object")
    unknown = set(obj) - _JOB_KEYS
    if unknown:
        raise JobSpecError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    version = _spec_version(obj, where)
    job_id = _job_id(obj, where)
    run_id = _need(obj, "run_id", (str,), where)
    model_obj = _need(obj, "model", (dict,), where)
    model = _file_ref(model_obj, f"{where}.model")
    artifact_obj = obj.get("artifact")
    repetitions, warmup, idle_seconds = _schedule(obj, where)
    meter_obj = _need(obj, "meter", (dict,), where, default={"kind": "none"})
    meter_roots = _meter_roots(obj, where)
    return JobSpec(
        job_id=job_id,
        run_id=run_id,
        model=model,
        model_name=_need(model_obj, "name", (str,), f"{where}.model", default=model.path),
        artifact=None if artifact_obj is None else _file_ref(artifact_obj, f"{where}.artifact"),
        variant=_need(obj, "variant", (str,), where),
        embedding_mode=_embedding_mode(obj, where),
        tasks=_tasks(obj, where),
        repetitions=repetitions,
        warmup=warmup,
        idle_seconds=idle_seconds,
        window=_window(obj, where),
        stability=_stability(obj, where),
        threads=_threads(obj, where),
        meter=_meter(meter_obj, f"{where}.meter", meter_roots),
        meter_roots=meter_roots,
        max_duration_s=_max_duration(obj, where),
        seq_start=_seq_start(obj, where),
        record_samples=_need(obj, "record_samples", (bool,), where, default=True),
        spec_version=version,
    )


def _meter_roots(obj: dict, where: str) -> tuple[str, ...]:
    roots = _need(obj, "meter_roots", (list,), where, default=[])
    for i, root in enumerate(roots):
        if not isinstance(root, str) or not root.startswith("/"):
            raise JobSpecError(f"{where}.meter_roots[{i}]: {root!r} is not an absolute path")
    return tuple(roots)


def _meter(obj: dict, where: str, roots: tuple[str, ...] = ()) -> MeterSpec:
    """The job's meter, checked by the rules inventory.yaml is checked by on the controller."""
    from agent.meters import check_meter_options

    kind = _need(obj, "kind", (str,), where)
    options = {k: v for k, v in obj.items() if k != "kind"}
    problems = check_meter_options(kind, options, roots)
    if problems:
        raise JobSpecError(
            "; ".join(f"{where}.{key}: {message}" for key, message in problems.items())
        )
    return MeterSpec(kind=kind, options=options)


def _spec_version(obj: dict, where: str) -> int:
    version = _need(obj, "spec_version", (int,), where)
    if version != JOB_SPEC_VERSION:
        raise JobSpecError(
            f"{where}: job spec version {version} is not supported (this agent reads "
            f"{JOB_SPEC_VERSION})",
            hint="deploy the agent bundle that matches the controller",
        )
    return version


def check_job_id(job_id: Any, where: str = "job id") -> str:
    """A job id as a plain name: 1-128 letters, digits, '.', '_' or '-', starting with a
    letter or digit (so never '..', a '/', or anything naming a path outside jobs/)."""
    if not isinstance(job_id, str) or not _JOB_ID_RE.match(job_id):
        raise JobSpecError(
            f"{where}: {job_id!r} must be 1-128 characters of letters, digits, '.', '_' "
            "or '-', starting with a letter or digit",
            hint="job ids are printed by `start` and shown by the controller",
        )
    return job_id


def _job_id(obj: dict, where: str) -> str:
    return check_job_id(_need(obj, "job_id", (str,), where), f"{where}.job_id")


def _embedding_mode(obj: dict, where: str) -> str:
    mode = _need(obj, "embedding_mode", (str,), where, default="on-the-fly")
    if mode not in ("on-the-fly", "materialized"):
        raise JobSpecError(
            f"{where}.embedding_mode: {mode!r} is not one of on-the-fly/materialized"
        )
    return mode


def _tasks(obj: dict, where: str) -> tuple[TaskSpec, ...]:
    tasks_obj = _need(obj, "tasks", (list,), where)
    if not tasks_obj:
        raise JobSpecError(f"{where}.tasks: at least one task is required")
    tasks = []
    for i, t in enumerate(tasks_obj):
        tw = f"{where}.tasks[{i}]"
        if not isinstance(t, dict):
            raise JobSpecError(f"{tw}: expected an object with 'name' and 'params'")
        tasks.append(
            TaskSpec(
                name=_need(t, "name", (str,), tw),
                params=dict(_need(t, "params", (dict,), tw, default={})),
            )
        )
    return tuple(tasks)


def _schedule(obj: dict, where: str) -> tuple[int, int, float]:
    """(repetitions, warm-up queries, idle seconds)."""
    repetitions = _need(obj, "repetitions", (int,), where, default=1)
    warmup = _need(obj, "warmup", (int,), where, default=1)
    idle_seconds = float(_need(obj, "idle_seconds", _NUM, where, default=5.0))
    if repetitions < 1 or warmup < 0 or idle_seconds < 0:
        raise JobSpecError(f"{where}: repetitions must be >= 1, warmup and idle_seconds >= 0")
    return repetitions, warmup, idle_seconds


def _window(obj: dict, where: str) -> WindowPolicy:
    win = _need(obj, "window", (dict,), where, default={})
    policy = WindowPolicy(
        min_fresh_samples=_need(win, "min_fresh_samples", (int,), f"{where}.window", default=10),
        min_seconds=float(_need(win, "min_seconds", _NUM, f"{where}.window", default=0.0)),
        lag_steps=_need(win, "lag_steps", (int,), f"{where}.window", default=0),
        max_lag_s=float(_need(win, "max_lag_s", _NUM, f"{where}.window", default=2.0)),
    )
    if policy.lag_steps < 0 or not policy.max_lag_s > 0:
        raise JobSpecError(f"{where}.window: lag_steps must be >= 0 and max_lag_s > 0")
    return policy


def _stability(obj: dict, where: str) -> StabilityPolicy:
    section = _need(obj, "stability", (dict,), where, default={})
    unknown = set(section) - set(STABILITY_RANGES)
    if unknown:
        raise JobSpecError(f"{where}.stability: unknown field(s) {', '.join(sorted(unknown))}")
    defaults = StabilityPolicy()
    values = {}
    for name in STABILITY_RANGES:
        value = float(_need(section, name, _NUM, f"{where}.stability", getattr(defaults, name)))
        problem = stability_problem(name, value)
        if problem:
            raise JobSpecError(f"{where}.stability.{name}: {problem}")
        values[name] = value
    return StabilityPolicy(**values)


def _threads(obj: dict, where: str) -> int | None:
    threads = _need(obj, "threads", (int, type(None)), where, default=None)
    if threads is not None and threads < 1:
        raise JobSpecError(f"{where}.threads: must be >= 1")
    return threads


def _max_duration(obj: dict, where: str) -> float:
    limits = _need(obj, "limits", (dict,), where, default={})
    max_duration = float(_need(limits, "max_duration_s", _NUM, f"{where}.limits", default=3600.0))
    if max_duration <= 0:
        raise JobSpecError(f"{where}.limits.max_duration_s: must be > 0")
    return max_duration


def _seq_start(obj: dict, where: str) -> int:
    seq_start = _need(obj, "seq_start", (int,), where, default=1)
    if seq_start < 1:
        raise JobSpecError(f"{where}.seq_start: must be >= 1")
    return seq_start
