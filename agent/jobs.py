"""Job directories, the device lock, detaching, and the follow/status/stop commands.

Layout of the work directory (default ``~/.tslm``)::

    agent.lock                 held (flock) by the one job running on this device
    jobs/<job_id>/job.json     the validated spec
    jobs/<job_id>/journal.jsonl  every event, one JSON line each
    jobs/<job_id>/job.lock     held by the job's process while it lives
    jobs/<job_id>/pid          the job's process id
    jobs/<job_id>/agent.log    stdout/stderr of a detached job
    jobs/<job_id>/samples.csv  raw power samples (when the spec asks for them)

Whether a job is alive is decided by its ``job.lock`` (the kernel drops a flock when the
process dies), never by the pid alone, which the system may have reused.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.journal import JOURNAL_NAME, read_events
from agent.protocol import WORKDIR_PREFIX, JobSpec, check_job_id, utc_now_iso
from tasks.errors import AgentError, ConfigError, JobBusyError, JobSpecError

DEFAULT_WORKDIR = "~/.tslm"
WORKDIR_ENV = "TSLM_AGENT_WORKDIR"
FOLLOW_POLL_S = 0.2


@dataclass(frozen=True)
class JobPaths:
    """The files of one job."""

    job_id: str
    dir: Path

    @property
    def spec(self) -> Path:
        return self.dir / "job.json"

    @property
    def journal(self) -> Path:
        return self.dir / JOURNAL_NAME

    @property
    def alive_lock(self) -> Path:
        return self.dir / "job.lock"

    @property
    def pid_file(self) -> Path:
        return self.dir / "pid"

    @property
    def log(self) -> Path:
        return self.dir / "agent.log"

    @property
    def samples(self) -> Path:
        return self.dir / "samples.csv"


@dataclass(frozen=True)
class Workdir:
    """The agent's work directory: models, artifacts and jobs live below it."""

    root: Path

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None) -> Workdir:
        """Create (if needed) and resolve the work directory (argument, env, default)."""
        raw = path or os.environ.get(WORKDIR_ENV) or DEFAULT_WORKDIR
        root = Path(raw).expanduser()
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"work directory {root}: cannot create it ({exc.strerror})",
                hint=f"pass a writable --workdir or set {WORKDIR_ENV}",
            ) from exc
        return cls(root.resolve())

    @property
    def lock_path(self) -> Path:
        return self.root / "agent.lock"

    def job(self, job_id: str) -> JobPaths:
        """The paths of job ``job_id``; an id that is not a plain name is refused."""
        check_job_id(job_id)
        jobs = self.root / "jobs"
        directory = jobs / job_id
        if directory.resolve().parent != jobs.resolve():
            raise JobSpecError(f"job id {job_id!r}: its directory leads outside {jobs}")
        return JobPaths(job_id=job_id, dir=directory)

    def resolve_inside(self, relative: str, where: str) -> Path:
        """The real path of ``relative``; refuses anything (symlinks too) leading outside."""
        real = (self.root / relative).resolve()
        if not real.is_relative_to(self.root):
            raise JobSpecError(
                f"{where}: {relative!r} resolves to {real}, outside the work directory {self.root}",
                hint="push models and artifacts into the work directory; "
                "links pointing elsewhere are refused",
            )
        return real


def read_spec(source: str, workdir: Workdir) -> JobSpec:
    """Read and validate a job spec from a file (or ``-`` for stdin), paths included."""
    where = "<stdin>" if source == "-" else source
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except OSError as exc:
        raise JobSpecError(f"{where}: cannot read the job spec ({exc.strerror})") from exc
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise JobSpecError(f"{where}: not valid JSON ({exc})") from exc
    spec = JobSpec.from_dict(obj, where=where)
    workdir.resolve_inside(spec.model.path, f"{where}.model.path")
    if spec.artifact is not None:
        workdir.resolve_inside(spec.artifact.path, f"{where}.artifact.path")
    for i, task in enumerate(spec.tasks):
        task_params_inside(task.params, workdir, f"{where}.tasks[{i}].params")
    return spec


