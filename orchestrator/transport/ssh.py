"""SSH transport on fabric (``fabric.Connection``), with strict host-key checking.

* Host keys are checked against the device's ``known_hosts``. An unknown key is refused
  (the message gives the ``ssh-keyscan`` line to add it) unless ``accept_new_hostkeys``,
  which appends it to that file; a *changed* key is always refused and nothing runs.
  ``fabric.Connection`` installs paramiko's ``AutoAddPolicy`` on its client; that policy
  is replaced before the first connect.
* No ``~/.ssh/config``, ``/etc/ssh/ssh_config`` or fabric config file is read: what
  connects where is the inventory's alone.
* Authentication: the inventory's ``identity_file`` when it exists, and the ssh-agent.
* Transient connection failures (refused, timed out, reset, no banner) are retried with
  exponential backoff; authentication and host-key failures are not.
* Commands are ``shlex.join``-ed argument lists, so no inventory value reaches the remote
  shell unquoted (fabric's own ``env`` support builds an unquoted ``export`` line and is
  not used). Files move over fabric's SFTP session (no shell involved).
"""

from __future__ import annotations

import base64
import errno
import hashlib
import io
import posixpath
import queue
import secrets
import shlex
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import fabric
import invoke
import paramiko
from fabric.runners import Remote

from orchestrator.transport.base import (
    DEFAULT_COMMAND_TIMEOUT_S,
    CommandResult,
    ProgressCallback,
    Transport,
)
from orchestrator.transport.errors import ConnectError, HostKeyError, TransportError

KEEPALIVE_S = 5.0
RETRIES = 2
BACKOFF_S = 0.5
#: how often a command that has ended its output checks whether it has exited
_WAKE_S = 0.5
#: how often an idle connection's reader thread wakes (see :class:`_FleetTransport`)
READER_WAKE_S = 1.0


class _FleetTransport(paramiko.Transport):
    """paramiko's transport, for a controller that holds one connection per device: its
    reader thread wakes every :data:`READER_WAKE_S` seconds when nothing arrives.

    paramiko wakes it every 0.1 s, so that each idle connection cost the controller ten
    wake-ups a second (0.8 ms of CPU a second per connection, measured); the wake-up only
    looks for a closed transport, a keepalive that is due and a handshake that timed
    out, none of which needs more than a second's resolution.
    """

    _active_check_timeout = READER_WAKE_S


class _TransientConnectError(ConnectError):
    """A failure worth retrying: refused, timed out, reset, no banner."""


class _UnknownHostKey(paramiko.SSHException):
    def __init__(self, hostname: str, key: paramiko.PKey) -> None:
        super().__init__(f"unknown host key for {hostname}")
        self.hostname = hostname
        self.key = key


class _RejectUnknown(paramiko.RejectPolicy):
    """Refuse keys that are not in known_hosts (and remember which key was offered)."""

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        raise _UnknownHostKey(hostname, key)


class _AcceptNew(paramiko.MissingHostKeyPolicy):
    """First contact: append the offered key to known_hosts (never replaces a key)."""

    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.known_hosts, "a", encoding="ascii") as fh:
            fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        client.get_host_keys().add(hostname, key.get_name(), key)


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style fingerprint: ``SHA256:<base64>``."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def remote_command(
    argv: Sequence[str], *, cwd: str | None = None, env: Mapping[str, str] | None = None
) -> str:
    """The command line the remote shell receives: every argument quoted."""
    if not argv:
        raise TransportError("empty command")
    words = [str(a) for a in argv]
    if env:
        words = ["env", *(f"{k}={v}" for k, v in env.items()), *words]
    command = shlex.join(words)
    if cwd is not None:
        command = f"cd -- {shlex.quote(cwd)} && exec {command}"
    return command


class _Stdin:
    """What a command reads on stdin: sent in one piece, then the channel's write side
    is shut, so that a remote program reading stdin sees its end."""

    def __init__(self, data: bytes) -> None:
        self.data = data


