"""Command line of the device agent: ``python -m agent [--workdir DIR] COMMAND``.

Commands::

    run JOB.json            run a job in the foreground; events on stdout and in the journal
    start JOB.json [JOB.json ...]
                            run jobs detached (survives the SSH session), one after the
                            other in one process that loads the base model once; prints
                            {"job_id": ..., "pid": ...} for each
    follow JOB_ID [--from SEQ]
                            print the job's events with seq >= SEQ, waiting for new ones,
                            until its done event
    status JOB_ID           {"job_id", "state": running|done|dead|unknown, "pid",
                            "last_seq", "done_status"}
    stop JOB_ID [--wait S]  ask the job to stop after its current query (done: stopped)
    info                    versions, board, CPU, RAM, OS, temperature, throttling, disk
    meter ...               power-meter tools (see ``python -m agent meter --help``)

``JOB.json`` may be ``-`` to read the spec from stdin. The work directory is
``--workdir``, else ``$TSLM_AGENT_WORKDIR``, else ``~/.tslm``.

Exit status:

    0  success (run: the job finished ok; follow: the done event was printed)
    1  any other error (a meter that cannot be opened, an unexpected failure)
    2  bad input: invalid job spec, path outside the work directory, unknown job id,
       usage error
    3  the job failed (run: done status failed) or died (follow: no done event and no
       process)
    4  busy: another job holds this device's lock
    5  the job was stopped (run: done status stopped, by ``stop``, a signal or the limit)

Errors are printed as ``error: <message>`` and ``hint: <what to do>`` on stderr; set
``TSLM_DEBUG=1`` to get the traceback as well.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable

from tasks import __version__
from tasks.errors import AgentError, ConfigError, JobBusyError, TslmError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_FAILED = 3
EXIT_BUSY = 4
EXIT_STOPPED = 5

#: done status of a job -> exit status of ``run``
DONE_EXIT = {"ok": EXIT_OK, "failed": EXIT_FAILED, "stopped": EXIT_STOPPED}
#: exception class -> exit status, most specific first
ERROR_EXIT: tuple[tuple[type[TslmError], int], ...] = (
    (JobBusyError, EXIT_BUSY),
    (ConfigError, EXIT_USAGE),
    (AgentError, EXIT_FAILED),
    (TslmError, EXIT_ERROR),
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own exit status is 2 as well
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of the agent's commands."""
    parser = _Parser(prog="python -m agent", description="tslm-fleet device agent.")
    parser.add_argument(
        "--workdir",
        help="work directory (default $TSLM_AGENT_WORKDIR or "
        "~/.tslm); job paths are relative to it",
    )
    parser.add_argument("--version", action="version", version=f"tslm-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("run", help="run a job in the foreground")
    p.add_argument("spec", metavar="JOB.json", help="job spec file, or - for stdin")
    p = sub.add_parser(
        "start", help="run jobs detached, one after the other, and print their ids and pid"
    )
    p.add_argument(
        "specs", metavar="JOB.json", nargs="+", help="job spec files (one process, in order)"
    )
    p = sub.add_parser("follow", help="stream a job's events until it is done")
    p.add_argument("job_id")
    p.add_argument(
        "--from",
        dest="from_seq",
        type=int,
        default=1,
        metavar="SEQ",
        help="first seq to print (default 1)",
    )
    p = sub.add_parser("status", help="state of a job as JSON")
    p.add_argument("job_id")
    p = sub.add_parser("stop", help="stop a job after its current query")
    p.add_argument("job_id")
    p.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="S",
        help="wait up to S seconds for the job to end",
    )
    sub.add_parser("info", help="board, versions and state as JSON")
    p = sub.add_parser("meter", help="power-meter tools", add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER)  # handed to agent.meter_cli
    return parser


def _print_line(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _cmd_run(args: argparse.Namespace) -> int:
    from agent.jobs import Workdir, claim_job, read_spec
    from agent.runner import run_job

    workdir = Workdir.open(args.workdir)
    spec = read_spec(args.spec, workdir)
    paths, locks = claim_job(workdir, spec)
    return DONE_EXIT[run_job(spec, workdir, paths, locks, echo=sys.stdout)]


def _cmd_start(args: argparse.Namespace) -> int:
    from agent.jobs import Workdir, claim_jobs, detach, read_spec

    workdir = Workdir.open(args.workdir)
    if "-" in args.specs and len(args.specs) > 1:
        raise ConfigError("start: '-' (stdin) can only be the one job spec")
    specs = [read_spec(source, workdir) for source in args.specs]
    paths, locks = claim_jobs(workdir, specs)

    def body() -> int:
        from agent.batch import run_batch

        statuses = run_batch(specs, workdir, paths, locks, echo=None)
        return DONE_EXIT[statuses[-1]] if statuses else EXIT_OK

    pid = detach(paths[0], locks, body)
    for spec in specs:
        _print_line(json.dumps({"job_id": spec.job_id, "pid": pid}))
    return EXIT_OK


def _cmd_follow(args: argparse.Namespace) -> int:
    from agent.jobs import Workdir, follow_job

    follow_job(Workdir.open(args.workdir), args.job_id, args.from_seq, _print_line)
    return EXIT_OK


def _cmd_status(args: argparse.Namespace) -> int:
    from agent.jobs import Workdir, job_status

    _print_line(job_status(Workdir.open(args.workdir), args.job_id).to_json())
    return EXIT_OK


def _cmd_stop(args: argparse.Namespace) -> int:
    from agent.jobs import Workdir, stop_job

    _print_line(stop_job(Workdir.open(args.workdir), args.job_id, args.wait).to_json())
    return EXIT_OK


def _cmd_info(args: argparse.Namespace) -> int:
    from agent.jobs import Workdir
    from agent.sysinfo import bundle_sha256, device_info

    info = device_info(Workdir.open(args.workdir).root, __version__, bundle_sha256())
    _print_line(json.dumps(info, indent=2))
    return EXIT_OK


def _cmd_meter(args: argparse.Namespace) -> int:
    try:
        from agent.meter_cli import main as meter_main
    except ModuleNotFoundError as exc:
        raise TslmError(
            "this agent build has no meter tools (agent.meter_cli is missing)",
            hint="deploy a complete agent bundle",
        ) from exc
    return int(meter_main(list(args.args)) or 0)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": _cmd_run,
    "start": _cmd_start,
    "follow": _cmd_follow,
    "status": _cmd_status,
    "stop": _cmd_stop,
    "info": _cmd_info,
    "meter": _cmd_meter,
}


def exit_code_for(exc: TslmError) -> int:
    """Exit status for an error that ended a command."""
    return next(code for cls, code in ERROR_EXIT if isinstance(exc, cls))


def main(argv: list[str] | None = None) -> int:
    """Run one agent command; returns the exit status (never raises for user errors)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "meter":
        args.args = extra + list(args.args)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return COMMANDS[args.command](args)
    except TslmError as exc:
        if os.environ.get("TSLM_DEBUG"):
            traceback.print_exc()
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return exit_code_for(exc)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_ERROR
    except Exception as exc:
        if os.environ.get("TSLM_DEBUG"):
            traceback.print_exc()
        print(f"error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        print("hint: rerun with TSLM_DEBUG=1 for the traceback and report it", file=sys.stderr)
        return EXIT_ERROR