def task_params_inside(params: dict[str, Any], workdir: Workdir, where: str) -> dict[str, Any]:
    """``params`` with every ``workdir:REL`` value replaced by its real path in ``workdir``.

    A file the controller pushed for a task (a JSONL data file, a text) is named this way
    in the job spec; the path must stay inside the work directory and exist.
    """
    out = dict(params)
    for key, value in params.items():
        if isinstance(value, str) and value.startswith(WORKDIR_PREFIX):
            path = workdir.resolve_inside(value[len(WORKDIR_PREFIX) :], f"{where}.{key}")
            if not path.is_file():
                raise JobSpecError(
                    f"{where}.{key}: {value!r} is not in the work directory {workdir.root}",
                    hint="push the task's data file to the device (tslm-fleet deploy)",
                )
            out[key] = str(path)
    return out


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class JobLocks:
    """The device lock and the job's alive lock, held for the job's lifetime.

    Both are flocks on open files: a forked child inherits them, and the kernel releases
    them when the last process holding them exits, however it exits.
    """

    def __init__(self, device_fd: int, job_fd: int, batch_fds: list[int] | None = None) -> None:
        self.device_fd = device_fd
        self.job_fd = job_fd
        #: every job's alive lock, for a batch (see :func:`claim_jobs`)
        self.batch_fds = list(batch_fds) if batch_fds else [job_fd]

    def job_locks(self) -> list[JobLock]:
        """One releasable lock per job of the batch, in order."""
        return [JobLock(fd) for fd in self.batch_fds]

    def record_owner(self, job_id: str, pid: int) -> None:
        """Write who holds the device lock (read by a refused second job)."""
        os.ftruncate(self.device_fd, 0)
        os.pwrite(self.device_fd, f"{job_id} {pid} {utc_now_iso()}\n".encode(), 0)

    def release(self) -> None:
        """Close both locks (in the process that holds them last, or in a parent)."""
        for fd in {*self.batch_fds, self.job_fd, self.device_fd}:
            try:
                os.close(fd)
            except OSError:
                pass


def _busy_error(workdir: Workdir) -> JobBusyError:
    try:
        owner = workdir.lock_path.read_text().split()
    except OSError:
        owner = []
    who = f"job {owner[0]} (pid {owner[1]}, since {owner[2]})" if len(owner) >= 3 else "a job"
    job = owner[0] if owner else "JOB_ID"
    return JobBusyError(
        f"device busy: {who} is running in {workdir.root}",
        hint=f"wait for it (python -m agent follow {job}) or stop it (python -m agent stop {job})",
    )


