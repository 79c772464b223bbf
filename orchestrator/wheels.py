"""Which packages a device needs, which index each comes from, and the pip commands.

PyPI's Linux torch wheels, aarch64 included, require the CUDA runtime (``nvidia-*``,
``cuda-toolkit``, ``triton``): gigabytes a Raspberry Pi can neither use nor hold. So torch
always takes a pip call of its own whose ``--index-url`` is the device's torch index, and
pip never sees PyPI's build of it. How the indexes rank:

- **torch** comes from ``torch_index`` (the device's inventory entry, else ``defaults``),
  else from PyTorch's CPU-only index (:data:`TORCH_CPU_INDEX`) for aarch64 and x86_64
  devices. ``bootstrap --index-url`` never applies to torch.
- **every other package** comes from ``bootstrap --index-url`` when given, else from the
  index pip is configured with on the device (PyPI unless its pip.conf says otherwise).
- **with a wheelhouse** everything, torch included, comes from that folder (``--no-index``).

The torch version is the ``device`` extra's pin unless ``torch_version`` overrides it.
Failures of pip become :class:`PackageInstallError`, naming the package, the index and
what to do (:func:`explain_pip_failure`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.tags import Tag
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from tasks.errors import ConfigError, TslmError


class PackageInstallError(TslmError):
    """pip could not fetch or install a device package (which one, from where, what to do)."""


#: PyTorch's CPU-only wheel index: torch built without CUDA, plus torch's own dependencies
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
#: CPU-index wheels of the device torch pin, by file name -> sha256, as published lists of
#: download.pytorch.org/whl/cpu/torch/ record them: the pin in pyproject's ``device`` extra
#: must be one of these (a test checks it), so a bump means checking the index again
CHECKED_CPU_WHEELS: dict[str, str] = {
    "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_aarch64.whl": (
        "84453b69508ec79902f899c5ed9495acb9e2bbe9fda5f1d5d6f19e3c3842e1a7"
    ),
    "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl": (
        "6746dbcbeb526eb61330b76b41ff1b4eb848951103a892eeb080dfa2b264667b"
    ),
}
#: device CPU (``platform.machine()``) -> torch index used when the inventory names none
DEFAULT_TORCH_INDEXES: dict[str, str] = {"aarch64": TORCH_CPU_INDEX, "x86_64": TORCH_CPU_INDEX}
_MACHINE_ALIASES = {"arm64": "aarch64", "amd64": "x86_64"}
#: ``wheelhouse --platform`` name -> pip ``--platform`` tags (glibc-based Linux)
WHEEL_PLATFORMS: dict[str, tuple[str, ...]] = {
    "aarch64": ("manylinux2014_aarch64", "manylinux_2_28_aarch64"),
    "x86_64": ("manylinux2014_x86_64", "manylinux_2_28_x86_64"),
}
#: distributions that only a CUDA build of torch needs; none belongs on a device
CUDA_ONLY = re.compile(r"nvidia-.+|cuda-.+|triton|pytorch-triton")
#: options of every pip command run here: no prompts, no self-update notice
PIP_OPTIONS: tuple[str, ...] = ("--disable-pip-version-check", "--no-input")
#: how the other packages' index is named in messages when pip's own configuration picks it
CONFIGURED_INDEX = "pip's configured index (PyPI unless pip.conf names another)"


@dataclass(frozen=True)
class PipCall:
    """One pip command and what it is for, so that a failure can be explained."""

    argv: tuple[str, ...]
    #: the requirements it installs or downloads
    requirements: tuple[str, ...]
    #: where they come from: an index URL, a wheelhouse folder or CONFIGURED_INDEX
    source: str
    #: whether ``source`` is a folder of wheels rather than an index
    offline: bool = False

    @property
    def is_torch(self) -> bool:
        """Whether this is the call that fetches torch from the torch index."""
        return not self.offline and [_name(r) for r in self.requirements] == ["torch"]


# --------------------------------------------------------------------------- requirements


def device_requirements() -> list[str]:
    """The ``device`` extra of tslm-fleet (what a board needs to run the agent)."""
    import importlib.metadata

    try:
        requires = importlib.metadata.requires("tslm-fleet") or []
    except importlib.metadata.PackageNotFoundError as exc:
        raise ConfigError(
            "tslm-fleet is not installed, so its device requirements are unknown",
            hint="pip install -e . in the checkout",
        ) from exc
    found = []
    for line in requires:
        spec, _, marker = line.partition(";")
        if marker.replace("'", '"').replace(" ", "") == 'extra=="device"':
            found.append(spec.strip())
    return found


def _name(requirement: str) -> str:
    try:
        return canonicalize_name(Requirement(requirement).name)
    except InvalidRequirement as exc:
        raise ConfigError(f"invalid requirement {requirement!r}: {exc}") from None


def split_torch(
    requirements: Sequence[str], torch_version: str | None = None
) -> tuple[str, list[str]]:
    """``(torch requirement, the others)``; ``torch_version`` replaces the torch pin."""
    torch = [r for r in requirements if _name(r) == "torch"]
    if not torch:
        raise ConfigError(
            f"no torch among the device requirements ({', '.join(requirements) or 'none'})"
        )
    pin = f"torch=={torch_version}" if torch_version else torch[0]
    return pin, [r for r in requirements if _name(r) != "torch"]


def machine_name(machine: str) -> str:
    """``platform.machine()`` spelled as the wheel platforms spell it (arm64 -> aarch64)."""
    lowered = machine.strip().lower()
    return _MACHINE_ALIASES.get(lowered, lowered)


def default_torch_index(machine: str, device: str) -> str:
    """The torch index for a device whose inventory names none (by its CPU)."""
    index = DEFAULT_TORCH_INDEXES.get(machine_name(machine))
    if index is None:
        raise PackageInstallError(
            f"{device}: no torch index is known for a {machine} device (known: "
            f"{', '.join(DEFAULT_TORCH_INDEXES)})",
            hint="PyTorch publishes no wheels for 32-bit ARM: install the 64-bit Raspberry Pi "
            "OS, or set `torch_index` for this device to an index that serves its CPU",
        )
    return index


# --------------------------------------------------------------------------- device installs


def _install(python: str, *options: str) -> list[str]:
    return [python, "-m", "pip", "install", *PIP_OPTIONS, "--quiet", *options]


def install_calls(
    python: str,
    requirements: Sequence[str],
    *,
    torch_index: str,
    torch_version: str | None = None,
    index_url: str | None = None,
) -> list[PipCall]:
    """The two pip calls of an online install: torch from ``torch_index``, then the rest.

    The second call names torch's pin again, so pip keeps the torch the first call
    installed (and stops with a conflict rather than replace it from the other index).
    """
    torch, others = split_torch(requirements, torch_version)
    first = _install(python, "--only-binary=:all:", "--index-url", torch_index, torch)
    index = ["--index-url", index_url] if index_url else []
    second = _install(python, *index, torch, *others)
    return [
        PipCall(tuple(first), (torch,), torch_index),
        PipCall(tuple(second), tuple(others), index_url or CONFIGURED_INDEX),
    ]


def offline_install_call(
    python: str, requirements: Sequence[str], wheelhouse: str, *, torch_version: str | None = None
) -> PipCall:
    """One pip call that installs everything from a wheelhouse folder on the device."""
    torch, others = split_torch(requirements, torch_version)
    argv = _install(python, "--no-index", "--find-links", wheelhouse, torch, *others)
    return PipCall(tuple(argv), (torch, *others), wheelhouse, offline=True)


# --------------------------------------------------------------------------- wheelhouse


def _download(python: str, platform: str, python_version: str, out: Path) -> list[str]:
    tags = WHEEL_PLATFORMS.get(platform)
    if tags is None:
        raise ConfigError(
            f"--platform {platform!r}: unknown (known: {', '.join(WHEEL_PLATFORMS)})",
            hint="aarch64 for a Raspberry Pi 4 or 5 with the 64-bit OS",
        )
    argv = [python, "-m", "pip", "download", *PIP_OPTIONS, "--only-binary=:all:"]
    for tag in tags:
        argv += ["--platform", tag]
    return [*argv, "--python-version", python_version, "--dest", str(out)]


def download_torch_call(
    python: str,
    platform: str,
    out: Path,
    *,
    torch: str,
    torch_index: str,
    python_version: str = "3.11",
) -> PipCall:
    """``pip download`` of torch (and its dependencies) from the torch index only."""
    argv = [*_download(python, platform, python_version, out), "--index-url", torch_index, torch]
    return PipCall(tuple(argv), (torch,), torch_index)


def download_others_call(
    python: str,
    platform: str,
    out: Path,
    *,
    torch_wheel: Path,
    others: Sequence[str],
    index_url: str | None = None,
    python_version: str = "3.11",
) -> PipCall:
    """``pip download`` of the other packages, with torch given as the wheel already fetched.

    A wheel file given as a requirement is the only torch candidate pip considers, so a
    package that depends on torch can never pull another build of it from this index.
    """
    index = ["--index-url", index_url] if index_url else []
    argv = [*_download(python, platform, python_version, out), *index, str(torch_wheel), *others]
    return PipCall(tuple(argv), tuple(others), index_url or CONFIGURED_INDEX)


@dataclass(frozen=True)
class WheelFile:
    """One wheel of a wheelhouse, with its parsed name, version and tags."""

    path: Path
    name: str
    version: str
    tags: frozenset[Tag]

    def fits(self, machine: str, python_version: str) -> bool:
        """Whether a device with this CPU and CPython version can install it."""
        cpython = "cp" + python_version.replace(".", "")
        arch = "_" + machine_name(machine)
        return any(
            (tag.platform == "any" or tag.platform.endswith(arch))
            and (tag.interpreter in (cpython, "py3") or tag.abi == "abi3")
            for tag in self.tags
        )


def list_wheels(folder: Path) -> list[WheelFile]:
    """Every wheel in ``folder`` (files that are not valid wheel names are skipped)."""
    found = []
    for path in sorted(Path(folder).glob("*.whl")):
        try:
            name, version, _build, tags = parse_wheel_filename(path.name)
        except InvalidWheelFilename:
            continue
        found.append(WheelFile(path, str(name), str(version), frozenset(tags)))
    return found


def check_wheelhouse(folder: Path) -> list[WheelFile]:
    """The wheelhouse's wheels; raises when it lacks torch or holds CUDA-only packages."""
    wheels = list_wheels(folder)
    cuda = sorted({w.name for w in wheels if CUDA_ONLY.fullmatch(w.name)})
    if cuda:
        raise PackageInstallError(
            f"wheelhouse {folder} holds CUDA packages: {', '.join(cuda)}",
            hint="they come from a CUDA build of torch; delete the folder and build it again "
            "with `tslm-fleet wheelhouse`, which takes torch from the CPU-only index",
        )
    if not any(w.name == "torch" for w in wheels):
        raise PackageInstallError(
            f"wheelhouse {folder} holds no torch wheel",
            hint="build it with `tslm-fleet wheelhouse --platform aarch64 -o DIR`",
        )
    return wheels