class _Lines(io.TextIOBase):
    """The out-stream of a followed command: decoded chunks go to a queue, nothing is
    kept (a follow may run for hours), and the end of stdout is marked with ``None``."""

    def __init__(self) -> None:
        super().__init__()
        self.chunks: queue.SimpleQueue[str | None] = queue.SimpleQueue()

    def write(self, text: str) -> int:
        if text:
            self.chunks.put(text)
        return len(text)

    def end(self) -> None:
        self.chunks.put(None)


class _Discard(list):  # type: ignore[type-arg]
    """A capture buffer that keeps nothing (invoke keeps every chunk by default)."""

    def append(self, item: Any) -> None:
        pass


class _Remote(Remote):
    """fabric's remote runner, with our stdin and out-stream handling."""

    def wait(self) -> None:
        """Block until the command ends (or an I/O thread died) without polling.

        invoke polls every 10 ms; paramiko sets the channel's status event on exit or
        close, so a controller following many devices sleeps instead.
        """
        while not (self.process_is_finished or self.has_dead_threads):
            self.channel.status_event.wait(_WAKE_S)

    def handle_stdin(self, input_: IO[Any], output: IO[Any], echo: bool = False) -> None:
        if isinstance(input_, _Stdin):
            if input_.data:
                self.channel.sendall(input_.data)
            self.close_proc_stdin()
            return
        super().handle_stdin(input_, output, echo)

    def handle_stdout(self, buffer_: list[str], hide: bool, output: IO[Any]) -> None:
        if not isinstance(output, _Lines):
            super().handle_stdout(buffer_, hide, output)
            return
        try:
            super().handle_stdout(_Discard(), hide, output)
        finally:
            output.end()


def _fabric_config() -> fabric.Config:
    """A fabric configuration that reads no file: no ssh_config, no fabric.yaml."""
    return fabric.Config(
        lazy=True,
        ssh_config=paramiko.SSHConfig(),
        overrides={
            "load_ssh_configs": False,
            "run": {"encoding": "utf-8", "pty": False, "echo": False, "warn": True},
            "runners": {"remote": _Remote},
        },
    )