def is_alive(paths: JobPaths) -> bool:
    """Whether the job's process is still running (it holds the job's alive lock)."""
    try:
        fd = os.open(paths.alive_lock, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        return not _try_flock(fd)
    finally:
        os.close(fd)


def claim_job(workdir: Workdir, spec: JobSpec) -> tuple[JobPaths, JobLocks]:
    """Take the device lock, set up the job directory and write ``job.json``.

    A finished job directory with the same id is kept under ``<job_id>~N``.
    Raises :class:`JobBusyError` when another job runs on this device.
    """
    device_fd = os.open(workdir.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    if not _try_flock(device_fd):
        os.close(device_fd)
        raise _busy_error(workdir)
    try:
        paths = workdir.job(spec.job_id)
        if paths.dir.exists():
            _keep_previous_attempt(paths)
        paths.dir.mkdir(parents=True)
        job_fd = os.open(paths.alive_lock, os.O_RDWR | os.O_CREAT, 0o644)
        _try_flock(job_fd)
        tmp = paths.spec.with_name(".job.json.tmp")
        tmp.write_text(spec.to_json() + "\n")
        tmp.replace(paths.spec)
    except BaseException:
        os.close(device_fd)
        raise
    locks = JobLocks(device_fd, job_fd)
    locks.record_owner(spec.job_id, os.getpid())
    write_pid(paths, os.getpid())
    return paths, locks


class JobLock:
    """The alive lock of one job of a batch (the batch holds the device lock)."""

    def __init__(self, job_fd: int) -> None:
        self.job_fd = job_fd

    def release(self) -> None:
        if self.job_fd < 0:
            return
        fd, self.job_fd = self.job_fd, -1
        try:
            os.close(fd)
        except OSError:
            pass


def claim_jobs(workdir: Workdir, specs: list[JobSpec]) -> tuple[list[JobPaths], JobLocks]:
    """Take the device lock once for a batch of jobs run one after the other by one
    process, and set up every job's directory and alive lock.

    Returns the paths of the jobs and the locks: ``device_fd`` and the first job's lock,
    plus :meth:`JobLocks.job_locks` for each job. A queued job is alive (its lock is held)
    until the batch ran it or died. No pid is written for a job until it starts.
    """
    ids = [s.job_id for s in specs]
    if len(set(ids)) != len(ids):
        raise JobSpecError(f"a batch names a job twice: {', '.join(ids)}")
    device_fd = os.open(workdir.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    if not _try_flock(device_fd):
        os.close(device_fd)
        raise _busy_error(workdir)
    job_fds: list[int] = []
    all_paths: list[JobPaths] = []
    try:
        for spec in specs:
            paths = workdir.job(spec.job_id)
            if paths.dir.exists():
                _keep_previous_attempt(paths)
            paths.dir.mkdir(parents=True)
            job_fd = os.open(paths.alive_lock, os.O_RDWR | os.O_CREAT, 0o644)
            job_fds.append(job_fd)
            _try_flock(job_fd)
            tmp = paths.spec.with_name(".job.json.tmp")
            tmp.write_text(spec.to_json() + "\n")
            tmp.replace(paths.spec)
            all_paths.append(paths)
    except BaseException:
        for fd in (*job_fds, device_fd):
            os.close(fd)
        raise
    locks = JobLocks(device_fd, job_fds[0], job_fds)
    locks.record_owner(specs[0].job_id, os.getpid())
    return all_paths, locks


def write_pid(paths: JobPaths, pid: int) -> None:
    """Record the job's process id (status and stop read it)."""
    tmp = paths.pid_file.with_name(".pid.tmp")
    tmp.write_text(f"{pid}\n")
    tmp.replace(paths.pid_file)


def _keep_previous_attempt(paths: JobPaths) -> None:
    if is_alive(paths):  # only possible with a second work directory lock; be safe
        raise JobBusyError(f"job {paths.job_id} is already running")
    n = 1
    while (kept := paths.dir.with_name(f"{paths.job_id}~{n}")).exists():
        n += 1
    paths.dir.rename(kept)


def detach(paths: JobPaths, locks: JobLocks, body: Callable[[], int]) -> int:
    """Run ``body`` in a daemon (double fork + setsid) and return its pid.

    The daemon has no controlling terminal, ignores SIGHUP, reads /dev/null and writes
    to ``agent.log``: it survives the SSH session that started it. It inherits the
    locks; the caller's copies are closed here.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:
        code = 1
        try:
            os.close(read_fd)
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            _redirect_stdio(paths.log)
            locks.record_owner(paths.job_id, os.getpid())
            write_pid(paths, os.getpid())
            os.write(write_fd, str(os.getpid()).encode())
            os.close(write_fd)
            code = body()
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(write_fd)
    os.waitpid(child, 0)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    locks.release()
    if not data:
        raise AgentError(
            f"job {paths.job_id}: the detached process did not start", hint=f"see {paths.log}"
        )
    return int(data)


def _redirect_stdio(log: Path) -> None:
    null = os.open(os.devnull, os.O_RDONLY)
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(null)
    os.close(out)


@dataclass(frozen=True)
class JobStatus:
    """What ``status`` reports: state is running, done, dead or unknown."""

    job_id: str
    state: str
    pid: int | None
    last_seq: int | None
    done_status: str | None

    def to_json(self) -> str:
        return json.dumps(
            {
                "job_id": self.job_id,
                "state": self.state,
                "pid": self.pid,
                "last_seq": self.last_seq,
                "done_status": self.done_status,
            }
        )


def _read_pid(paths: JobPaths) -> int | None:
    try:
        return int(paths.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def job_status(workdir: Workdir, job_id: str) -> JobStatus:
    """State of a job from its directory, journal and alive lock."""
    paths = workdir.job(job_id)
    if not paths.dir.is_dir():
        return JobStatus(job_id, "unknown", None, None, None)
    alive = is_alive(paths)
    last_seq = done = None
    for event in read_events(paths.journal):
        last_seq = event.seq
        if event.type == "done":
            done = event["status"]
    state = "running" if alive else ("done" if done else "dead")
    return JobStatus(job_id, state, _read_pid(paths), last_seq, done)


def _known_job(workdir: Workdir, job_id: str) -> JobPaths:
    paths = workdir.job(job_id)
    if not paths.dir.is_dir():
        raise ConfigError(
            f"no job {job_id!r} in {workdir.root / 'jobs'}", hint="check the job id and --workdir"
        )
    return paths


def follow_job(
    workdir: Workdir,
    job_id: str,
    from_seq: int,
    write: Callable[[str], None],
    poll_s: float = FOLLOW_POLL_S,
) -> None:
    """Write the journal's events with seq >= ``from_seq`` as they come, until ``done``.

    Returns normally after ``done`` (also when ``done`` came before ``from_seq``).
    Raises :class:`AgentError` when the job's process is gone without a ``done``.
    """
    from agent.journal import JournalReader

    paths = _known_job(workdir, job_id)
    reader = JournalReader(paths.journal)
    last_seq = 0

    def drain() -> bool:
        nonlocal last_seq
        for event in reader.read_new():
            last_seq = event.seq
            if event.seq >= from_seq:
                write(event.to_json())
            if event.type == "done":
                return True
        return False

    while True:
        if drain():
            return
        if not is_alive(paths):
            if drain():  # written between the read and the liveness check
                return
            raise AgentError(
                f"job {job_id} is not running and its journal ends at seq "
                f"{last_seq} without a done event (the agent died)",
                hint=f"see {paths.log} on the device",
            )
        time.sleep(poll_s)


def _lock_owner_pid(workdir: Workdir) -> int | None:
    """The pid recorded by the process holding the device lock (None when unknown)."""
    try:
        owner = workdir.lock_path.read_text().split()
        return int(owner[1])
    except (OSError, IndexError, ValueError):
        return None


def stop_job(workdir: Workdir, job_id: str, wait_s: float = 0.0) -> JobStatus:
    """Ask a running job to stop (SIGTERM: it finishes the current query, then ``done``).

    With ``wait_s`` > 0, waits up to that long for the process to end.
    """
    paths = _known_job(workdir, job_id)
    status = job_status(workdir, job_id)
    # a job queued in a batch has no pid yet: the batch's process (the device lock's
    # owner) ends it, and every other job it still holds, as stopped
    pid = status.pid if status.pid is not None else _lock_owner_pid(workdir)
    if status.state != "running" or pid is None:
        return status
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and is_alive(paths):
        time.sleep(0.1)
    return job_status(workdir, job_id)
