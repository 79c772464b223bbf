"""Where each device package comes from, the exact pip commands, and pip failures explained."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.inventory import parse_inventory
from orchestrator.wheels import (
    CHECKED_CPU_WHEELS,
    CONFIGURED_INDEX,
    TORCH_CPU_INDEX,
    PackageInstallError,
    check_wheelhouse,
    default_torch_index,
    device_requirements,
    download_others_call,
    download_torch_call,
    explain_pip_failure,
    install_calls,
    offline_install_call,
    split_torch,
)
from tasks.errors import ConfigError, InventoryError
from testbed.package_index import build_wheel

REQS = ["torch==2.13.0", "numpy>=1.26", "pyserial>=3.5"]
QUIET = ["--disable-pip-version-check", "--no-input", "--quiet"]


def test_online_install_is_torch_from_its_index_then_the_rest() -> None:
    torch_call, rest = install_calls("/v/bin/python3", REQS, torch_index="http://t/simple")
    assert list(torch_call.argv) == [
        "/v/bin/python3", "-m", "pip", "install", *QUIET, "--only-binary=:all:",
        "--index-url", "http://t/simple", "torch==2.13.0",
    ]  # fmt: skip
    # the rest names torch's pin again, so pip keeps the torch just installed
    assert list(rest.argv) == [
        "/v/bin/python3", "-m", "pip", "install", *QUIET,
        "torch==2.13.0", "numpy>=1.26", "pyserial>=3.5",
    ]  # fmt: skip
    assert torch_call.source == "http://t/simple" and rest.source == CONFIGURED_INDEX


def test_index_url_applies_to_the_rest_and_never_to_torch() -> None:
    torch_call, rest = install_calls(
        "p", REQS, torch_index="http://t/simple", index_url="http://mirror/simple"
    )
    assert torch_call.argv.count("--index-url") == 1
    assert torch_call.argv[torch_call.argv.index("--index-url") + 1] == "http://t/simple"
    assert rest.argv[rest.argv.index("--index-url") + 1] == "http://mirror/simple"
    assert rest.source == "http://mirror/simple"


def test_torch_version_overrides_the_pin_in_both_calls() -> None:
    torch_call, rest = install_calls("p", REQS, torch_index="http://t", torch_version="2.12.0")
    assert torch_call.argv[-1] == "torch==2.12.0" and "torch==2.12.0" in rest.argv
    assert "torch==2.13.0" not in torch_call.argv + rest.argv
    assert split_torch(["Torch>=2", "numpy"]) == ("Torch>=2", ["numpy"])
    with pytest.raises(ConfigError, match="no torch"):
        split_torch(["numpy"])


def test_offline_install_uses_no_index_at_all() -> None:
    call = offline_install_call("/v/bin/python3", REQS, "/w/wheelhouse")
    assert list(call.argv) == [
        "/v/bin/python3", "-m", "pip", "install", *QUIET, "--no-index",
        "--find-links", "/w/wheelhouse", "torch==2.13.0", "numpy>=1.26", "pyserial>=3.5",
    ]  # fmt: skip
    assert "--index-url" not in call.argv and call.offline


def test_wheelhouse_downloads_torch_from_its_index_and_the_rest_with_torch_as_a_file(
    tmp_path: Path,
) -> None:
    common = [
        "py", "-m", "pip", "download", "--disable-pip-version-check", "--no-input",
        "--only-binary=:all:", "--platform", "manylinux2014_aarch64",
        "--platform", "manylinux_2_28_aarch64", "--python-version", "3.11", "--dest", str(tmp_path),
    ]  # fmt: skip
    torch_call = download_torch_call(
        "py", "aarch64", tmp_path, torch="torch==2.13.0", torch_index=TORCH_CPU_INDEX
    )
    assert list(torch_call.argv) == [*common, "--index-url", TORCH_CPU_INDEX, "torch==2.13.0"]
    wheel = tmp_path / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_aarch64.whl"
    rest = download_others_call("py", "aarch64", tmp_path, torch_wheel=wheel, others=REQS[1:])
    assert list(rest.argv) == [*common, str(wheel), "numpy>=1.26", "pyserial>=3.5"]
    with pytest.raises(ConfigError, match="unknown"):
        download_torch_call("py", "sparc", tmp_path, torch="torch", torch_index="x")


@pytest.mark.parametrize("machine", ["aarch64", "arm64", "x86_64", "AMD64"])
def test_the_default_torch_index_is_the_cpu_index(machine: str) -> None:
    assert default_torch_index(machine, "pi4") == TORCH_CPU_INDEX


def test_a_32_bit_pi_has_no_default_torch_index() -> None:
    with pytest.raises(PackageInstallError, match="pi3: no torch index is known for a armv7l") as e:
        default_torch_index("armv7l", "pi3")
    assert "64-bit Raspberry Pi OS" in (e.value.hint or "")


def test_the_device_torch_pin_is_one_the_cpu_index_serves_for_cp311_aarch64() -> None:
    torch, _ = split_torch(device_requirements())
    version = torch.split("==")[1]
    assert torch == f"torch=={version}"  # an exact pin
    assert f"torch-{version}+cpu-cp311-cp311-manylinux_2_28_aarch64.whl" in CHECKED_CPU_WHEELS


INVENTORY = """\
defaults:
  base_python: /usr/bin/python3
  torch_index: https://mirror.lab/torch-cpu/simple
devices:
  pi4: {host: pi4.local}
  pi5: {host: pi5.local, torch_index: "file:///srv/torch", torch_version: "2.12.0",
        base_python: /usr/bin/python3.11}
  old: {host: old.local, transport: ssh}
