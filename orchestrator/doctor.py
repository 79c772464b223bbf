"""``tslm-fleet doctor``: is each device ready for a run, and if not, what to do.

Per device, in order: reachable (strict host keys) -> Python version -> the device's
packages import -> agent bundle present and current -> a one-second meter read -> free
disk in the work directory -> temperature and throttling. Every failed check carries a
fix hint. Devices are checked in parallel and one failing device never stops the others:
:func:`run_doctor` returns one :class:`DeviceHealth` per device, like a fleet result.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from orchestrator.deploy import RemoteLayout, agent_argv
from orchestrator.transport.base import COMMAND_NOT_FOUND, Transport, open_transport
from tasks.errors import TslmError
from tasks.numbers import MISSING

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
MIN_PYTHON = (3, 11)
#: import name -> distribution name of what the agent needs on a device
DEVICE_MODULES: dict[str, str] = {
    "torch": "torch",
    "transformers": "transformers",
    "safetensors": "safetensors",
    "numpy": "numpy",
    "serial": "pyserial",
    "usb": "pyusb",
}
MIN_FREE_BYTES = 1 << 30
HOT_C = 80.0
PROBE_TIMEOUT_S = 180.0
METER_READ_S = 1.0

# Runs with the device's Python (standard library only); argv: workdir, module names.
_PROBE = """
import json, os, platform, shutil, sys
workdir, modules = sys.argv[1], sys.argv[2:]
out = {"version": list(sys.version_info[:3]), "machine": platform.machine(), "packages": {}}
for name in modules:
    try:
        mod = __import__(name)
        out["packages"][name] = {"ok": True, "version": str(getattr(mod, "__version__", ""))}
    except BaseException as exc:
        out["packages"][name] = {"ok": False, "error": type(exc).__name__ + ": " + str(exc)}
path = workdir
while path and not os.path.exists(path):
    path = os.path.dirname(path)
out["disk"] = {"path": path, "free_bytes": shutil.disk_usage(path or "/").free}
try:
    with open("/sys/class/thermal/thermal_zone0/temp") as fh:
        out["temp_c"] = int(fh.read().strip()) / 1000.0
except (OSError, ValueError):
    out["temp_c"] = None
