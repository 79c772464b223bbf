"""The transport interface: run commands, stream output and move files on one device.

Commands are argument lists, never shell strings: the SSH transport quotes every argument
with :func:`shlex.quote` before the remote login shell sees it, and the local transport
runs them without a shell. Remote paths are POSIX strings; a leading ``~/`` is expanded
here against :meth:`Transport.home`, and a relative path is taken relative to the home
directory, so no shell ever expands a path.

    transport = open_transport(device)          # strict host keys
    with transport:
        transport.run(["uname", "-m"]).stdout   # CommandResult
        transport.put(Path("a.pyz"), "~/.tslm/bundles/a.pyz")   # temp name + rename
        transport.sha256("~/.tslm/bundles/a.pyz")
"""

from __future__ import annotations

import abc
import importlib
import json
import posixpath
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.transport.errors import RemoteCommandError, TransportError

#: transport name in inventory.yaml -> "module:class", imported when first used
TRANSPORTS: dict[str, str] = {
    "ssh": "orchestrator.transport.ssh:SSHTransport",
    "local": "orchestrator.transport.local:LocalTransport",
}

#: default limit of one command, seconds
DEFAULT_COMMAND_TIMEOUT_S = 60.0
#: exit statuses a POSIX shell uses for "command not found / not executable"
COMMAND_NOT_FOUND = (126, 127)

ProgressCallback = Callable[[int, int], None]

# Hashes files with the device's own Python; prints {path: sha256 or null} as JSON.
_SHA256_SNIPPET = """
import hashlib, json, sys
out = {}
for p in sys.argv[1:]:
    try:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for b in iter(lambda: f.read(1 << 20), b""):
                h.update(b)
        out[p] = h.hexdigest()
    except FileNotFoundError:
        out[p] = None
print(json.dumps(out))
"""
_HASH_BATCH = 200