"""


def test_inventory_torch_index_version_and_base_python_rank_device_over_defaults() -> None:
    inv = parse_inventory(INVENTORY)
    assert inv["pi4"].torch_index == "https://mirror.lab/torch-cpu/simple"
    assert inv["pi4"].torch_version is None and inv["pi4"].base_python == "/usr/bin/python3"
    assert inv["pi5"].torch_index == "file:///srv/torch"
    assert inv["pi5"].torch_version == "2.12.0"
    assert inv["pi5"].base_python == "/usr/bin/python3.11"
    bare = parse_inventory("devices:\n  pi4: {host: h}\n")["pi4"]
    assert (bare.torch_index, bare.torch_version, bare.base_python) == (None, None, "python3")


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("torch_index: download.pytorch.org/whl/cpu", "inv.yaml:3 devices.pi4.torch_index: "),
        ("torch_version: latest", "inv.yaml:3 devices.pi4.torch_version: torch_version 'latest'"),
        ("base_python: ''", "inv.yaml:3 devices.pi4.base_python: must be a non-empty string"),
        ("torch_indx: x", "unknown field 'torch_indx' (did you mean 'torch_index'?)"),
    ],
)
def test_bad_torch_settings_say_file_line_and_field(entry: str, expected: str) -> None:
    text = f"devices:\n  pi4:\n    {entry}\n    host: h\n"
    with pytest.raises(InventoryError) as err:
        parse_inventory(text, "inv.yaml")
    assert expected in err.value.message


def test_a_wheelhouse_with_cuda_packages_or_without_torch_is_refused(tmp_path: Path) -> None:
    build_wheel(tmp_path, "numpy", "2.3.4", "cp311-cp311-manylinux_2_28_aarch64")
    with pytest.raises(PackageInstallError, match="holds no torch wheel"):
        check_wheelhouse(tmp_path)
    build_wheel(tmp_path, "torch", "2.13.0", "cp311-cp311-manylinux_2_28_aarch64")
    build_wheel(tmp_path, "nvidia-nccl-cu13", "2.29.7", "py3-none-manylinux_2_28_aarch64")
    build_wheel(tmp_path, "triton", "3.7.1", "cp311-cp311-manylinux_2_28_aarch64")
    with pytest.raises(PackageInstallError, match="CUDA packages: nvidia-nccl-cu13, triton"):
        check_wheelhouse(tmp_path)


UNREACHABLE = """\
WARNING: Retrying (Retry(total=0, connect=None, read=None, redirect=None, status=None)) after \
connection broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPConnection object \
at 0x7f>: Failed to establish a new connection: [Errno 111] Connection refused')': /simple/torch/
ERROR: Could not find a version that satisfies the requirement torch==2.13.0 (from versions: none)
ERROR: No matching distribution found for torch==2.13.0
"""
NO_WHEEL = """\
ERROR: Could not find a version that satisfies the requirement torch==2.99.0 (from versions: \
2.12.0+cpu, 2.13.0+cpu)
ERROR: No matching distribution found for torch==2.99.0
"""


def test_an_unreachable_torch_index_is_named_with_what_to_do() -> None:
    torch_call, _ = install_calls("p", REQS, torch_index="https://download.pytorch.org/whl/cpu")
    err = explain_pip_failure(
        torch_call, UNREACHABLE, where="pi4", machine="aarch64", python_version="3.11"
    )
    assert err.message.startswith(
        "pi4: pip could not fetch torch==2.13.0: https://download.pytorch.org/whl/cpu cannot be "
        "reached"
    )
    assert "tslm-fleet wheelhouse --platform aarch64 -o wheels/" in (err.hint or "")
    assert "--devices pi4 --wheelhouse wheels/" in (err.hint or "")
    assert "`torch_index`" in (err.hint or "")


def test_a_torch_version_the_index_lacks_is_named_with_the_versions_it_has() -> None:
    torch_call, _ = install_calls("p", REQS, torch_index="http://t/simple", torch_version="2.99.0")
    err = explain_pip_failure(
        torch_call, NO_WHEEL, where="pi4", machine="aarch64", python_version="3.11"
    )
    assert err.message == (
        "pi4: http://t/simple has no wheel of torch==2.99.0 for Python 3.11 on aarch64 "
        "(versions offered: 2.12.0+cpu, 2.13.0+cpu)"
    )
    assert "`torch_version` in the inventory" in (err.hint or "")


def test_a_missing_package_in_the_rest_or_the_wheelhouse_is_named() -> None:
    _, rest = install_calls("p", REQS, torch_index="http://t", index_url="http://m/simple")
    out = "ERROR: No matching distribution found for pyserial>=3.5\n"
    err = explain_pip_failure(rest, out, where="pi4", machine="aarch64", python_version="3.11")
    assert err.message.startswith("pi4: http://m/simple has no wheel of pyserial>=3.5 for")
    offline = offline_install_call("p", REQS, "/w")
    err = explain_pip_failure(offline, out, where="pi4", machine="aarch64", python_version="3.12")
    assert err.message == (
        "pi4: the wheelhouse has no wheel of pyserial>=3.5 for Python 3.12 on aarch64"
    )
    assert "--platform aarch64 --python-version 3.12" in (err.hint or "")


def test_wheelhouse_failures_point_at_the_wheelhouse_options(tmp_path: Path) -> None:
    call = download_torch_call("py", "aarch64", tmp_path, torch="torch==2.13.0", torch_index="u")
    err = explain_pip_failure(
        call, UNREACHABLE, where="this machine", machine="aarch64", python_version="3.11",
        wheelhouse=True,
    )  # fmt: skip
    assert err.message.startswith("this machine: pip could not fetch torch==2.13.0: u cannot")
    assert "on a machine that can reach it" in (err.hint or "")
    assert "`--torch-index`" in (err.hint or "")
