"""A fake ``vcgencmd`` for PATH, printing Raspberry Pi 5 output in the real format.

``install(bin_dir, state_file)`` writes an executable ``vcgencmd`` (a Python script)
into ``bin_dir``. It answers ``pmic_read_adc``, ``get_throttled`` and ``measure_temp``
from a JSON state file (``write_state``), named by the environment variable
``TSLM_FAKE_VCGENCMD_STATE`` or, by default, ``vcgencmd.json`` next to the script, so
tests can flip throttling or the rail currents between calls.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

#: rail -> (current channel, amps, voltage channel, volts); channels as a Pi 5 numbers them
PI5_RAILS: dict[str, tuple[int, float, int, float]] = {
    "3V7_WL_SW": (0, 0.00390372, 8, 3.70606200),
    "3V3_SYS": (1, 0.06246000, 9, 3.31238300),
    "1V8_SYS": (2, 0.17765800, 10, 1.80146500),
    "DDR_VDD2": (3, 0.02049800, 11, 1.10378000),
    "DDR_VDDQ": (4, 0.00000000, 12, 0.60097660),
    "1V1_SYS": (5, 0.18935100, 13, 1.10671000),
    "0V8_SW": (6, 0.29568000, 14, 0.80073240),
    "VDD_CORE": (7, 0.56259000, 15, 0.76798460),
    "3V3_DAC": (17, 0.00012210, 20, 3.30993400),
    "3V3_ADC": (16, 0.00030525, 21, 3.30506900),
    "0V8_AON": (18, 0.00531036, 19, 0.79780220),
    "HDMI": (22, 0.02381076, 23, 5.12148900),
}

DEFAULT_STATE: dict[str, Any] = {
    "current_scale": 1.0,  # multiplies every rail current
    "ext5v_v": 5.13564000,
    "throttled": "0x0",
    "temp_c": 48.3,
    "exit_code": 0,
    "delay_s": 0.0,
    "no_rails": False,  # a Pi 4 / old firmware: pmic_read_adc prints nothing useful
}

#: what ``vcgencmd version`` prints on a Raspberry Pi 5 (firmware build date, copyright,
#: firmware commit)
FIRMWARE_VERSION = (
    "2024/09/23 14:02:56 \nCopyright (c) 2012 Broadcom\nversion 4b019946 (release) (embedded)"
)

_SCRIPT = """#!{python} -S
import json, os, sys, time
STATE = os.environ.get("TSLM_FAKE_VCGENCMD_STATE") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "vcgencmd.json")
state = {defaults}
try:
    with open(STATE) as fh:
        state.update(json.load(fh))
except FileNotFoundError:
    pass
rails = {rails}
FIRMWARE_VERSION = {firmware!r}
time.sleep(state["delay_s"])
if state["exit_code"]:
    print("error=1 error_msg=\\"Command not registered\\"", file=sys.stderr)
    sys.exit(state["exit_code"])
cmd = sys.argv[1] if len(sys.argv) > 1 else ""
if cmd == "pmic_read_adc":
    if not state["no_rails"]:
        lines = []
        for name, (ci, amps, vi, volts) in rails.items():
            lines.append((ci, " %s_A current(%d)=%.8fA" % (name, ci, amps * state["current_scale"])))
            lines.append((vi, " %s_V volt(%d)=%.8fV" % (name, vi, volts)))
        lines.append((24, " EXT5V_V volt(24)=%.8fV" % state["ext5v_v"]))
        lines.append((25, " BATT_V volt(25)=0.00000000V"))
        for _, line in sorted(lines, key=lambda item: (item[1].endswith("V"), item[0])):
            print("   " + line)
elif cmd == "get_throttled":
    print("throttled=%s" % state["throttled"])
elif cmd == "measure_temp":
    print("temp=%.1f'C" % state["temp_c"])
elif cmd == "version":
    print(FIRMWARE_VERSION)
else:
    print("error=2 error_msg=\\"Command not registered\\"")
    sys.exit(2)
"""


def install(bin_dir: Path, state: dict[str, Any] | None = None) -> Path:
    """Write the fake ``vcgencmd`` (and its state file) into ``bin_dir``; return its path."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "vcgencmd"
    script.write_text(
        _SCRIPT.format(
            python=sys.executable,
            defaults=repr(DEFAULT_STATE),
            rails=repr(PI5_RAILS),
            firmware=FIRMWARE_VERSION,
        )
    )
    script.chmod(0o755)
    write_state(bin_dir, state or {})
    return script


def write_state(bin_dir: Path, state: dict[str, Any]) -> None:
    """Replace the state the fake answers from (keys of DEFAULT_STATE)."""
    path = bin_dir / "vcgencmd.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(path)


def expected_power_w(current_scale: float = 1.0) -> float:
    """Sum of V x I over the rails reporting both, at the printed precision."""
    return sum(round(a * current_scale, 8) * round(v, 8) for _, a, _, v in PI5_RAILS.values())


#: a fake ``vcgencmd`` as light as the real C program: it prints files the emulator keeps
#: current, so that calling it ten times a second costs little CPU (the load-following
#: emulator counts the caller's CPU use, children included)
_FAST_SCRIPT = """#!/bin/sh
case "$1" in
  pmic_read_adc) exec cat '{folder}/pmic_read_adc.txt' ;;
  get_throttled) echo "throttled=0x0" ;;
  measure_temp) echo "temp=48.3'C" ;;
  *) echo 'error=2 error_msg="Command not registered"'; exit 2 ;;
esac
"""


def pmic_text(current_scale: float = 1.0, ext5v_v: float = DEFAULT_STATE["ext5v_v"]) -> str:
    """The output of ``vcgencmd pmic_read_adc`` with every rail current scaled."""
    lines = []
    for name, (ci, amps, vi, volts) in PI5_RAILS.items():
        lines.append((ci, f" {name}_A current({ci})={amps * current_scale:.8f}A"))
        lines.append((vi, f" {name}_V volt({vi})={volts:.8f}V"))
    lines.append((24, f" EXT5V_V volt(24)={ext5v_v:.8f}V"))
    lines.append((25, " BATT_V volt(25)=0.00000000V"))
    ordered = sorted(lines, key=lambda item: (item[1].endswith("V"), item[0]))
    return "".join("   " + line + "\n" for _, line in ordered)


def install_fast(folder: Path) -> Path:
    """Write the light ``vcgencmd`` into ``folder``; :func:`write_pmic` sets its reading."""
    folder.mkdir(parents=True, exist_ok=True)
    if "'" in str(folder):
        raise ValueError(f"folder {folder} holds a quote")
    script = folder / "vcgencmd"
    script.write_text(_FAST_SCRIPT.format(folder=folder))
    script.chmod(0o755)
    write_pmic(folder, 1.0)
    return script


def write_pmic(folder: Path, current_scale: float) -> None:
    """Replace the rails the light ``vcgencmd`` prints (atomically)."""
    path = folder / "pmic_read_adc.txt"
    tmp = folder / ".pmic_read_adc.tmp"
    tmp.write_text(pmic_text(current_scale))
    tmp.replace(path)