class SSHTransport(Transport):
    """A ``fabric.Connection`` to one device."""

    def __init__(
        self,
        device: Any,
        *,
        accept_new_hostkeys: bool = False,
        connect_timeout_s: float = 10.0,
        keepalive_s: float = KEEPALIVE_S,
        retries: int = RETRIES,
        backoff_s: float = BACKOFF_S,
    ) -> None:
        super().__init__(device)
        self.connect_timeout_s = connect_timeout_s
        self._home: str | None = None
        self._conn = self._connect(accept_new_hostkeys, keepalive_s, retries, backoff_s)

    # ------------------------------------------------------------------ connection
    @property
    def _where(self) -> str:
        return f"{self.device.name} ({self.device.address})"

    def _connect(
        self, accept_new: bool, keepalive_s: float, retries: int, backoff_s: float
    ) -> fabric.Connection:
        delay = backoff_s
        for attempt in range(retries + 1):
            try:
                return self._connect_once(accept_new, keepalive_s)
            except _TransientConnectError:
                if attempt == retries:
                    raise
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def _connection(self) -> fabric.Connection:
        dev = self.device
        identity = Path(dev.identity_file) if dev.identity_file else None
        has_identity = identity is not None and identity.exists()
        t = self.connect_timeout_s
        connect_kwargs: dict[str, Any] = {
            "allow_agent": True,
            "look_for_keys": not has_identity,
            "timeout": t,
            "banner_timeout": t,
            "auth_timeout": t,
            "channel_timeout": t,
            "transport_factory": _FleetTransport,
        }
        if has_identity:
            connect_kwargs["key_filename"] = [str(identity)]
        return fabric.Connection(
            host=dev.host,
            user=dev.user,
            port=dev.port,
            config=_fabric_config(),
            forward_agent=False,
            connect_kwargs=connect_kwargs,
        )

    def _connect_once(self, accept_new: bool, keepalive_s: float) -> fabric.Connection:
        dev = self.device
        known_hosts = Path(dev.known_hosts)
        conn = self._connection()
        client = conn.client
        # fabric.Connection starts with paramiko's AutoAddPolicy, which would accept any
        # unknown key: our policy replaces it before anything connects.
        client.set_missing_host_key_policy(
            _AcceptNew(known_hosts) if accept_new else _RejectUnknown()
        )
        try:
            if known_hosts.exists():
                client.load_host_keys(str(known_hosts))
        except (OSError, paramiko.SSHException, ValueError) as exc:
            raise HostKeyError(
                f"{self._where}: cannot read known_hosts file {known_hosts}: {exc}",
                hint="fix or remove the malformed line",
            ) from exc
        try:
            conn.open()
        except _UnknownHostKey as exc:
            conn.close()
            keyscan = (
                f"ssh-keyscan -p {dev.port} {shlex.quote(dev.host)} >> "
                f"{shlex.quote(str(known_hosts))}"
            )
            raise HostKeyError(
                f"{self._where}: host key is not in {known_hosts} (the device offered "
                f"{exc.key.get_name()} {fingerprint(exc.key)}); refusing to connect",
                hint=f"check the fingerprint on the device, then add it with `{keyscan}`, "
                "or connect once with --accept-new-hostkeys",
            ) from None
        except paramiko.BadHostKeyException as exc:
            conn.close()
            raise HostKeyError(
                f"{self._where}: host key CHANGED: {known_hosts} has "
                f"{exc.expected_key.get_name()} {fingerprint(exc.expected_key)}, the device "
                f"offered {exc.key.get_name()} {fingerprint(exc.key)}; refusing to connect "
                "(nothing was run)",
                hint="if the board was reinstalled, remove the old key with `ssh-keygen -R "
                f"{shlex.quote(self._known_name())} -f {shlex.quote(str(known_hosts))}` and "
                "add the new one; otherwise someone may be intercepting the connection",
            ) from None
        except paramiko.AuthenticationException as exc:
            conn.close()
            raise ConnectError(
                f"{self._where}: authentication failed as {dev.user!r}: {exc}",
                hint=f"check `user` and `identity_file` ({dev.identity_file}) in the "
                "inventory, or load the key into ssh-agent; install the public key on the "
                "device with ssh-copy-id",
            ) from None
        except socket.gaierror as exc:
            conn.close()
            raise ConnectError(
                f"{self._where}: cannot resolve host {dev.host!r}: {exc}",
                hint="check `host` in the inventory",
            ) from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            conn.close()
            raise _TransientConnectError(
                f"{self._where}: cannot connect: {_describe(exc)}",
                hint="is the device powered, on the network and running sshd? "
                "`tslm-fleet doctor` checks every device",
            ) from None
        if conn.transport is not None:
            conn.transport.set_keepalive(int(max(1, keepalive_s)))
        return conn

    def _known_name(self) -> str:
        host = self.device.host
        return host if self.device.port == 22 else f"[{host}]:{self.device.port}"

    def _lost(self, exc: BaseException | None = None) -> ConnectError:
        detail = f": {_describe(exc)}" if exc is not None else ""
        return ConnectError(
            f"{self._where}: connection lost{detail}",
            hint="the device or the network dropped; reconnect and retry",
        )

    def _client_alive(self) -> bool:
        transport = self._conn.client.get_transport()
        return transport is not None and transport.is_active()

    def _check_alive(self) -> None:
        if not self._client_alive():
            raise self._lost()

    def close(self) -> None:
        try:
            self._conn.close()
        except Exception:
            pass

    # ------------------------------------------------------------------ commands
    def _timed_out(self, argv: Sequence[str], timeout_s: float | None) -> TransportError:
        return TransportError(
            f"{self.device.name}: `{shlex.join(argv)[:120]}` did not finish within {timeout_s:g} s"
        )

    def _failure(
        self, exc: BaseException, argv: Sequence[str], timeout_s: float | None
    ) -> TransportError:
        """Our error for what fabric/invoke raised while a command ran."""
        if isinstance(exc, invoke.CommandTimedOut):
            return self._timed_out(argv, timeout_s)
        if isinstance(exc, invoke.ThreadException):
            inner = next((e.value for e in exc.exceptions), None)
            return self._lost(inner)
        return self._lost(exc)

    def _exit_code(self, result: invoke.Result) -> int:
        # a channel closed under a dying connection ends without an exit status (-1)
        if result.exited == -1:
            self._check_alive()
        return int(result.exited)

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
        command = remote_command(argv, cwd=cwd, env=env)
        self._check_alive()
        try:
            res = self._conn.run(
                command, hide=True, in_stream=_Stdin(stdin or b""), timeout=timeout_s
            )
        except (invoke.CommandTimedOut, invoke.ThreadException) as exc:
            raise self._failure(exc, argv, timeout_s) from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise self._lost(exc) from None
        result = CommandResult(self._exit_code(res), res.stdout, res.stderr)
        if check and result.exit_code != 0:
            raise self.command_error(argv, result)
        return result

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
        """Yield the command's stdout line by line as it arrives.

        With ``idle_timeout_s``, a channel that delivers nothing for that long counts as a
        lost connection: a silent link (cable pulled, 100 % loss) never closes the TCP
        connection by itself, and paramiko's keepalives expect no reply.
        """
        command = remote_command(argv, cwd=cwd, env=env)
        self._check_alive()
        lines = _Lines()
        err = io.StringIO()
        try:
            promise = self._conn.run(
                command,
                asynchronous=True,
                hide=False,
                in_stream=_Stdin(b""),
                out_stream=lines,
                err_stream=err,
                timeout=timeout_s,
            )
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise self._lost(exc) from None
        finished = False
        try:
            yield from self._lines(lines, promise.runner.kill, idle_timeout_s)
            try:
                res = promise.join()
            except (invoke.CommandTimedOut, invoke.ThreadException) as exc:
                raise self._failure(exc, argv, timeout_s) from None
            except (OSError, EOFError, paramiko.SSHException) as exc:
                raise self._lost(exc) from None
            finally:
                finished = True
            code = self._exit_code(res)
        finally:
            if not finished:  # the consumer stopped early, or the link stalled
                promise.runner.kill()
                try:
                    promise.join()
                except Exception:
                    pass
        if check and code != 0:
            raise self.command_error(argv, CommandResult(code, "", err.getvalue()))

    def _lines(
        self, lines: _Lines, kill: Callable[[], None], idle_timeout_s: float | None
    ) -> Iterator[str]:
        pending = ""
        last_data = time.monotonic()
        while True:
            # sleeps until output arrives, the stream ends (None) or the link has been
            # silent for idle_timeout_s: a followed device costs no wake-ups of its own
            wait_s = None
            if idle_timeout_s is not None:
                wait_s = max(0.0, last_data + idle_timeout_s - time.monotonic())
            try:
                chunk = lines.chunks.get(timeout=wait_s)
            except queue.Empty:
                kill()
                raise ConnectError(
                    f"{self._where}: connection stalled: nothing received for {idle_timeout_s:g} s",
                    hint="the link to the device may be down; reconnect and retry",
                ) from None
            if chunk is None:
                break
            last_data = time.monotonic()
            pending += chunk
            *complete, pending = pending.split("\n")
            yield from complete
        if pending:
            yield pending

    # ------------------------------------------------------------------ files
    @property
    def sftp(self) -> paramiko.SFTPClient:
        try:
            return self._conn.sftp()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise self._lost(exc) from None

    def _file_error(self, what: str, path: str, exc: BaseException) -> TransportError:
        if isinstance(exc, EOFError) or not self._client_alive():
            return self._lost(exc)
        return TransportError(f"{self.device.name}: cannot {what} {path}: {_describe(exc)}")

    def home(self) -> str:
        if self._home is None:
            try:
                self._home = self.sftp.normalize(".")
            except (OSError, EOFError, paramiko.SSHException) as exc:
                raise self._file_error("find the home directory", "~", exc) from None
        return self._home

    def exists(self, remote: str) -> bool:
        path = self.resolve(remote)
        try:
            self.sftp.stat(path)
            return True
        except FileNotFoundError:
            return False
        except (OSError, EOFError, paramiko.SSHException) as exc:
            if isinstance(exc, OSError) and exc.errno == errno.ENOENT:
                return False
            raise self._file_error("stat", path, exc) from None

    def makedirs(self, remote: str) -> None:
        path = self.resolve(remote)
        parts = [p for p in path.split("/") if p]
        current = ""
        for part in parts:
            current = f"{current}/{part}"
            if self.exists(current):
                continue
            try:
                self.sftp.mkdir(current)
            except (OSError, EOFError, paramiko.SSHException) as exc:
                if not self.exists(current):
                    raise self._file_error("create directory", current, exc) from None

    def remove(self, remote: str, *, recursive: bool = False) -> None:
        path = self.resolve(remote)
        if recursive:
            self.run(["rm", "-rf", "--", path])
            return
        try:
            self.sftp.remove(path)
        except FileNotFoundError:
            pass
        except (OSError, EOFError, paramiko.SSHException) as exc:
            if isinstance(exc, OSError) and exc.errno == errno.ENOENT:
                return
            raise self._file_error("remove", path, exc) from None

    def listdir(self, remote: str) -> list[str]:
        path = self.resolve(remote)
        try:
            return sorted(self.sftp.listdir(path))
        except FileNotFoundError:
            return []
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise self._file_error("list", path, exc) from None

    def put(self, local: Path, remote: str, *, progress: ProgressCallback | None = None) -> None:
        path = self.resolve(remote)
        self.makedirs(posixpath.dirname(path))
        tmp = f"{path}.tmp-{secrets.token_hex(4)}"
        try:
            with open(local, "rb") as fh:
                source = _Progress(fh, Path(local).stat().st_size, progress)
                self._conn.put(source, tmp, preserve_mode=False)
            self.sftp.chmod(tmp, Path(local).stat().st_mode & 0o777)
            self.sftp.posix_rename(tmp, path)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            error = self._file_error("upload to", path, exc)
            if self._client_alive():
                try:
                    self.sftp.remove(tmp)
                except (OSError, EOFError, paramiko.SSHException):
                    pass
                # SFTP reports a full disk as a generic failure or a short file
                error = self._space_error(path, Path(local).stat().st_size) or error
            raise error from None

    def _space_error(self, path: str, size: int) -> TransportError | None:
        """The error for an upload that failed because the device's disk is full, if so."""
        folder = posixpath.dirname(path)
        try:
            res = self.run(["df", "-Pk", "--", folder], check=False, timeout_s=30)
            free = int(res.stdout.strip().splitlines()[-1].split()[3]) * 1024
        except (TransportError, ValueError, IndexError):
            return None
        if free >= size:
            return None
        return TransportError(
            f"{self.device.name}: no space left on the device for {path}: it needs "
            f"{size} bytes, {free} are free in {folder}",
            hint="free space on the device (old jobs, models and artifacts in the work "
            "directory) or point `workdir` at a larger disk",
        )


class _Progress(io.RawIOBase):
    """A file read through ``fabric.Transfer.put``, reporting bytes sent so far."""

    def __init__(self, fh: IO[bytes], size: int, progress: ProgressCallback | None) -> None:
        super().__init__()
        self._fh = fh
        self._size = size
        self._progress = progress
        self.name = getattr(fh, "name", "upload")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        if self._progress is not None:
            self._progress(self._fh.tell(), self._size)
        return data


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        return "connection refused"
    text = str(exc) or type(exc).__name__
    return text