def torch_wheel_for(
    wheels: Sequence[WheelFile], machine: str, python_version: str, torch: str, *, where: str
) -> WheelFile:
    """The wheelhouse's torch wheel that ``torch`` (a requirement) selects for a device."""
    specifier = Requirement(torch).specifier
    torches = [w for w in wheels if w.name == "torch"]
    for wheel in torches:
        if wheel.fits(machine, python_version) and specifier.contains(
            wheel.version, prereleases=True
        ):
            return wheel
    held = ", ".join(w.path.name for w in torches) or "none"
    raise PackageInstallError(
        f"{where}: the wheelhouse has no wheel of {torch} for Python {python_version} on "
        f"{machine_name(machine)} (it holds: {held})",
        hint=f"build one with `tslm-fleet wheelhouse --platform {machine_name(machine)} "
        f"--python-version {python_version} -o DIR` (and `--torch-version` when the inventory "
        "sets `torch_version`)",
    )


# --------------------------------------------------------------------------- failures

_UNREACHABLE = re.compile(
    r"Failed to establish a new connection|NewConnectionError|Name or service not known|"
    r"Temporary failure in name resolution|Connection refused|Network is unreachable|"
    r"No route to host|timed out|Could not fetch URL|SSLError|ProxyError|"
    r"HTTP error 40[134]|403 Client Error|401 Client Error"
)
_NO_VERSION = re.compile(
    r"Could not find a version that satisfies the requirement (\S+)(?: \(from versions: ([^)]*)\))?"
)
_NO_DISTRIBUTION = re.compile(r"No matching distribution found for (\S+)")
_CONFLICT = re.compile(r"ResolutionImpossible|conflicting dependencies|Cannot install ")