@dataclass(frozen=True)
class CommandResult:
    """What a finished command left behind."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def open_transport(
    device: Any, *, accept_new_hostkeys: bool = False, connect_timeout_s: float | None = None
) -> Transport:
    """Connect to ``device`` with the transport its inventory entry names.

    ``connect_timeout_s`` defaults to the device's ``connect_timeout_s`` (10 s).
    Raises :class:`~orchestrator.transport.errors.ConnectError` or :class:`~orchestrator.transport.errors.HostKeyError`.
    """
    target = TRANSPORTS.get(device.transport)
    if target is None:
        raise TransportError(
            f"{device.name}: unknown transport {device.transport!r} "
            f"(known: {', '.join(TRANSPORTS)})"
        )
    module_name, cls_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    timeout = (
        connect_timeout_s
        if connect_timeout_s is not None
        else float(getattr(device, "connect_timeout_s", 10.0))
    )
    return cls(device, accept_new_hostkeys=accept_new_hostkeys, connect_timeout_s=timeout)


class Transport(abc.ABC):
    """A connection to one device. Use as a context manager, or call :meth:`close`."""

    def __init__(self, device: Any) -> None:
        self.device = device

    # ------------------------------------------------------------------ primitives
    @abc.abstractmethod
    def run(
        self,
        argv: Sequence[str],
        *,
        timeout_s: float | None = DEFAULT_COMMAND_TIMEOUT_S,
        stdin: bytes | None = None,
        check: bool = True,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CommandResult:
        """Run ``argv`` to completion and return its exit status and output.

        ``check``: raise :class:`RemoteCommandError` on a non-zero exit. Running past
        ``timeout_s`` raises :class:`TransportError`. ``cwd`` and ``env`` are optional
        (working directory, extra environment variables).
        """

    @abc.abstractmethod
    def stream(
        self,
        argv: Sequence[str],
        *,
        timeout_s: float | None = None,
        check: bool = True,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        idle_timeout_s: float | None = None,
    ) -> Iterator[str]:
        """Yield the lines of ``argv``'s stdout (without newline) as they arrive.

        A dropped connection raises :class:`~orchestrator.transport.errors.ConnectError` (the caller may
        reconnect and resume), and so does a stream that stays silent for longer than
        ``idle_timeout_s``; a non-zero exit at the end raises RemoteCommandError when
        ``check`` is set.
        """

    @abc.abstractmethod
    def put(self, local: Path, remote: str, *, progress: ProgressCallback | None = None) -> None:
        """Upload a file to ``remote + '.tmp-<random>'`` and rename it into place.

        Parent directories are created; ``progress(bytes_done, bytes_total)`` is called
        as the upload goes.
        """

    @abc.abstractmethod
    def home(self) -> str:
        """Absolute path of the device user's home directory."""

    @abc.abstractmethod
    def exists(self, remote: str) -> bool:
        """Whether a file or directory exists at ``remote``."""

    @abc.abstractmethod
    def makedirs(self, remote: str) -> None:
        """Create a directory and its parents (no error when it exists)."""

    @abc.abstractmethod
    def remove(self, remote: str, *, recursive: bool = False) -> None:
        """Remove a file (or a directory tree with ``recursive``); missing is not an error."""

    @abc.abstractmethod
    def listdir(self, remote: str) -> list[str]:
        """Names in a directory (empty when it does not exist)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the connection. Idempotent."""

    # ------------------------------------------------------------------ derived
    def resolve(self, remote: str) -> str:
        """Absolute remote path: ``~`` and relative paths are taken from the home dir."""
        if remote == "~":
            return self.home()
        if remote.startswith("~/"):
            return posixpath.join(self.home(), remote[2:])
        if not remote.startswith("/"):
            return posixpath.join(self.home(), remote)
        return remote

    def workdir(self) -> str:
        """The device's resolved work directory."""
        return self.resolve(self.device.workdir)

    def python(self) -> str:
        """The device's Python: a resolved path, or a bare command name looked up on PATH."""
        python = str(self.device.python)
        return python if "/" not in python else self.resolve(python)

    def sha256(self, remote: str) -> str | None:
        """sha256 of a remote file, computed on the device; None when it is missing."""
        return self.sha256_many([remote])[self.resolve(remote)]

    def sha256_many(self, remotes: Sequence[str]) -> dict[str, str | None]:
        """sha256 of several remote files in few round trips: resolved path -> hash or None.

        Uses the device's Python (hashlib); falls back to ``sha256sum`` where that Python
        does not exist yet.
        """
        paths = [self.resolve(r) for r in remotes]
        result: dict[str, str | None] = {}
        for start in range(0, len(paths), _HASH_BATCH):
            batch = paths[start : start + _HASH_BATCH]
            res = self.run(
                [self.python(), "-c", _SHA256_SNIPPET, *batch], check=False, timeout_s=600
            )
            if res.exit_code in COMMAND_NOT_FOUND:
                result.update({p: self._sha256sum(p) for p in batch})
                continue
            if res.exit_code != 0:
                raise self.command_error(["python", "-c", "<sha256>", *batch], res)
            try:
                result.update(json.loads(res.stdout))
            except ValueError as exc:
                raise TransportError(
                    f"{self.device.name}: unexpected output while hashing "
                    f"files: {res.stdout[:200]!r}"
                ) from exc
        return result

    def _sha256sum(self, path: str) -> str | None:
        if not self.exists(path):
            return None
        res = self.run(["sha256sum", "--", path], timeout_s=600)
        return res.stdout.split()[0].lstrip("\\")

    def command_error(self, argv: Sequence[str], result: CommandResult) -> RemoteCommandError:
        """The error for a command that exited non-zero (stderr tail included)."""
        lines = (result.stderr or result.stdout).strip().splitlines()
        tail = lines[-1] if lines else "(no output)"
        shown = " ".join(argv)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        return RemoteCommandError(
            f"{self.device.name}: `{shown}` exited with status {result.exit_code}: {tail}",
            exit_code=result.exit_code,
            stderr=result.stderr,
            hint=(
                "the program is missing on the device; `tslm-fleet doctor` shows what to install"
                if result.exit_code in COMMAND_NOT_FOUND
                else None
            ),
        )

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
