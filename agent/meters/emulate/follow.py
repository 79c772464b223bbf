"""Load-following power: P(t) = P_idle + P_busy x u(t), with u the CPU use of real processes.

u(t) is the CPU time of the followed processes per second of wall time, in cores (0 to
the number of cores), read every ``1 / rate_hz`` seconds (50 Hz by default) from the
nanosecond run-time counters of ``/proc/PID/task/TID/schedstat`` -- not from the
``utime`` ticks of ``/proc/PID/stat``, which at these rates are a 0/1 square wave.

The emulator's own process is not followed (unless ``exclude_self=False``: a
follower inside the followed process itself). A cgroup (``cpu.stat`` of cgroup v2 in microseconds, or v1 ``cpuacct.usage``) holds
every process started in it, daemons included: the way to follow the ``local`` device.
Otherwise followed processes are either those of one user (a device reached over sshd runs as its
own user) or a process tree (its root and every process started below it while it is
followed; a process stays followed once seen, so a daemon that re-parents itself to init
is kept, provided it lived through one tick as a child of a followed process).

The power between two ticks is constant: :class:`StepTrace` holds it, answers
``power_w(t)`` and the exact ``energy_j(t0, t1)`` on the machine's monotonic clock
(``time.monotonic()``, CLOCK_MONOTONIC, shared by every process of the machine), and the
emulators read it with ``t0=0``. With ``trace_path`` each step is appended to a text file
as ``t_end watts`` (the power held over (previous t_end, t_end]), below a header line of
``#``; :func:`read_trace` reads it back for checks of reported energies.
"""

from __future__ import annotations

import bisect
import os
import pwd
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from tasks.errors import ConfigError

#: 50 Hz: half the poll rate of the fastest instantaneous meter (hwmon, 100 Hz), so that
#: the meter sees every step of the power at least once. Followed at the meter's own
#: rate, the two clocks beat: some steps are read twice, others never, an aliasing of
#: the emulation (measured: 1 s windows of hwmon off by up to 2.7 % at 100 Hz, 1.1 % at
#: 50 Hz) that a real sensor, averaging over its conversion time, does not have
DEFAULT_RATE_HZ = 50.0
MIN_RATE_HZ = 50.0
DEFAULT_VOLTS = 5.1
TRACE_HEADER = "# t_end_monotonic_s watts  (power held since the previous line)\n"