def explain_pip_failure(
    call: PipCall,
    output: str,
    *,
    where: str,
    machine: str,
    python_version: str,
    wheelhouse: bool = False,
) -> PackageInstallError:
    """Turn pip's output into an error naming the package, the index and what to do.

    ``where`` names the machine pip ran on (a device, or this machine when ``wheelhouse``
    says the call was building one); ``machine`` and ``python_version`` describe the
    platform the packages are for.
    """
    missing = _NO_VERSION.search(output) or _NO_DISTRIBUTION.search(output)
    package = missing.group(1) if missing else ", ".join(call.requirements)
    target = f"Python {python_version} on {machine_name(machine)}"
    if call.offline and missing is not None:
        return PackageInstallError(
            f"{where}: the wheelhouse has no wheel of {package} for {target}",
            hint=f"build the wheelhouse again with `tslm-fleet wheelhouse --platform "
            f"{machine_name(machine)} --python-version {python_version} -o DIR` "
            "(check `torch_version` and the Python version of the device)",
        )
    if _UNREACHABLE.search(output):
        return PackageInstallError(
            f"{where}: pip could not fetch {package}: {call.source} cannot be reached "
            f"({_last_line(output)})",
            hint=_unreachable_hint(call, where, machine, wheelhouse),
        )
    if missing is not None:
        offered = (missing.group(2) if missing.re is _NO_VERSION else None) or "none"
        return PackageInstallError(
            f"{where}: {call.source} has no wheel of {package} for {target} "
            f"(versions offered: {offered})",
            hint=_missing_hint(call, wheelhouse),
        )
    reason = "conflicting requirements" if _CONFLICT.search(output) else "pip failed"
    return PackageInstallError(
        f"{where}: {reason} while installing {', '.join(call.requirements)} from "
        f"{call.source}: {_last_line(output)}",
        hint="pip's full message is above; `torch_version` in the inventory sets the torch "
        "pin the other packages must agree with",
    )


