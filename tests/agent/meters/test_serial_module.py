"""The serial meters with labgrid's fork of pyserial installed.

labgrid (extra ``labgrid``) depends on ``pyserial-labgrid``, which installs the same
``serial`` module as ``pyserial``; whichever was installed last provides it. The serial
meter drivers must read a meter through either.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

import pytest
import serial

from agent.meters import create_meter
from agent.meters.emulate.traces import constant
from agent.meters.emulate.um import UmEmulator


def _provider() -> str:
    """The distribution whose files include the imported ``serial`` package."""
    module_dir = Path(serial.__file__).resolve().parent
    for name in ("pyserial-labgrid", "pyserial"):
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if dist.version == serial.__version__ and any(
            Path(str(dist.locate_file(f))).resolve().parent == module_dir
            for f in dist.files or ()
            if str(f).startswith("serial/")
        ):
            return name
    return "unknown"


def test_the_serial_module_in_use_is_named() -> None:
    assert _provider() in ("pyserial", "pyserial-labgrid")
    if importlib.util.find_spec("labgrid") is not None:
        # labgrid's fork is installed: it is there, whichever provides the module
        assert importlib.metadata.version("pyserial-labgrid")


@pytest.mark.parametrize("kind", ["um25c", "um34c"])
def test_um_meter_reads_through_the_installed_serial_module(kind: str) -> None:
    with UmEmulator(kind, constant(2.5)) as emu, create_meter(kind, port=emu.port) as meter:
        readings = [meter.read()[0] for _ in range(3)]
    assert all(s.watts == 2.5 and s.volts == 5.1 for s in readings), (
        f"{kind} through serial {serial.__version__} from {_provider()}"
    )
