"""The agent process's resident memory: the peak over one job, standard library only.

Linux keeps the peak resident set of a process (``VmHWM`` in ``/proc/self/status``) and
lets the process reset it to the current resident set by writing ``5`` to
``/proc/self/clear_refs``. A job resets it when it starts and reads it when it ends, so
that the peak of a job that shares its agent process with earlier jobs (a batch) is that
job's own: the model resident then (the base model kept for the batch) plus what the job
adds. Where the reset is not possible, the peak is the process's since it started
(``getrusage``'s ``ru_maxrss``), and :attr:`PeakRss.scope` says ``process``.
"""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass
from pathlib import Path

#: /proc of this process
PROC_SELF = Path("/proc/self")
#: what clear_refs takes to reset the peak resident set (Linux 4.0 and later)
_RESET_PEAK = "5"


@dataclass(frozen=True)
class PeakRss:
    """Peak resident set in bytes; ``scope``: ``job`` (reset at its start) or ``process``."""

    peak_rss_bytes: int | None
    scope: str


def _status_kib(proc: Path, key: str) -> int | None:
    try:
        text = (proc / "status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name == key:
            parts = rest.split()
            if parts and parts[0].isdigit():
                return int(parts[0])
    return None


def rss_bytes(proc: Path = PROC_SELF) -> int | None:
    """The current resident set of this process (``VmRSS``), None where unknown."""
    kib = _status_kib(proc, "VmRSS")
    return None if kib is None else kib * 1024


def reset_peak(proc: Path = PROC_SELF) -> bool:
    """Reset the peak resident set to the current one; whether that worked."""
    try:
        (proc / "clear_refs").write_text(_RESET_PEAK)
    except OSError:
        return False
    return _status_kib(proc, "VmHWM") is not None


def _process_peak() -> int | None:
    try:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (OSError, ValueError):
        return None
    # kilobytes on Linux, bytes on macOS
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def peak_rss(reset_done: bool, proc: Path = PROC_SELF) -> PeakRss:
    """The peak resident set since :func:`reset_peak` (when ``reset_done``), else since
    the process started."""
    if reset_done:
        kib = _status_kib(proc, "VmHWM")
        if kib is not None:
            return PeakRss(kib * 1024, "job")
    return PeakRss(_process_peak(), "process")