class StepTrace:
    """Piecewise-constant power on the monotonic clock, grown at its end.

    ``watts[i]`` holds over ``(times[i], times[i + 1]]``; before the first step and after
    the last the nearest value is held flat.
    """

    def __init__(self, t_start: float, first_w: float, volts: float = DEFAULT_VOLTS) -> None:
        self.volts = volts
        self.times: list[float] = [t_start]
        self.watts: list[float] = []
        self._cum: list[float] = [0.0]  # energy from times[0] to times[i]
        self._first_w = first_w
        self._lock = threading.Lock()

    def append(self, t_end: float, watts: float) -> None:
        """Power ``watts`` held from the last step's end to ``t_end``."""
        with self._lock:
            if t_end <= self.times[-1]:
                return
            self._cum.append(self._cum[-1] + (t_end - self.times[-1]) * watts)
            self.watts.append(watts)
            self.times.append(t_end)

    @property
    def t_end(self) -> float:
        return self.times[-1]

    def power_w(self, t: float) -> float:
        with self._lock:
            if not self.watts:
                return self._first_w
            i = bisect.bisect_left(self.times, t) - 1
            return self.watts[min(max(i, 0), len(self.watts) - 1)]

    def amps(self, t: float) -> float:
        return self.power_w(t) / self.volts

    def _energy_to(self, t: float) -> float:
        """Energy from times[0] to ``t`` (negative before it); caller holds the lock."""
        if not self.watts:
            return (t - self.times[0]) * self._first_w
        if t <= self.times[0]:
            return (t - self.times[0]) * self.watts[0]
        if t >= self.times[-1]:
            return self._cum[-1] + (t - self.times[-1]) * self.watts[-1]
        i = bisect.bisect_left(self.times, t) - 1
        return self._cum[i] + (t - self.times[i]) * self.watts[i]

    def energy_j(self, t0: float, t1: float) -> float:
        """Exact integral of the power over [t0, t1]."""
        if t1 < t0:
            raise ValueError("t1 < t0")
        with self._lock:
            return self._energy_to(t1) - self._energy_to(t0)

    def median_w(self, t0: float, t1: float) -> float:
        """Time-weighted median power over [t0, t1] (the true counterpart of an idle
        baseline, which is the median of the meter's readings)."""
        if t1 <= t0:
            return self.power_w(t0)
        with self._lock:
            pieces: list[tuple[float, float]] = []  # (watts, seconds)
            lo = max(bisect.bisect_right(self.times, t0) - 1, 0)
            for i in range(lo, len(self.watts)):
                a, b = max(self.times[i], t0), min(self.times[i + 1], t1)
                if b > a:
                    pieces.append((self.watts[i], b - a))
                if self.times[i + 1] >= t1:
                    break
            if t1 > self.times[-1] and self.watts:
                pieces.append((self.watts[-1], t1 - max(self.times[-1], t0)))
            elif t0 < self.times[0]:
                pieces.append((self.watts[0] if self.watts else self._first_w, self.times[0] - t0))
        pieces.sort()
        half = sum(d for _, d in pieces) / 2
        acc = 0.0
        for watts, seconds in pieces:
            acc += seconds
            if acc >= half:
                return watts
        return pieces[-1][0]

    def mean_w(self, t0: float, t1: float) -> float:
        return self.energy_j(t0, t1) / (t1 - t0) if t1 > t0 else self.power_w(t0)


def read_trace(path: str | os.PathLike[str], volts: float = DEFAULT_VOLTS) -> StepTrace:
    """Read a trace file written by :class:`CpuFollower` (``t_end watts`` lines)."""
    rows: list[tuple[float, float]] = []
    with open(path) as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip() or line.startswith("#"):
                continue
            try:
                t, w = line.split()
                rows.append((float(t), float(w)))
            except ValueError as exc:
                raise ConfigError(
                    f"trace file {path}, line {number}: expected 't_end watts', got {line!r}"
                ) from exc
    if not rows:
        raise ConfigError(f"trace file {path} holds no power steps")
    trace = StepTrace(rows[0][0], rows[0][1], volts)
    for t, w in rows[1:]:
        trace.append(t, w)
    return trace


