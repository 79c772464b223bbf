"""What the agent can learn about the board it runs on: standard library only.

Every probe returns None when the information is not available (no thermal zone, no
``vcgencmd``, not a Raspberry Pi); none of them raises. ``root`` parameters let tests
point the probes at a fake ``/proc`` and ``/sys`` tree.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import socket
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path("/")
VCGENCMD_TIMEOUT_S = 2.0
#: get_throttled bits 0-3 describe the current state (under-voltage, frequency capped,
#: throttled, soft temperature limit); bits 16-19 only say it happened since boot
CURRENT_THROTTLE_MASK = 0xF


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def board_model(root: Path = ROOT) -> str | None:
    """Board name from the device tree, e.g. 'Raspberry Pi 5 Model B Rev 1.0'."""
    text = _read_text(root / "proc/device-tree/model")
    return (text.strip("\x00\n ") or None) if text else None


def cpu_model(root: Path = ROOT) -> str | None:
    """CPU model from /proc/cpuinfo ('model name', or 'Model'/'Hardware' on ARM)."""
    text = _read_text(root / "proc/cpuinfo") or ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    for key in ("model name", "model", "hardware", "cpu part"):
        if fields.get(key):
            return fields[key]
    return platform.processor() or None


def memory_bytes(root: Path = ROOT) -> tuple[int | None, int | None]:
    """(total, available) RAM in bytes from /proc/meminfo."""
    text = _read_text(root / "proc/meminfo") or ""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key] = int(parts[0]) * 1024
    return values.get("MemTotal"), values.get("MemAvailable")


def os_name(root: Path = ROOT) -> str:
    """PRETTY_NAME of /etc/os-release, else the platform string."""
    text = _read_text(root / "etc/os-release") or ""
    for line in text.splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return platform.platform()


def cpu_temp_c(root: Path = ROOT) -> float | None:
    """CPU temperature in degrees C from the thermal zones (cpu zone preferred)."""
    zones = sorted((root / "sys/class/thermal").glob("thermal_zone*"))
    ranked = sorted(zones, key=lambda z: "cpu" not in (_read_text(z / "type") or "").lower())
    for zone in ranked:
        text = _read_text(zone / "temp")
        if text and text.strip().lstrip("-").isdigit():
            return int(text.strip()) / 1000.0
    return None


def cpu_freq_mhz(root: Path = ROOT) -> float | None:
    """Current frequency of CPU 0 in MHz from cpufreq."""
    text = _read_text(root / "sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")
    if text and text.strip().isdigit():
        return int(text.strip()) / 1000.0
    return None


def throttled_flags() -> str | None:
    """Raw ``vcgencmd get_throttled`` value (e.g. '0x50000'), None without vcgencmd."""
    exe = shutil.which("vcgencmd")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "get_throttled"],
            capture_output=True,
            text=True,
            timeout=VCGENCMD_TIMEOUT_S,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    _, sep, value = out.strip().partition("=")
    value = value.strip()
    if not sep or not value:
        return None
    try:
        int(value, 0)
    except ValueError:
        return None
    return value


def is_throttled(flags: str | None) -> bool | None:
    """True when any current-state throttle bit is set; None when unknown."""
    if flags is None:
        return None
    return bool(int(flags, 0) & CURRENT_THROTTLE_MASK)


@dataclass(frozen=True)
class ThermalState:
    """Temperature, frequency and throttling at one instant (fields None if unknown)."""

    temp_c: float | None
    freq_mhz: float | None
    throttled_flags: str | None

    @property
    def throttled(self) -> bool | None:
        return is_throttled(self.throttled_flags)


def any_throttled(*states: ThermalState | None) -> bool | None:
    """True if any state was throttled, False if all known ones were not, None if unknown."""
    flags = [s.throttled for s in states if s is not None]
    if any(f is True for f in flags):
        return True
    return None if all(f is None for f in flags) else False


def thermal_state(root: Path = ROOT) -> ThermalState:
    """Read temperature, CPU frequency and throttle flags now."""
    return ThermalState(
        temp_c=cpu_temp_c(root), freq_mhz=cpu_freq_mhz(root), throttled_flags=throttled_flags()
    )


def package_version(name: str) -> str | None:
    """Installed version of a distribution without importing it."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def device_info(
    workdir: Path, agent_version: str, bundle_sha256: str | None, root: Path = ROOT
) -> dict[str, Any]:
    """Everything ``python -m agent info`` prints, as a JSON-ready dict."""
    total, available = memory_bytes(root)
    try:
        free_disk = shutil.disk_usage(workdir if workdir.exists() else workdir.parent).free
    except OSError:
        free_disk = None
    state = thermal_state(root)
    return {
        "agent_version": agent_version,
        "bundle_sha256": bundle_sha256,
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "torch": package_version("torch"),
        "transformers": package_version("transformers"),
        "board": board_model(root),
        "machine": platform.machine(),
        "cpu_model": cpu_model(root),
        "cpu_cores": os.cpu_count(),
        "ram_total_bytes": total,
        "ram_available_bytes": available,
        "os": os_name(root),
        "kernel": platform.release(),
        **asdict(state),
        "throttled": state.throttled,
        "workdir": str(workdir),
        "workdir_free_bytes": free_disk,
    }


def bundle_sha256() -> str | None:
    """sha256 of the zipapp this agent runs from; None when it runs from a checkout."""
    from tasks.hashing import sha256_file

    here = Path(__file__).resolve()
    for parent in here.parents:
        if parent.is_file():
            return sha256_file(parent)
    return None
