"""Where a trial's figures come from: the board, its settings and the meter.

Every trial carries a provenance record, so that an energy figure can be reproduced or
told apart from another: the CPU governor and frequency limits, the kernel, the firmware
(``vcgencmd version`` where present) and the board model; the meter's model, firmware
(where its protocol reports one), nominal sampling rate and measurement boundary, and
the error bound documented for its family (:mod:`agent.meters.bounds`). The ``hello``
event carries what is known before the measurement (:func:`system` and :func:`meter`);
the ``done`` event adds what the measurement found (:func:`measured`): the meter lag and
the fresh samples and achieved sampling rate. Standard library only; every probe gives
None when its source is absent.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

from agent import sysinfo
from agent.meters.bounds import bound_for

_CPUFREQ = "sys/devices/system/cpu/cpu0/cpufreq"


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip() or None
    except OSError:
        return None


def _khz_to_mhz(text: str | None) -> float | None:
    return int(text) / 1000.0 if text and text.isdigit() else None


def firmware_version() -> str | None:
    """``vcgencmd version`` as one line (build date and version), None without vcgencmd."""
    exe = shutil.which("vcgencmd")
    if exe is None:
        return None
    try:
        proc = subprocess.run(
            [exe, "version"],
            capture_output=True,
            text=True,
            timeout=sysinfo.VCGENCMD_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    kept = [line for line in lines if not line.lower().startswith("copyright")]
    return "; ".join(kept)[:200] or None


def system(root: Path = sysinfo.ROOT) -> dict[str, Any]:
    """The board and its settings now: governor, frequency limits, kernel, firmware."""
    cpufreq = root / _CPUFREQ
    return {
        "board": sysinfo.board_model(root),
        "cpu_model": sysinfo.cpu_model(root),
        "kernel": platform.release() or None,
        "os": sysinfo.os_name(root),
        "firmware": firmware_version(),
        "cpu_governor": _read(cpufreq / "scaling_governor"),
        "cpu_freq_min_mhz": _khz_to_mhz(_read(cpufreq / "scaling_min_freq")),
        "cpu_freq_max_mhz": _khz_to_mhz(_read(cpufreq / "scaling_max_freq")),
        "cpu_freq_hw_max_mhz": _khz_to_mhz(_read(cpufreq / "cpuinfo_max_freq")),
    }


def meter(meter: Any, kind: str) -> dict[str, Any]:
    """The meter: model, firmware, nominal rate, measurement boundary and error bound."""
    period = meter.nominal_period_s
    # ``auto`` resolves to a concrete meter, whose kind names the bound
    actual = getattr(meter, "kind", None) or kind
    bound = bound_for(actual)
    return {
        "meter_kind": actual,
        "meter_model": getattr(meter, "model_name", kind),
        "meter_firmware": getattr(meter, "firmware", None),
        "meter_boundary": getattr(meter, "boundary", None),
        "meter_rate_hz": None if not period else round(1.0 / period, 3),
        "meter_error_bound": None if bound is None else bound.to_dict(),
    }


def measured(lag_s: float, lag_ranged: bool, lag_problem: str | None, stats: Any) -> dict[str, Any]:
    """What the measurement found: the lag applied (ranged, or 0 when not ranged) and the
    samples the meter gave."""
    return {
        "meter_lag_s": round(lag_s, 4),
        "meter_lag_ranged": lag_ranged,
        "meter_lag_problem": lag_problem,
        "samples": None if stats is None else stats.total,
        "fresh_samples": None if stats is None else stats.fresh,
        "fresh_rate_hz": None if stats is None else round(stats.fresh_rate_hz, 3),
    }
