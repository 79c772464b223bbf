"""What each stored event adds to the derived tables and to its trial.

``query`` -> a queries row, ``window`` -> a windows row (the idle window sets the
trial's idle power), ``score`` -> scores, ``warning``/``error`` -> messages (an error
also goes to the trial's error text), ``hello`` -> meter and version facts on the trial
(and the board on the device when unknown) and its provenance, ``phase`` ``settled`` ->
the trial's stability record, ``done`` -> the trial's final status, with what the
measurement found added to its provenance and stability records.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from db.schema import Message, MessageLevel, Query, Score, Trial, TrialStatus, Window

#: trial statuses a ``done`` event can set
_DONE_STATUS = {"ok": TrialStatus.ok, "failed": TrialStatus.failed, "stopped": TrialStatus.stopped}
#: event fields copied into a ``queries`` row
QUERY_COLUMNS = (
    "task",
    "rep",
    "index",
    "t_start",
    "t_end",
    "latency_s",
    "ttft_s",
    "prompt_tokens",
    "output_tokens",
    "tokens_per_s",
    "output_sha256",
    "energy_j",
    "net_energy_j",
    "samples",
    "fresh_samples",
    "under_resolved",
    "throttled",
    "temp_c",
    "decode_tokens",
    "prefill_energy_j",
    "decode_energy_j",
    "prefill_fresh_samples",
    "decode_fresh_samples",
)
_WINDOW_COLUMNS = (
    "kind",
    "task",
    "rep",
    "index",
    "t_start",
    "t_end",
    "duration_s",
    "queries",
    "energy_j",
    "net_energy_j",
    "energy_j_per_query",
    "net_energy_j_per_query",
    "mean_power_w",
    "median_power_w",
    "samples",
    "fresh_samples",
    "under_resolved",
    "throttled",
    "temp_c_before",
    "temp_c_after",
    "freq_mhz_before",
    "freq_mhz_after",
    "throttled_flags_before",
    "throttled_flags_after",
    "prefill_energy_j",
    "decode_energy_j",
    "prefill_tokens",
    "decode_tokens",
    "prefill_fresh_samples",
    "decode_fresh_samples",
    "prefill_under_resolved",
    "decode_under_resolved",
    "energy_j_per_prefill_token",
    "energy_j_per_decode_token",
)


def parse_wall(wall: str | None) -> datetime | None:
    """An event's ``wall`` time (ISO 8601, ``Z`` suffix allowed) as an aware datetime."""
    if not wall:
        return None
    try:
        parsed = datetime.fromisoformat(wall.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def apply_event(trial: Trial, ev: dict[str, Any], rows: dict[type, list[dict[str, Any]]]) -> None:
    """Fill the derived rows and trial fields of one new event."""
    kind, seq = ev["type"], ev["seq"]
    base = {"trial_id": trial.id, "seq": seq}
    if trial.status == TrialStatus.pending:
        trial.status = TrialStatus.running
        trial.started_at = trial.started_at or parse_wall(ev["wall"])
    if kind == "query":
        rows[Query].append({**base, **{c: ev.get(c) for c in QUERY_COLUMNS}})
    elif kind == "window":
        rows[Window].append({**base, **{c: ev.get(c) for c in _WINDOW_COLUMNS}})
        if ev.get("kind") == "idle":
            idle = ev.get("median_power_w")
            trial.idle_power_w = idle if idle is not None else ev.get("mean_power_w")
    elif kind == "score":
        rows[Score].append(
            {**base, "task": ev["task"], "metric": ev["metric"], "value": ev["value"]}
        )
    elif kind in ("warning", "error"):
        rows[Message].append(
            {
                **base,
                "level": MessageLevel(kind),
                "code": ev.get("code") or ev.get("error_type"),
                "message": ev.get("message", ""),
            }
        )
        if kind == "error":
            text = f"{ev.get('error_type', 'error')}: {ev.get('message', '')}"
            trial.error = text if not trial.error else f"{trial.error}\n{text}"
    elif kind == "hello":
        trial.started_at = parse_wall(ev["wall"]) or trial.started_at
        for attr, key in (
            ("job_id", "job_id"),
            ("agent_version", "agent_version"),
            ("python_version", "python"),
            ("torch_version", "torch"),
            ("transformers_version", "transformers"),
            ("threads", "threads"),
            ("meter_kind", "meter_kind"),
            ("meter_description", "meter_description"),
            ("meter_period_s", "meter_period_s"),
        ):
            if key in ev:
                setattr(trial, attr, ev[key])
        device = trial.device
        if ev.get("board") and not device.board:
            device.board = ev["board"]
        if ev.get("meter_kind") and not device.meter_kind:
            device.meter_kind = ev["meter_kind"]
        _merge(trial, "provenance", ev.get("provenance"))
    elif kind == "phase" and ev.get("phase") == "settled":
        record = {k: v for k, v in ev.items() if k not in ("seq", "type", "t", "wall", "phase")}
        _merge(trial, "stability", record)
    elif kind == "done":
        trial.status = _DONE_STATUS.get(ev.get("status", ""), TrialStatus.failed)
        trial.finished_at = parse_wall(ev["wall"])
        trial.duration_s = ev.get("duration_s")
        _merge(trial, "provenance", ev.get("provenance"))
        _merge(trial, "stability", ev.get("stability"))
        for key in ("peak_rss_bytes", "peak_rss_scope", "decode_s_per_token"):
            if ev.get(key) is not None:
                setattr(trial, key, ev[key])


def _merge(trial: Trial, attr: str, record: Any) -> None:
    """Add ``record``'s keys to the trial's JSON record ``attr`` (a new dict, so that the
    ORM sees the change)."""
    if isinstance(record, dict) and record:
        setattr(trial, attr, {**(getattr(trial, attr) or {}), **record})
