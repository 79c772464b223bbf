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


#: madvise advice that drops a range's pages from the resident set (Linux)
_MADV_DONTNEED = 4


def _file_mapping_of(start: int, stop: int, proc: Path) -> str | None:
    """The file mapped at ``[start, stop)`` when one file mapping holds the whole range."""
    try:
        lines = (proc / "maps").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split(maxsplit=5)
        low, _, high = fields[0].partition("-")
        if int(low, 16) <= start and stop <= int(high, 16):
            path = fields[5].strip() if len(fields) > 5 else ""
            return path if path.startswith("/") and "r" in fields[1] else None
    return None


def release_file_pages(address: int, nbytes: int, proc: Path = PROC_SELF) -> int:
    """Drop the resident pages of ``[address, address + nbytes)`` when it lies in a file
    mapping (a safetensors file mapped by the loader): they are read back from the file
    if touched again, so nothing is lost. Anonymous memory is never touched (dropping
    it would zero it). Returns the bytes released (0 where nothing could be)."""
    import ctypes
    import mmap

    page = mmap.PAGESIZE
    start = -(-address // page) * page
    stop = (address + nbytes) // page * page
    if stop <= start or _file_mapping_of(start, stop, proc) is None:
        return 0
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        done = libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(stop - start), _MADV_DONTNEED)
    except (OSError, AttributeError):
        return 0
    return stop - start if done == 0 else 0
