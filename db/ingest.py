"""The write side of the results database: what the controller calls during a run.

Events arrive as plain dicts, the output of ``agent.protocol.Event.to_dict()``
(``seq``, ``type``, ``t``, ``wall`` plus the type's fields); this package never imports
``agent``. The controller validates events before handing them over.

Guarantees:

* every event is stored once per ``(trial, seq)``: replaying a batch (a reconnect, a
  ``--resume``) stores nothing twice;
* one transaction per batch, so a crash loses at most the batch in flight and never
  leaves half of one;
* trials are unique per (run, device, variant, task): ``create_trial`` returns the
  existing one on a resume.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from db.bulk import bulk_insert_power_samples
from db.derive import apply_event
from db.errors import DatabaseError, ReadOnlyError, mapped_errors
from db.schema import (
    Artifact,
    Device,
    EventRecord,
    Message,
    PowerSample,
    Query,
    Run,
    RunStatus,
    Score,
    Trial,
    TrialStatus,
    Window,
    utc_now,
)
from db.urls import display_url

#: power samples per transaction in :meth:`Writer.ingest_power_samples`
POWER_BATCH_ROWS = 100_000
#: manifest keys read by :meth:`Writer.register_artifact`, first match wins
_MANIFEST_KEYS = {
    "model": ("model", "model_name", "model_id"),
    "method": ("method",),
    "params": ("params", "method_params"),
    "compression_ratio": ("compression_ratio", "ratio"),
    "compression_ratio_source": ("compression_ratio_source",),
    "embedding_params": ("embedding_params", "original_params", "dense_params"),
    "compressed_params": ("compressed_params", "core_params"),
    "total_params": ("total_params",),
    "size_bytes": ("size_bytes", "bytes"),
    "reconstruction_error": ("reconstruction_error", "rel_error", "relative_error"),
}
_CORE_KEYS = ("seq", "type", "t", "wall")


@dataclass(frozen=True)
class TrialState:
    """What a resume needs to know about a trial."""

    status: str
    job_id: str | None
    last_seq: int


class Writer:
    """The write side of the results database of one URL.

    :class:`db.store.Store` (opened with :func:`db.store.open_store`) adds the read side.
    """

    def __init__(self, engine: Engine, *, url: str, read_only: bool = False) -> None:
        self.engine = engine
        self.url = url
        self.read_only = read_only
        #: the database as messages name it (password hidden)
        self.where = display_url(url)

    def close(self) -> None:
        """Release every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def session(self) -> Session:
        """A new ORM session (use as a context manager)."""
        return Session(self.engine, expire_on_commit=False)

    def _write(self) -> Session:
        if self.read_only:
            raise ReadOnlyError("this results store was opened read-only")
        return self.session()

    # ------------------------------------------------------------------ devices, artifacts

    def upsert_device(
        self,
        name: str,
        host: str | None = None,
        board: str | None = None,
        transport: str | None = None,
        meter_kind: str | None = None,
        *,
        meter_description: str | None = None,
        tags: Sequence[str] | None = None,
    ) -> int:
        """Create or update the device ``name`` (its inventory name); returns its id.

        Fields passed as None keep their stored value.
        """
        with self._write() as s, mapped_errors(self.where):
            device = s.scalar(select(Device).where(Device.name == name))
            if device is None:
                device = Device(name=name)
                s.add(device)
            for attr, value in (
                ("host", host),
                ("board", board),
                ("transport", transport),
                ("meter_kind", meter_kind),
                ("meter_description", meter_description),
                ("tags", None if tags is None else {"tags": list(tags)}),
            ):
                if value is not None:
                    setattr(device, attr, value)
            s.commit()
            return device.id

    def register_artifact(self, manifest: dict[str, Any], sha256: str | None = None) -> int:
        """Store a model variant from its manifest; returns its id (the same on a repeat).

        Reads ``model``, ``method`` (default ``dense``), ``params``, ``compression_ratio``
        (dense: 1.0), ``compression_ratio_source``, ``source_format.name``, ``embedding_params``, ``compressed_params``, ``total_params``,
        ``size_bytes`` and ``reconstruction_error``; the whole manifest is kept as well.
        """
        fields = {column: _first(manifest, keys) for column, keys in _MANIFEST_KEYS.items()}
        if not fields["model"]:
            raise DatabaseError(
                "artifact manifest has no 'model' field",
                hint="the manifest must name the model it was made from",
            )
        source = manifest.get("source_format")
        fields["source_format"] = (
            str(source["name"])[:32] if isinstance(source, dict) and source.get("name") else None
        )
        method = fields["method"] = fields["method"] or "dense"
        if method == "dense" and fields["compression_ratio"] is None:
            fields["compression_ratio"] = 1.0
        key = (
            sha256
            or hashlib.sha256(
                json.dumps(manifest, sort_keys=True, default=str).encode()
            ).hexdigest()
        )
        with self._write() as s, mapped_errors(self.where):
            artifact = s.scalar(select(Artifact).where(Artifact.key == key))
            if artifact is None:
                artifact = Artifact(key=key, sha256=sha256, manifest=manifest, **fields)
                s.add(artifact)
                s.commit()
            return artifact.id

    # ------------------------------------------------------------------ runs, trials

    def create_run(
        self,
        run_id: str,
        config: dict[str, Any],
        inventory_name: str | None,
        *,
        model: str | None = None,
        tool_version: str | None = None,
        note: str | None = None,
    ) -> str:
        """Start run ``run_id``; on a resume (the run exists) mark it running again."""
        with self._write() as s, mapped_errors(self.where):
            run = s.get(Run, run_id)
            if run is None:
                s.add(
                    Run(
                        id=run_id,
                        config=config,
                        inventory_name=inventory_name,
                        model=model,
                        tool_version=tool_version,
                        note=note,
                        status=RunStatus.running,
                    )
                )
            else:
                run.status, run.finished_at = RunStatus.running, None
            s.commit()
        return run_id

    def finish_run(self, run_id: str, status: RunStatus | str) -> None:
        """Set a run's final status and finish time."""
        status = _coerce(RunStatus, status)
        with self._write() as s, mapped_errors(self.where):
            run = self._get(s, Run, run_id, "run")
            run.status, run.finished_at = status, utc_now()
            s.commit()

    def create_trial(
        self,
        run_id: str,
        device: str | int,
        variant: str,
        task: str,
        artifact_id: int | None,
        params: dict[str, Any] | None = None,
    ) -> int:
        """The trial (run, device, variant, task), created pending unless it exists.

        ``device`` is a device name (see :meth:`upsert_device`) or id.
        """
        with self._write() as s, mapped_errors(self.where):
            self._get(s, Run, run_id, "run")
            device_id = self._device_id(s, device)
            where = (
                Trial.run_id == run_id,
                Trial.device_id == device_id,
                Trial.variant == variant,
                Trial.task == task,
            )
            trial_id = s.scalar(select(Trial.id).where(*where))
            if trial_id is None:
                trial = Trial(
                    run_id=run_id,
                    device_id=device_id,
                    variant=variant,
                    task=task,
                    artifact_id=artifact_id,
                    params=params,
                    status=TrialStatus.pending,
                )
                s.add(trial)
                s.commit()
                trial_id = trial.id
            return trial_id

    def set_trial_status(
        self, trial_id: int, status: TrialStatus | str, error: str | None = None
    ) -> None:
        """Set a trial's status (and error text, when given)."""
        status = _coerce(TrialStatus, status)
        with self._write() as s, mapped_errors(self.where):
            trial = self._get(s, Trial, trial_id, "trial")
            trial.status = status
            if error is not None:
                trial.error = error
            if status not in (TrialStatus.pending, TrialStatus.running):
                trial.finished_at = trial.finished_at or utc_now()
            s.commit()

    def run_exists(self, run_id: str) -> bool:
        """Whether run ``run_id`` is in the database (for ``--resume``)."""
        with self.session() as s, mapped_errors(self.where):
            return s.get(Run, run_id) is not None

    def run_config(self, run_id: str) -> dict[str, Any] | None:
        """The experiment a run was started with (None for an unknown run)."""
        with self.session() as s, mapped_errors(self.where):
            run = s.get(Run, run_id)
            return None if run is None else dict(run.config or {})

    def trial_state(self, trial_id: int) -> TrialState:
        """Status, job id and last stored seq of a trial: where a resume continues."""
        with self.session() as s, mapped_errors(self.where):
            trial = self._get(s, Trial, trial_id, "trial")
            status, job_id = TrialStatus(trial.status).value, trial.job_id
        return TrialState(status=status, job_id=job_id, last_seq=self.last_seq(trial_id))

    def start_attempt(self, trial_id: int, job_id: str) -> None:
        """Record that job ``job_id`` (re)started the trial: status running."""
        with self._write() as s, mapped_errors(self.where):
            trial = self._get(s, Trial, trial_id, "trial")
            trial.job_id, trial.status, trial.finished_at = job_id, TrialStatus.running, None
            trial.started_at = trial.started_at or utc_now()
            s.commit()

    def last_seq(self, trial_id: int) -> int:
        """The highest event seq stored for the trial (0 when none): resume after it."""
        with self.session() as s, mapped_errors(self.where):
            return (
                s.scalar(select(func.max(EventRecord.seq)).where(EventRecord.trial_id == trial_id))
                or 0
            )

    # ------------------------------------------------------------------ events

    def ingest_events(self, trial_id: int, events: Sequence[dict[str, Any]]) -> int:
        """Store a batch of events in one transaction; returns how many were new.

        Events already stored for the trial (same seq) are skipped. Derived rows:
        ``query`` -> queries, ``window`` -> windows (the idle window sets the trial's
        idle power), ``score`` -> scores, ``warning``/``error`` -> messages, ``hello`` ->
        meter and version facts on the trial, ``done`` -> the trial's final status.
        """
        for i, ev in enumerate(events):
            missing = [k for k in _CORE_KEYS if k not in ev]
            if missing:
                raise DatabaseError(
                    f"event {i} of the batch for trial {trial_id} lacks {', '.join(missing)}",
                    hint="pass Event.to_dict() output",
                )
        if not events:
            return 0
        with self._write() as s, mapped_errors(self.where):
            trial = self._get(s, Trial, trial_id, "trial")
            seqs = [ev["seq"] for ev in events]
            stored = set(
                s.scalars(
                    select(EventRecord.seq).where(
                        EventRecord.trial_id == trial_id,
                        EventRecord.seq.between(min(seqs), max(seqs)),
                    )
                )
            )
            fresh: list[dict[str, Any]] = []
            for ev in sorted(events, key=lambda e: e["seq"]):
                if ev["seq"] not in stored:
                    stored.add(ev["seq"])
                    fresh.append(ev)
            if not fresh:
                return 0
            rows: dict[type, list[dict[str, Any]]] = {
                EventRecord: [],
                Query: [],
                Window: [],
                Score: [],
                Message: [],
            }
            for ev in fresh:
                data = {k: v for k, v in ev.items() if k not in _CORE_KEYS}
                rows[EventRecord].append(
                    {
                        "trial_id": trial_id,
                        "seq": ev["seq"],
                        "type": ev["type"],
                        "t": ev["t"],
                        "wall": ev["wall"],
                        "data": data,
                    }
                )
                apply_event(trial, ev, rows)
            for model, batch in rows.items():
                if batch:
                    s.execute(insert(model), batch)
            s.commit()
            return len(fresh)

    # ------------------------------------------------------------------ power samples

    def ingest_power_samples(
        self,
        trial_id: int,
        rows: Iterable[tuple[float, float | None, float | None, float | None, bool]],
    ) -> int:
        """Bulk-store raw meter samples ``(t, watts, volts, amps, fresh)``; returns the count.

        Rows at or before the trial's last stored sample time are skipped, so sending a
        samples file again after a resume stores each sample once (rows must come in
        time order). Committed every :data:`POWER_BATCH_ROWS` rows.
        """
        with self._write() as s, mapped_errors(self.where):
            self._get(s, Trial, trial_id, "trial")
            last_t = s.scalar(
                select(func.max(PowerSample.t)).where(PowerSample.trial_id == trial_id)
            )
        iterator: Iterator = iter(rows)
        if last_t is not None:
            iterator = (r for r in iterator if r[0] > last_t)
        total = 0
        while chunk := list(islice(iterator, POWER_BATCH_ROWS)):
            with self.engine.begin() as conn, mapped_errors(self.where):
                bulk_insert_power_samples(conn, trial_id, chunk)
            total += len(chunk)
        return total

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _get(s: Session, model: type, key: Any, what: str) -> Any:
        obj = s.get(model, key)
        if obj is None:
            raise DatabaseError(
                f"no {what} '{key}' in the results database", hint=f"create the {what} first"
            )
        return obj

    @staticmethod
    def _device_id(s: Session, device: str | int) -> int:
        column = Device.id if isinstance(device, int) else Device.name
        device_id = s.scalar(select(Device.id).where(column == device))
        if device_id is None:
            raise DatabaseError(
                f"no device '{device}' in the results database",
                hint="call upsert_device() before create_trial()",
            )
        return device_id


def _first(mapping: dict[str, Any], keys: tuple[str, ...]) -> Any:
    return next((mapping[k] for k in keys if mapping.get(k) is not None), None)


def _coerce(enum_cls: type, value: Any) -> Any:
    try:
        return enum_cls(value)
    except ValueError as exc:
        valid = ", ".join(m.value for m in enum_cls)
        raise DatabaseError(f"'{value}' is not a {enum_cls.__name__} (valid: {valid})") from exc
