"""Load-following emulation: the follower's ground truth, the served meters, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent.meters import create_meter
from agent.meters.emulate.follow import DEFAULT_RATE_HZ, CpuFollower, StepTrace, read_trace
from agent.meters.emulate.serve import LaggedTrace, start_emulation
from agent.sampler import Sampler
from tasks.errors import ConfigError

SPIN = "import time\nt = time.monotonic()\nwhile time.monotonic() - t < {busy}: pass\n"


def test_step_trace_integrates_exactly() -> None:
    trace = StepTrace(10.0, 2.0)
    trace.append(11.0, 2.0)
    trace.append(11.5, 4.0)
    trace.append(13.0, 3.0)
    assert trace.energy_j(10.0, 13.0) == pytest.approx(2.0 + 2.0 + 4.5)
    assert trace.energy_j(11.25, 11.75) == pytest.approx(0.25 * 4.0 + 0.25 * 3.0)
    assert trace.power_w(11.2) == 4.0 and trace.power_w(11.5) == 4.0
    assert trace.power_w(20.0) == 3.0  # held flat after the end
    assert trace.energy_j(13.0, 14.0) == pytest.approx(3.0)
    lagged = LaggedTrace(trace, 0.5)
    assert lagged.power_w(11.7) == 4.0 and lagged.power_w(12.1) == 3.0


def test_follower_measures_cpu_time_of_a_process_tree(tmp_path: Path) -> None:
    """The trace's energy above idle is busy_w x the CPU seconds the tree used."""
    code = (
        "import subprocess, sys, time\n"
        "time.sleep(0.3)\n"
        f"child = subprocess.Popen([sys.executable, '-c', {SPIN.format(busy=0.8)!r}])\n"
        + SPIN.format(busy=0.8)
        + "child.wait()\n"
        "time.sleep(0.3)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    trace_path = tmp_path / "true.trace"
    follower = CpuFollower(idle_w=2.0, busy_w=1.5, pid=proc.pid, trace_path=trace_path)
    t0 = time.monotonic()
    follower.start()
    _, _, usage = os.wait4(proc.pid, 0)  # CPU time of the process and its children
    proc.returncode = 0
    follower.stop()
    t1 = follower.trace.t_end
    cpu_s = usage.ru_utime + usage.ru_stime
    net = follower.trace.energy_j(t0, t1) - 2.0 * (t1 - t0)
    # the interpreter's start-up before the follower began is not in the trace
    assert net / 1.5 == pytest.approx(cpu_s, abs=0.1 + 0.05 * cpu_s)
    assert cpu_s > 0.2
    written = read_trace(trace_path)
    assert written.energy_j(t0, t1) == pytest.approx(follower.trace.energy_j(t0, t1), rel=1e-5)
    assert follower._ticks > 0.5 * (t1 - t0) * DEFAULT_RATE_HZ


def test_served_hwmon_shows_each_step_of_the_follower_when_it_is_known(tmp_path: Path) -> None:
    """No second sampling of the true power: the sensor file is rewritten by the
    follower's own tick, and holds the step that tick appended."""
    proc = subprocess.Popen([sys.executable, "-c", SPIN.format(busy=1.0)])
    try:
        emulation = start_emulation("hwmon", follow_pid=proc.pid, root=tmp_path / "hw")
        with emulation:
            follower = emulation.follower
            assert follower is not None and len(follower.listeners) == 1
            assert not any(t.name in ("FakeHwmon", "meter-refresh") for t in threading.enumerate())
            time.sleep(0.5)
            follower.stop()  # joins the thread, then one last tick
            power = tmp_path / "hw/sys/class/hwmon/hwmon0/power1_input"
            assert int(power.read_text()) == round(follower.trace.watts[-1] * 1e6)
            assert max(follower.trace.watts) > 2.5  # the child's spin shows
        assert follower.listeners == []
    finally:
        proc.kill()
        proc.wait()


def test_follower_rate_and_user_and_pid_errors() -> None:
    with pytest.raises(ConfigError, match="at least 50 Hz"):
        CpuFollower(idle_w=2, busy_w=1, pid=os.getpid(), rate_hz=10)
    with pytest.raises(ConfigError, match="no such user"):
        CpuFollower(idle_w=2, busy_w=1, user="no-such-user-tslm")
    with pytest.raises(ConfigError, match="no such process"):
        CpuFollower(idle_w=2, busy_w=1, pid=2**22 + 12345)
    with pytest.raises(ConfigError, match="exactly one"):
        CpuFollower(idle_w=2, busy_w=1)


def test_served_um_follows_the_load_and_the_real_driver_reads_it(tmp_path: Path) -> None:
    """A busy child raises the UM reading; the reading is the mean of each half second."""
    trace_path = tmp_path / "um.trace"
    code = "import time\ntime.sleep(1.2)\n" + SPIN.format(busy=1.5) + "time.sleep(1.2)\n"
    child = subprocess.Popen([sys.executable, "-c", code])
    with start_emulation(
        "um25c", follow_pid=child.pid, idle_w=2.0, busy_w=1.5, trace_path=trace_path
    ) as emu:
        meter = create_meter("um25c", **emu.options)
        with Sampler(meter) as sampler:
            child.wait()
            samples = [s for s in sampler.samples() if s.fresh]
    trace = read_trace(trace_path)
    assert len(samples) >= 5
    for s in samples:
        # each fresh reading is the mean of the half second before its refresh, which
        # lies within the half second before the request
        k = int(s.t // 0.5)
        expected = trace.energy_j(k * 0.5 - 0.5, k * 0.5) / 0.5
        assert s.watts == pytest.approx(expected, abs=0.002), s
    assert max(s.watts for s in samples) > 2.1
    assert min(s.watts for s in samples) < max(s.watts for s in samples) - 0.1


@pytest.mark.parametrize("kind", ["hwmon", "pi5-pmic", "rapl"])
def test_served_sysfs_and_vcgencmd_meters_show_the_true_power(kind: str, tmp_path: Path) -> None:
    with start_emulation(kind, watts=3.25, root=tmp_path / kind) as emu:
        meter = create_meter(kind, **emu.options)
        with Sampler(meter) as sampler:
            time.sleep(0.8)
            samples = [s for s in sampler.samples() if s.fresh and s.watts is not None]
            whole = sampler.window(samples[1].t, samples[-1].t)
    assert samples
    if kind == "rapl":  # power from counter differences: right over the whole span
        assert whole.mean_power_w == pytest.approx(3.25, rel=0.05)
    else:
        assert all(s.watts == pytest.approx(3.25, rel=0.002) for s in samples[1:]), samples[:5]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kind", "fnb58", "--watts", "2"], "is a USB tester"),
        (["--kind", "um99", "--watts", "2"], "cannot emulate meter kind 'um99'"),
        (["--kind", "hwmon", "--follow-pid", "999999999"], "no such process"),
        (["--kind", "hwmon", "--follow-user", "no-such-user-tslm"], "no such user"),
        (["--kind", "hwmon"], "exactly one"),
    ],
)
def test_emulate_cli_refuses_bad_input(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from orchestrator.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["meter", "emulate", *args])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_emulate_cli_serves_and_writes_the_trace(tmp_path: Path) -> None:
    trace = tmp_path / "t.trace"
    proc = subprocess.run(
        [
            sys.executable, "-m", "orchestrator", "meter", "emulate", "--kind", "hwmon",
            "--watts", "4.5", "--root", str(tmp_path / "sys"), "--trace", str(trace),
            "--seconds", "0.5",
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    line = json.loads(proc.stdout.splitlines()[0])
    assert line["options"] == {"hwmon_name": "ina226", "sysfs_root": str(tmp_path / "sys")}
    written = read_trace(trace)
    assert written.times[-1] - written.times[0] >= 0.5
    assert written.power_w(written.times[0] + 0.1) == 4.5


@pytest.mark.skipif(os.geteuid() != 0, reason="starts a process as another user")
def test_follower_measures_cpu_time_of_a_user() -> None:
    """The processes of a user (here ``nobody``), found by uid as they start."""
    import pwd

    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody'")
    follower = CpuFollower(idle_w=2.0, busy_w=1.5, user="nobody")
    before = follower.trace.t_end
    follower.start()
    time.sleep(0.1)
    proc = subprocess.Popen(
        ["/bin/sh", "-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; sleep 0.2"],
        user=nobody.pw_uid,
        group=nobody.pw_gid,
    )
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    time.sleep(0.1)
    follower.stop()
    cpu_s = usage.ru_utime + usage.ru_stime
    net = follower.trace.energy_j(before, follower.trace.t_end) - 2.0 * (
        follower.trace.t_end - before
    )
    assert cpu_s > 0.05
    # other processes of 'nobody' may run too, but never less than the child's CPU time
    assert net / 1.5 >= 0.9 * cpu_s - 0.02
    assert net / 1.5 <= cpu_s + 0.5


@pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/sys/fs/cgroup/unified/cgroup.procs").exists(),
    reason="needs root and a cgroup v2 hierarchy at /sys/fs/cgroup/unified",
)
def test_follower_measures_a_cgroup_with_its_daemons() -> None:
    """A process that detaches (double fork) stays in its cgroup and is counted."""
    group = Path("/sys/fs/cgroup/unified") / f"tslm-test-{os.getpid()}"
    group.mkdir()
    try:
        follower = CpuFollower(idle_w=2.0, busy_w=1.5, cgroup=group)
        before = follower.trace.t_end
        follower.start()
        code = (
            "import os, time\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            "    if os.fork() == 0:\n"
            "        t = time.monotonic()\n"
            "        while time.monotonic() - t < 0.6: pass\n"
            "    os._exit(0)\n"
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            preexec_fn=lambda: (group / "cgroup.procs").write_text(str(os.getpid())),
        )
        proc.wait()
        deadline = time.monotonic() + 10
        while (group / "cgroup.procs").read_text().strip() and time.monotonic() < deadline:
            time.sleep(0.05)
        follower.stop()
        net = follower.trace.energy_j(before, follower.trace.t_end) - 2.0 * (
            follower.trace.t_end - before
        )
        usage_s = (
            int(
                next(
                    line.split()[1]
                    for line in (group / "cpu.stat").read_text().splitlines()
                    if line.startswith("usage_usec")
                )
            )
            / 1e6
        )
        assert usage_s > 0.1
        assert net / 1.5 == pytest.approx(usage_s, rel=0.05, abs=0.02)
    finally:
        group.rmdir()
    with pytest.raises(ConfigError, match="cannot follow cgroup"):
        CpuFollower(idle_w=2, busy_w=1, cgroup=group)
