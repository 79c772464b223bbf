"""Helpers shared by the benchmarks: machine description, result files, timing and spread.

Importing this module is cheap (no torch): the harness and the report use it too.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.numbers import format_sig

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _ram_gib() -> float | None:
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return round(pages * page_size / 2**30, 1)


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def machine_info() -> dict[str, Any]:
    """What a reader needs to judge the numbers: CPU, cores, RAM, OS, versions, date."""
    return {
        "cpu_model": _cpu_model(),
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "usable_cores": _usable_cores(),
        "ram_gib": _ram_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "date": utc_now(),
    }


def describe_machine(machine: dict[str, Any]) -> str:
    """One line: ``CPU (N cores), R GiB RAM, OS, Python x, torch y``."""
    parts = [
        f"{machine.get('cpu_model', 'unknown CPU')} ({machine.get('usable_cores') or '?'} cores)"
    ]
    if machine.get("ram_gib"):
        parts.append(f"{machine['ram_gib']} GiB RAM")
    if machine.get("os"):
        parts.append(str(machine["os"]))
    parts.append(f"Python {machine.get('python', '?')}")
    if machine.get("torch"):
        parts.append(f"torch {machine['torch']}")
    return ", ".join(parts)


def write_result(
    name: str, data: dict[str, Any], *, quick: bool = False, results_dir: Path = RESULTS_DIR
) -> Path:
    """Write ``results_dir/<name>.json`` with the machine description and the date added.

    Written to a temporary name and renamed, so that a killed benchmark never leaves a
    half-written result for the report to read.
    """
    doc = {"benchmark": name, "quick": quick, "machine": machine_info(), **data}
    results_dir.mkdir(parents=True, exist_ok=True)
    target = results_dir / f"{name}.json"
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, target)
    return target


@dataclass(frozen=True)
class Spread:
    """Median and quartiles of repeated measurements (same unit as the samples)."""

    n: int
    median: float
    q1: float
    q3: float
    min: float
    max: float

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "iqr": self.iqr}


def spread(samples: Sequence[float]) -> Spread:
    """Median, first and third quartile (inclusive method), min and max of ``samples``."""
    values = sorted(float(s) for s in samples)
    if not values:
        raise ValueError("spread() needs at least one sample")
    if len(values) == 1:
        q1 = q3 = values[0]
    else:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return Spread(
        n=len(values), median=statistics.median(values), q1=q1, q3=q3, min=values[0], max=values[-1]
    )


def time_repeated(fn: Callable[[], Any], *, repetitions: int, warmup: int = 1) -> Spread:
    """Wall time of ``fn()`` (``time.perf_counter``) over ``repetitions`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repetitions):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return spread(samples)


def sig(value: float | None, digits: int = 3) -> str:
    """``value`` to ``digits`` significant figures with thousands separated: the one number
    formatter (:func:`tasks.numbers.format_sig`) as the benchmark reports print it."""
    return format_sig(value, digits, grouped=True)


def rss_bytes() -> int | None:
    """Resident set size of this process now (Linux), else None."""
    try:
        with open("/proc/self/statm") as fh:
            resident_pages = int(fh.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def load_average_note(start: tuple[float, float, float]) -> str:
    """The machine's 1-minute load average at the start and end of a measurement (other
    work on a shared machine inflates CPU and wall times)."""
    end = os.getloadavg()
    return f"1-minute load average {start[0]:.1f} at the start, {end[0]:.1f} at the end"