print(json.dumps(out))
"""


@dataclass(frozen=True)
class Check:
    """One check of one device."""

    name: str
    status: str
    detail: str
    hint: str | None = None


@dataclass(frozen=True)
class DeviceHealth:
    """Every check of one device."""

    device: str
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.status != FAIL for c in self.checks)

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.status == FAIL)


def run_doctor(
    devices: Sequence[Any],
    *,
    accept_new_hostkeys: bool = False,
    bundle_sha256: str | None = None,
    max_workers: int = 8,
    modules: Mapping[str, str] = DEVICE_MODULES,
    opener: Callable[..., Transport] = open_transport,
) -> list[DeviceHealth]:
    """Check every device in parallel; results in the order of ``devices``.

    ``bundle_sha256``: the agent bundle this controller would deploy (None: any bundle
    found on the device counts). ``modules``: import name -> distribution name of the
    packages that must import on the device.
    """
    if not devices:
        return []
    with ThreadPoolExecutor(
        max_workers=max(1, min(max_workers, len(devices))), thread_name_prefix="doctor"
    ) as pool:
        futures = [
            pool.submit(
                check_device,
                d,
                accept_new_hostkeys=accept_new_hostkeys,
                bundle_sha256=bundle_sha256,
                modules=modules,
                opener=opener,
            )
            for d in devices
        ]
        return [f.result() for f in futures]


def check_device(
    device: Any,
    *,
    accept_new_hostkeys: bool = False,
    bundle_sha256: str | None = None,
    modules: Mapping[str, str] = DEVICE_MODULES,
    opener: Callable[..., Transport] = open_transport,
) -> DeviceHealth:
    """All checks of one device; never raises."""
    checks: list[Check] = []
    try:
        transport = opener(device, accept_new_hostkeys=accept_new_hostkeys)
    except TslmError as exc:
        checks.append(Check("reachable", FAIL, exc.message, exc.hint))
        return DeviceHealth(device.name, tuple(checks))
    except Exception as exc:  # one device's surprise must not stop the others
        checks.append(Check("reachable", FAIL, f"{type(exc).__name__}: {exc}"))
        return DeviceHealth(device.name, tuple(checks))
    checks.append(Check("reachable", OK, device.address))
    try:
        with transport:
            _DeviceChecks(device, transport, bundle_sha256, modules, checks).run()
    except TslmError as exc:
        checks.append(Check("connection", FAIL, exc.message, exc.hint))
    except Exception as exc:
        checks.append(Check("internal", FAIL, f"{type(exc).__name__}: {exc}"))
    return DeviceHealth(device.name, tuple(checks))


class _DeviceChecks:
    """The checks after the connection, sharing what earlier checks learned."""

    def __init__(
        self,
        device: Any,
        transport: Transport,
        bundle_sha256: str | None,
        modules: Mapping[str, str],
        checks: list[Check],
    ) -> None:
        self.device = device
        self.modules = dict(modules)
        self.transport = transport
        self.bundle_sha256 = bundle_sha256
        self.checks = checks
        self.bootstrap_hint = f"tslm-fleet bootstrap --devices {device.name}"
        self.deploy_hint = f"tslm-fleet deploy --devices {device.name}"

    def add(self, name: str, status: str, detail: str, hint: str | None = None) -> None:
        self.checks.append(Check(name, status, detail, hint if status in (FAIL, WARN) else None))

    def run(self) -> None:
        t = self.transport
        workdir = t.workdir()
        python = t.python()
        probe = self._probe(python, workdir)
        if probe is None:
            for name in ("packages", "bundle", "meter"):
                self.add(name, SKIP, "needs the device's Python")
            return
        self._packages(probe)
        info, bundle = self._bundle(python, workdir)
        self._meter(python, workdir, bundle)
        self._disk(probe, info, workdir)
        self._thermal(probe, info)

    def _probe(self, python: str, workdir: str) -> dict[str, Any] | None:
        res = self.transport.run(
            [python, "-c", _PROBE, workdir, *self.modules], check=False, timeout_s=PROBE_TIMEOUT_S
        )
        if res.exit_code in COMMAND_NOT_FOUND:
            self.add(
                "python",
                FAIL,
                f"{python} not found on the device",
                f"create the venv with `{self.bootstrap_hint}`, or set `python:` in the inventory",
            )
            return None
        try:
            probe = json.loads(res.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            tail = (res.stderr or res.stdout).strip().splitlines()
            self.add(
                "python",
                FAIL,
                f"{python} failed: {tail[-1] if tail else res.exit_code}",
                f"repair the device's Python, e.g. `{self.bootstrap_hint}`",
            )
            return None
        version = tuple(probe["version"])
        text = ".".join(map(str, version))
        if version[:2] < MIN_PYTHON:
            self.add(
                "python",
                FAIL,
                f"Python {text} at {python} (need >= {'.'.join(map(str, MIN_PYTHON))})",
                "install Python 3.11 or newer on the device and point `python:` at it",
            )
        else:
            self.add("python", OK, f"Python {text} ({probe.get('machine')})")
        return probe

    def _packages(self, probe: dict[str, Any]) -> None:
        packages = probe.get("packages", {})
        missing = [
            f"{dist} ({packages.get(m, {}).get('error', 'missing')})"
            for m, dist in self.modules.items()
            if not packages.get(m, {}).get("ok")
        ]
        if missing:
            self.add(
                "packages",
                FAIL,
                "cannot import: " + "; ".join(missing),
                f"install the device packages with `{self.bootstrap_hint}`",
            )
        else:
            versions = ", ".join(
                f"{m} {packages[m]['version']}".strip()
                for m in ("torch", "transformers")
                if m in packages
            )
            self.add("packages", OK, versions or f"{len(self.modules)} packages import")

    def _bundle(self, python: str, workdir: str) -> tuple[dict[str, Any] | None, str | None]:
        """(agent info, bundle path relative to the work directory) of the bundle the
        device should use."""
        t = self.transport
        layout = RemoteLayout(workdir)
        if self.bundle_sha256 is not None:
            rel = layout.bundle_path(self.bundle_sha256)
            bundle = layout.absolute(rel)
            if not t.exists(bundle):
                others = [n for n in t.listdir(posixpath.dirname(bundle)) if n.endswith(".pyz")]
                detail = (
                    "not deployed"
                    if not others
                    else f"outdated (device has {', '.join(others[-2:])})"
                )
                self.add("bundle", FAIL, detail, f"push it with `{self.deploy_hint}`")
                return None, None
        else:
            found = sorted(n for n in t.listdir(layout.absolute("bundles")) if n.endswith(".pyz"))
            if not found:
                self.add("bundle", FAIL, "not deployed", f"push it with `{self.deploy_hint}`")
                return None, None
            rel = f"bundles/{found[-1]}"
        res = t.run(agent_argv(python, workdir, rel, "info"), check=False, timeout_s=120)
        try:
            info = json.loads(res.stdout)
        except ValueError:
            tail = (res.stderr or res.stdout).strip().splitlines()
            self.add(
                "bundle",
                FAIL,
                f"{posixpath.basename(rel)} does not run: {tail[-1] if tail else res.exit_code}",
                f"redeploy with `{self.deploy_hint}`; check the packages above",
            )
            return None, None
        self.add("bundle", OK, f"agent {info.get('agent_version')} ({posixpath.basename(rel)})")
        return info, rel

    def _meter(self, python: str, workdir: str, bundle: str | None) -> None:
        meter = self.device.meter
        if meter.kind == "none":
            self.add(
                "meter",
                WARN,
                "no meter configured: energy will not be measured",
                "add `meter: {kind: ...}` to the device in the inventory",
            )
            return
        if bundle is None:
            self.add("meter", SKIP, f"{meter.kind}: needs the agent bundle")
            return
        argv = agent_argv(
            python,
            workdir,
            bundle,
            "meter",
            "read",
            "--kind",
            meter.kind,
            "--seconds",
            f"{METER_READ_S:g}",
            "--json",
        )
        for key, value in meter.options().items():
            argv += ["--option", f"{key}={value}"]
        res = self.transport.run(argv, check=False, timeout_s=60)
        summary = None
        for line in reversed(res.stdout.strip().splitlines()):
            try:
                summary = json.loads(line).get("summary")
            except (ValueError, AttributeError):
                continue
            if summary is not None:
                break
        if res.exit_code == 0 and summary and not summary.get("samples"):
            self.add(
                "meter",
                WARN,
                f"{meter.kind}: no samples in {METER_READ_S:g} s "
                f"({summary.get('description', '')})",
                "energy will not be measured; check the `meter:` entry",
            )
            return
        if res.exit_code != 0 or not summary:
            tail = (res.stderr or res.stdout).strip().splitlines()
            self.add(
                "meter",
                FAIL,
                f"{meter.kind}: {tail[-1] if tail else 'no samples'}",
                "check the meter's cable or Bluetooth binding and the `meter:` entry; "
                f"try `tslm-fleet meter read` on {self.device.name}",
            )
            return
        mean = summary.get("mean_w")
        power = MISSING if mean is None else f"{mean:.2f} W"
        self.add(
            "meter",
            OK,
            f"{meter.kind}: {summary['samples']} samples "
            f"({summary.get('fresh', 0)} fresh), {power}",
        )

    def _disk(self, probe: dict[str, Any], info: dict[str, Any] | None, workdir: str) -> None:
        free = (info or {}).get("workdir_free_bytes") or probe.get("disk", {}).get("free_bytes")
        if free is None:
            self.add("disk", WARN, "free space unknown")
            return
        text = f"{free / (1 << 30):.1f} GiB free in {workdir}"
        if free < MIN_FREE_BYTES:
            self.add(
                "disk",
                FAIL,
                text,
                f"free at least {MIN_FREE_BYTES >> 30} GiB in "
                f"{workdir} (old models and artifacts live under models/ and artifacts/)",
            )
        else:
            self.add("disk", OK, text)

    def _thermal(self, probe: dict[str, Any], info: dict[str, Any] | None) -> None:
        info = info or {}
        temp = info.get("temp_c", probe.get("temp_c"))
        throttled = info.get("throttled")
        flags = info.get("throttled_flags")
        parts = ["temperature unknown" if temp is None else f"{temp:.1f} °C"]
        if flags:
            parts.append(f"throttle flags {flags}")
        detail = ", ".join(parts)
        if throttled:
            self.add(
                "thermal",
                FAIL,
                f"throttled now ({detail})",
                "measurements would be skewed: improve cooling and use the official "
                "power supply, then wait for the board to cool down",
            )
        elif temp is not None and temp >= HOT_C:
            self.add(
                "thermal",
                WARN,
                f"hot ({detail})",
                "let the board cool down or add a heatsink/fan before measuring",
            )
        else:
            self.add("thermal", OK, detail)
