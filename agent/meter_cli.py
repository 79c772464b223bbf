"""``meter read`` on a device: check a power meter before a run (plain text or JSON lines).

Called as ``python -m agent meter read --kind um25c --port /dev/rfcomm0``. The controller's
``tslm-fleet meter read`` uses the functions below and adds rich output.

JSON output: one object per sample, ``{"t", "volts", "amps", "watts", "fresh"}`` with ``t``
in seconds since the start of the read, then ``{"summary": {...}}``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.meters.base import Sample
from tasks.errors import ConfigError, TslmError
from tasks.numbers import MISSING

EXIT_OK = 0
EXIT_ERROR = 2


@dataclass(frozen=True)
class ReadSummary:
    """What ``meter read`` reports at the end."""

    kind: str
    description: str
    seconds: float
    samples: int
    fresh: int
    mean_w: float | None
    rate_hz: float
    fresh_rate_hz: float
    gaps: int

    def to_json(self) -> dict[str, Any]:
        return {
            "summary": {
                "kind": self.kind,
                "description": self.description,
                "seconds": round(self.seconds, 3),
                "samples": self.samples,
                "fresh": self.fresh,
                "repeated": self.samples - self.fresh,
                "mean_w": self.mean_w,
                "rate_hz": round(self.rate_hz, 3),
                "fresh_rate_hz": round(self.fresh_rate_hz, 3),
                "gaps": self.gaps,
            }
        }


def meter_options(port: str | None, hwmon_name: str | None, pairs: list[str]) -> dict[str, str]:
    """Options for ``create_meter`` from the CLI flags (``--option key=value`` pairs)."""
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--option {pair!r}: expected key=value, e.g. timeout_s=5")
        options[key.strip()] = value.strip()
    if port is not None:
        options["port"] = port
    if hwmon_name is not None:
        options["hwmon_name"] = hwmon_name
    return options


def sample_json(sample: Sample, t_origin: float) -> dict[str, Any]:
    """One sample as the JSON line of ``meter read --json``."""

    def num(x: float | None) -> float | None:
        return None if x is None or not math.isfinite(x) else round(x, 6)

    return {
        "t": round(sample.t - t_origin, 4),
        "volts": num(sample.volts),
        "amps": num(sample.amps),
        "watts": num(sample.watts),
        "fresh": sample.fresh,
    }


def stream_samples(
    kind: str,
    options: dict[str, Any],
    seconds: float,
    on_sample: Callable[[Sample, float], None],
    on_warning: Callable[[str], None],
) -> ReadSummary:
    """Open the meter, sample for ``seconds`` and hand each sample to ``on_sample``.

    ``on_sample(sample, t_origin)`` runs in the calling thread. Raises the meter's
    error when it cannot be opened at all.
    """
    from agent.meters import create_meter
    from agent.sampler import Sampler

    if not seconds > 0:
        raise ConfigError(f"--seconds must be positive, not {seconds}")
    meter = create_meter(kind, **options)
    sampler = Sampler(meter, on_event=lambda _level, message: on_warning(message))
    fresh_watts: list[float] = []
    cursor = float("-inf")

    def emit(batch: list[Sample]) -> None:
        nonlocal cursor
        for sample in batch:
            if sample.t <= cursor:
                continue
            cursor = sample.t
            if sample.fresh and sample.watts is not None:
                fresh_watts.append(sample.watts)
            on_sample(sample, t_origin)

    with sampler:
        t_origin = time.monotonic()
        end = t_origin + seconds
        while True:
            now = time.monotonic()
            emit(sampler.samples(cursor))
            if now >= end:
                break
            time.sleep(min(0.05, end - now))
    emit(sampler.samples(cursor))  # what arrived while the sampler stopped
    stats = sampler.stats()
    mean = sum(fresh_watts) / len(fresh_watts) if fresh_watts else None
    return ReadSummary(
        kind=kind,
        description=meter.description,
        seconds=stats.elapsed_s,
        samples=stats.total,
        fresh=stats.fresh,
        mean_w=mean,
        rate_hz=stats.achieved_rate_hz,
        fresh_rate_hz=stats.fresh_rate_hz,
        gaps=stats.gaps,
    )


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``meter``."""
    parser = argparse.ArgumentParser(prog="meter", description="Check a power meter.")
    sub = parser.add_subparsers(dest="command", required=True)
    read = sub.add_parser("read", help="print samples for a few seconds, then a summary")
    read.add_argument("--kind", required=True, help="meter kind as in inventory.yaml")
    read.add_argument("--port", help="serial port of a UM meter, e.g. /dev/rfcomm0")
    read.add_argument("--hwmon-name", help="hwmon device name, e.g. ina226")
    read.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other driver option (repeatable)",
    )
    read.add_argument("--seconds", type=float, default=5.0, help="how long to read (5)")
    read.add_argument("--json", action="store_true", help="JSON lines instead of text")
    sub.add_parser("kinds", help="list the meter kinds")
    return parser


def _format_sample(sample: Sample, t_origin: float) -> str:
    def fmt(x: float | None, unit: str, digits: int) -> str:
        return f"{MISSING:>9} {unit}" if x is None else f"{x:9.{digits}f} {unit}"

    tag = "fresh" if sample.fresh else "repeat"
    return (
        f"{sample.t - t_origin:8.3f} s {fmt(sample.volts, 'V', 4)} {fmt(sample.amps, 'A', 4)} "
        f"{fmt(sample.watts, 'W', 4)}  {tag}"
    )


def format_summary(summary: ReadSummary) -> str:
    """The plain-text summary block."""
    mean = MISSING if summary.mean_w is None else f"{summary.mean_w:.4f} W"
    return (
        f"meter: {summary.description}\n"
        f"samples: {summary.samples} in {summary.seconds:.2f} s "
        f"({summary.rate_hz:.1f}/s), fresh {summary.fresh} ({summary.fresh_rate_hz:.1f}/s), "
        f"repeated {summary.samples - summary.fresh}, gaps {summary.gaps}\n"
        f"mean power: {mean}"
    )


def main(argv: list[str]) -> int:
    """Run ``meter ...``; returns the exit status (errors go to stderr, no traceback)."""
    args = build_parser().parse_args(argv)
    out = sys.stdout
    try:
        if args.command == "kinds":
            from agent.meters import METERS

            for kind, target in METERS.items():
                print(f"{kind:10} {target}", file=out)
            return EXIT_OK

        def on_sample(sample: Sample, t_origin: float) -> None:
            line = (
                json.dumps(sample_json(sample, t_origin))
                if args.json
                else _format_sample(sample, t_origin)
            )
            print(line, file=out, flush=True)

        def on_warning(message: str) -> None:
            print(f"warning: {message}", file=sys.stderr, flush=True)

        options = meter_options(args.port, args.hwmon_name, args.option)
        summary = stream_samples(args.kind, options, args.seconds, on_sample, on_warning)
        if args.json:
            print(json.dumps(summary.to_json()), file=out, flush=True)
        else:
            print(format_summary(summary), file=out, flush=True)
        return EXIT_OK
    except TslmError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