def _unreachable_hint(call: PipCall, where: str, machine: str, wheelhouse: bool) -> str:
    if wheelhouse:
        option = "--torch-index" if call.is_torch else "--index-url"
        return (
            "build the wheelhouse on a machine that can reach it and copy the folder here, "
            f"or give `{option}` a mirror this machine reaches"
        )
    setting = "`torch_index` in the inventory" if call.is_torch else "`--index-url`"
    return (
        f"build a wheelhouse on a machine that can reach it (`tslm-fleet wheelhouse "
        f"--platform {machine_name(machine)} -o wheels/`) and run `tslm-fleet bootstrap "
        f"--devices {where} --wheelhouse wheels/`, or point {setting} at a mirror the "
        "device reaches"
    )


def _missing_hint(call: PipCall, wheelhouse: bool) -> str:
    if call.is_torch:
        version = "`--torch-version`" if wheelhouse else "`torch_version` in the inventory"
        index = "`--torch-index`" if wheelhouse else "`torch_index`"
        return (
            f"set {version} to a version that index serves for this platform and Python, "
            f"or {index} to an index that has one"
        )
    return (
        "the package has no binary wheel for this platform and Python there: use "
        "`--index-url` for an index that has one, or a wheelhouse built where it is available"
    )


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    return lines[-1][-300:] if lines else "no output"