def _schedstat_ns(pid: int, proc: Path) -> dict[int, int]:
    """Run time in ns of every thread of ``pid`` (empty when it is gone)."""
    out: dict[int, int] = {}
    try:
        tids = os.listdir(proc / str(pid) / "task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(proc / str(pid) / "task" / tid / "schedstat", "rb") as fh:
                out[int(tid)] = int(fh.read().split(maxsplit=1)[0])
        except (OSError, ValueError, IndexError):
            continue
    return out


#: ticks (at 50 Hz: 0.4 s) during which a new process's owner is looked at again
_YOUNG_TICKS = 20


class CpuFollower:
    """Follows the CPU use of a user's processes or of a process tree, in a thread.

    Exactly one of ``user`` (a name or uid) and ``pid`` (the root of the tree).
    """

    def __init__(
        self,
        *,
        idle_w: float,
        busy_w: float,
        user: str | int | None = None,
        pid: int | None = None,
        cgroup: str | os.PathLike[str] | None = None,
        rate_hz: float = DEFAULT_RATE_HZ,
        trace_path: str | os.PathLike[str] | None = None,
        volts: float = DEFAULT_VOLTS,
        proc_root: str | os.PathLike[str] = "/proc",
        exclude_self: bool = True,
    ) -> None:
        if sum(x is not None for x in (user, pid, cgroup)) != 1:
            raise ConfigError("follow exactly one of a user, a process (pid) and a cgroup")
        if not rate_hz >= MIN_RATE_HZ:
            raise ConfigError(
                f"follow rate {rate_hz:g} Hz is too slow: at least {MIN_RATE_HZ:g} Hz "
                "resolves query boundaries"
            )
        if idle_w < 0 or busy_w < 0:
            raise ConfigError(f"idle and busy power must not be negative ({idle_w}, {busy_w})")
        self.proc = Path(proc_root)
        self.idle_w = idle_w
        self.busy_w = busy_w
        self.period_s = 1.0 / rate_hz
        self.cores = os.cpu_count() or 1
        self.uid: int | None = None
        self.root_pid: int | None = None
        self.cgroup: Path | None = None
        if cgroup is not None:
            self.cgroup = Path(cgroup)
            try:
                _cgroup_ns(self.cgroup)
            except (OSError, ValueError) as exc:
                raise ConfigError(
                    f"cannot follow cgroup {cgroup}: no readable cpu.stat (cgroup v2) or "
                    f"cpuacct.usage (cgroup v1) there ({exc})"
                ) from None
            self.what = f"cgroup {cgroup}"
        elif user is not None:
            self.uid = _resolve_uid(user)
            self.what = f"user {user}"
        else:
            assert pid is not None
            if not (self.proc / str(pid) / "task").is_dir():
                raise ConfigError(f"cannot follow process {pid}: no such process")
            if not _schedstat_ns(pid, self.proc):
                raise ConfigError(
                    f"cannot follow process {pid}: {self.proc}/{pid}/task/*/schedstat "
                    "is not readable (a kernel without CONFIG_SCHEDSTATS, or no permission)"
                )
            self.root_pid = pid
            self.what = f"process tree of {pid}"
        self.trace_path = Path(trace_path) if trace_path is not None else None
        self._trace_file: TextIO | None = None
        self._followed: set[int] = set()
        self._seen: dict[int, int | None] = {}  # pid -> ppid (tree) or uid (user)
        self._born: dict[int, int] = {}  # pid -> the tick it was first seen at
        self._last_ns: dict[int, int] = {}
        self._ticks = 0
        #: the emulator itself is never followed (it may run as the user, or in the tree)
        self._own_pid = os.getpid() if exclude_self else -1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        now = time.monotonic()
        self.trace = StepTrace(now, idle_w, volts)
        self._t_last = now
        #: ticks whose interval was more than twice the period (a busy machine)
        self.late_ticks = 0
        #: called with (t_end, watts) after each new step: an emulated instantaneous meter
        #: shows the step the moment it is known, with no second sampling of the trace
        self.listeners: list[Callable[[float, float], None]] = []

    # ---- the processes -----------------------------------------------------------------

    def _scan(self) -> set[int]:
        """The pids followed now."""
        try:
            pids = {int(name) for name in os.listdir(self.proc) if name.isdigit()}
        except OSError:
            return set()
        if self._ticks % 50 == 0 and self.uid is not None:
            # a process may change its uid (sshd's session child): look again now and then
            self._seen = {p: u for p, u in self._seen.items() if u == self.uid}
        for pid in pids - self._seen.keys():
            self._seen[pid] = self._identify(pid)
            self._born.setdefault(pid, self._ticks)  # kept when a look-again drops it
        if self.uid is not None:
            # a new process may still be between fork and setuid (Popen(user=...), sshd):
            # look at its owner again while it is young; its CPU time counts from its start
            for pid, born in self._born.items():
                if self._ticks - born <= _YOUNG_TICKS and self._seen.get(pid) != self.uid:
                    self._seen[pid] = self._identify(pid)
        for gone in self._seen.keys() - pids:
            del self._seen[gone]
            self._born.pop(gone, None)
        if self.uid is not None:
            return {p for p, u in self._seen.items() if u == self.uid} - {self._own_pid}
        followed = {p for p in self._followed if p in pids}
        if self.root_pid in pids:
            followed.add(self.root_pid)
        grew = True
        while grew:
            new = {p for p, ppid in self._seen.items() if ppid in followed} - followed
            followed |= new
            grew = bool(new)
        return followed - {self._own_pid}

    def _identify(self, pid: int) -> int | None:
        try:
            if self.uid is not None:
                return os.stat(self.proc / str(pid)).st_uid
            with open(self.proc / str(pid) / "stat", "rb") as fh:
                return int(fh.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return None

    def _cpu_ns(self, first: bool) -> int:
        """Run time of the followed threads since the last call (ns)."""
        if self.cgroup is not None:
            try:
                ns = _cgroup_ns(self.cgroup)
            except (OSError, ValueError):
                return 0  # the cgroup was removed: nothing runs in it any more
            last = self._last_ns.get(0, ns)
            self._last_ns = {0: ns}
            return max(ns - last, 0)
        self._followed = self._scan()
        total = 0
        current: dict[int, int] = {}
        for pid in self._followed:
            for tid, ns in _schedstat_ns(pid, self.proc).items():
                current[tid] = ns
                # a thread first seen after the start ran only since the last tick
                total += ns - self._last_ns.get(tid, ns if first else 0)
        self._last_ns = current
        return max(total, 0)

    # ---- the loop ----------------------------------------------------------------------

    def start(self) -> CpuFollower:
        if self.trace_path is not None:
            self.trace_path.parent.mkdir(parents=True, exist_ok=True)
            self._trace_file = open(self.trace_path, "a")  # noqa: SIM115 - closed in stop()
            self._trace_file.write(TRACE_HEADER)
            self._trace_file.write(f"{self._t_last:.6f} {self.idle_w:.6f}\n")
        self._cpu_ns(first=True)
        self._t_last = time.monotonic()
        self.trace.append(self._t_last, self.idle_w)
        if self._trace_file is not None:
            self._trace_file.write(f"{self._t_last:.6f} {self.idle_w:.6f}\n")
        self._thread = threading.Thread(target=self._loop, name="cpu-follower", daemon=True)
        self._thread.start()
        return self

    def tick(self) -> float:
        """Read the counters once, append a step; returns the power of that step."""
        ns = self._cpu_ns(first=False)
        now = time.monotonic()
        dt = now - self._t_last
        if dt <= 0:
            return self.trace.power_w(now)
        if dt > 2 * self.period_s:
            self.late_ticks += 1
        use = min(max(ns / 1e9 / dt, 0.0), float(self.cores))
        watts = self.idle_w + self.busy_w * use
        self.trace.append(now, watts)
        for listener in self.listeners:
            try:
                listener(now, watts)
            except OSError:
                pass  # the served folder was removed under us; the next step may succeed
        if self._trace_file is not None:
            self._trace_file.write(f"{now:.6f} {watts:.6f}\n")
            if self._ticks % 20 == 0:
                self._trace_file.flush()
        self._t_last = now
        self._ticks += 1
        return watts

    def _loop(self) -> None:
        next_due = time.monotonic() + self.period_s
        while not self._stop.wait(max(next_due - time.monotonic(), 0.0)):
            self.tick()
            next_due += self.period_s
            now = time.monotonic()
            if next_due < now:
                next_due = now + self.period_s

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
            self.tick()
        if self._trace_file is not None:
            self._trace_file.close()
            self._trace_file = None

    def __enter__(self) -> CpuFollower:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _cgroup_ns(path: Path) -> int:
    """CPU time of every process in a cgroup so far (ns): cgroup v2 ``cpu.stat``
    ``usage_usec``, else cgroup v1 ``cpuacct.usage``."""
    stat = path / "cpu.stat"
    if stat.exists():
        for line in stat.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                return int(value) * 1000
        raise ValueError(f"{stat} has no usage_usec")
    return int((path / "cpuacct.usage").read_text())


def _resolve_uid(user: str | int) -> int:
    if isinstance(user, int) or str(user).isdigit():
        return int(user)
    try:
        return pwd.getpwnam(str(user)).pw_uid
    except KeyError:
        raise ConfigError(f"cannot follow user {user!r}: no such user") from None
