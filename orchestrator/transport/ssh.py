"""SSH transport on paramiko, with strict host-key checking.

* Host keys are checked against the device's ``known_hosts``. An unknown key is refused
  (the message gives the ``ssh-keyscan`` line to add it) unless ``accept_new_hostkeys``,
  which appends it to that file; a *changed* key is always refused and nothing runs.
* Authentication: the inventory's ``identity_file`` when it exists, and the ssh-agent.
* Transient connection failures (refused, timed out, reset, no banner) are retried with
  exponential backoff; authentication and host-key failures are not.
* Commands are ``shlex.join``-ed argument lists, so no inventory value reaches the remote
  shell unquoted. Files move over SFTP (no shell involved).
"""

from __future__ import annotations

import base64
import codecs
import errno
import hashlib
import posixpath
import secrets
import select
import shlex
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import paramiko

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
#: the longest a quiet channel waits before the pump checks the connection again
_MAX_WAIT_S = 1.0
_CHUNK = 65536


def _wait_s(
    now: float, deadline: float | None, last_data: float, idle_timeout_s: float | None
) -> float:
    """How long a quiet channel may wait: until the deadline, the stall limit or
    :data:`_MAX_WAIT_S`, whichever comes first."""
    wait = _MAX_WAIT_S
    if deadline is not None:
        wait = min(wait, deadline - now)
    if idle_timeout_s is not None:
        wait = min(wait, last_data + idle_timeout_s - now)
    return max(wait, 0.0)


def _wait_readable(channel: paramiko.Channel, timeout_s: float) -> None:
    """Sleep until the channel has output, stderr, EOF or closes, or ``timeout_s`` passes.

    paramiko signals all of these on the channel's file descriptor, so a quiet channel
    costs no CPU: a controller follows many devices without polling each one.
    """
    try:
        select.select([channel], [], [], timeout_s)
    except (OSError, ValueError):  # closed under our feet: the caller sees it next
        time.sleep(min(timeout_s, 0.05))


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


class SSHTransport(Transport):
    """A paramiko connection to one device."""

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
        self._sftp: paramiko.SFTPClient | None = None
        self._home: str | None = None
        self._client = self._connect(accept_new_hostkeys, keepalive_s, retries, backoff_s)

    # ------------------------------------------------------------------ connection
    @property
    def _where(self) -> str:
        return f"{self.device.name} ({self.device.address})"

    def _connect(
        self, accept_new: bool, keepalive_s: float, retries: int, backoff_s: float
    ) -> paramiko.SSHClient:
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

    def _connect_once(self, accept_new: bool, keepalive_s: float) -> paramiko.SSHClient:
        dev = self.device
        known_hosts = Path(dev.known_hosts)
        client = paramiko.SSHClient()
        try:
            if known_hosts.exists():
                client.load_host_keys(str(known_hosts))
        except (OSError, paramiko.SSHException, ValueError) as exc:
            raise HostKeyError(
                f"{self._where}: cannot read known_hosts file {known_hosts}: {exc}",
                hint="fix or remove the malformed line",
            ) from exc
        client.set_missing_host_key_policy(
            _AcceptNew(known_hosts) if accept_new else _RejectUnknown()
        )
        identity = Path(dev.identity_file) if dev.identity_file else None
        has_identity = identity is not None and identity.exists()
        t = self.connect_timeout_s
        try:
            client.connect(
                hostname=dev.host,
                port=dev.port,
                username=dev.user,
                key_filename=str(identity) if has_identity else None,
                allow_agent=True,
                look_for_keys=not has_identity,
                timeout=t,
                banner_timeout=t,
                auth_timeout=t,
                channel_timeout=t,
            )
        except _UnknownHostKey as exc:
            client.close()
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
            client.close()
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
            client.close()
            raise ConnectError(
                f"{self._where}: authentication failed as {dev.user!r}: {exc}",
                hint=f"check `user` and `identity_file` ({identity}) in the inventory, or "
                "load the key into ssh-agent; install the public key on the device with "
                "ssh-copy-id",
            ) from None
        except socket.gaierror as exc:
            client.close()
            raise ConnectError(
                f"{self._where}: cannot resolve host {dev.host!r}: {exc}",
                hint="check `host` in the inventory",
            ) from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            client.close()
            raise _TransientConnectError(
                f"{self._where}: cannot connect: {_describe(exc)}",
                hint="is the device powered, on the network and running sshd? "
                "`tslm-fleet doctor` checks every device",
            ) from None
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(int(max(1, keepalive_s)))
        return client

    def _known_name(self) -> str:
        host = self.device.host
        return host if self.device.port == 22 else f"[{host}]:{self.device.port}"

    def _lost(self, exc: BaseException | None = None) -> ConnectError:
        detail = f": {_describe(exc)}" if exc is not None else ""
        return ConnectError(
            f"{self._where}: connection lost{detail}",
            hint="the device or the network dropped; reconnect and retry",
        )

    @property
    def _transport(self) -> paramiko.Transport:
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise self._lost()
        return transport

    def close(self) -> None:
        if self._sftp is not None:
            try:
                self._sftp.close()
            except Exception:
                pass
            self._sftp = None
        self._client.close()

    # ------------------------------------------------------------------ commands
    def _start(
        self,
        argv: Sequence[str],
        cwd: str | None,
        env: Mapping[str, str] | None,
        stdin: bytes | None,
    ) -> paramiko.Channel:
        command = remote_command(argv, cwd=cwd, env=env)
        try:
            channel = self._transport.open_session(timeout=self.connect_timeout_s)
            channel.exec_command(command)
            if stdin:
                channel.sendall(stdin)
            channel.shutdown_write()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise self._lost(exc) from None
        channel.setblocking(False)
        return channel

    def _pump(
        self,
        channel: paramiko.Channel,
        deadline: float | None,
        argv: Sequence[str],
        timeout_s: float | None,
        err: bytearray,
        idle_timeout_s: float | None = None,
    ) -> Iterator[bytes]:
        """Yield stdout chunks until EOF, collecting stderr; raise on drop or timeout.

        With ``idle_timeout_s``, a channel that delivers nothing for that long counts as a
        lost connection: a silent link (cable pulled, 100 % loss) never closes the TCP
        connection by itself, and paramiko's keepalives expect no reply.
        """
        last_data = time.monotonic()
        while True:
            got = False
            while channel.recv_stderr_ready():
                err += channel.recv_stderr(_CHUNK)
                got = True
            if channel.recv_ready():
                data = channel.recv(_CHUNK)
                got = True
                if data:
                    yield data
            if (
                channel.eof_received
                and not channel.recv_ready()
                and not channel.recv_stderr_ready()
            ):
                return
            if channel.closed and not channel.exit_status_ready():
                raise self._lost()
            if got:
                last_data = time.monotonic()
            else:
                now = time.monotonic()
                if deadline is not None and now > deadline:
                    channel.close()
                    raise TransportError(
                        f"{self.device.name}: `{shlex.join(argv)[:120]}` "
                        f"did not finish within {timeout_s:g} s"
                    )
                if idle_timeout_s is not None and now - last_data > idle_timeout_s:
                    channel.close()
                    raise ConnectError(
                        f"{self._where}: connection stalled: nothing received for "
                        f"{idle_timeout_s:g} s",
                        hint="the link to the device may be down; reconnect and retry",
                    )
                transport = self._client.get_transport()
                if transport is None or not transport.is_active():
                    raise self._lost()
                _wait_readable(channel, _wait_s(now, deadline, last_data, idle_timeout_s))

    def _exit_code(self, channel: paramiko.Channel, deadline: float | None) -> int:
        while not channel.exit_status_ready():
            transport = self._client.get_transport()
            if channel.closed or transport is None or not transport.is_active():
                raise self._lost()
            if deadline is not None and time.monotonic() > deadline:
                raise TransportError(f"{self.device.name}: no exit status from the device")
            channel.status_event.wait(_MAX_WAIT_S)
        return channel.recv_exit_status()

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
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        channel = self._start(argv, cwd, env, stdin)
        out, err = bytearray(), bytearray()
        try:
            for chunk in self._pump(channel, deadline, argv, timeout_s, err):
                out += chunk
            code = self._exit_code(channel, deadline)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise self._lost(exc) from None
        finally:
            channel.close()
        result = CommandResult(code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))
        if check and code != 0:
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
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        channel = self._start(argv, cwd, env, None)
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        err = bytearray()
        pending = ""
        try:
            for chunk in self._pump(channel, deadline, argv, timeout_s, err, idle_timeout_s):
                pending += decoder.decode(chunk)
                *lines, pending = pending.split("\n")
                yield from lines
            pending += decoder.decode(b"", final=True)
            if pending:
                yield pending
            code = self._exit_code(channel, deadline)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise self._lost(exc) from None
        finally:
            channel.close()
        if check and code != 0:
            raise self.command_error(argv, CommandResult(code, "", err.decode("utf-8", "replace")))

    # ------------------------------------------------------------------ files
    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            try:
                self._sftp = self._client.open_sftp()
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise self._lost(exc) from None
        return self._sftp

    def _file_error(self, what: str, path: str, exc: BaseException) -> TransportError:
        if isinstance(exc, EOFError) or not self._client_alive():
            return self._lost(exc)
        return TransportError(f"{self.device.name}: cannot {what} {path}: {_describe(exc)}")

    def _client_alive(self) -> bool:
        transport = self._client.get_transport()
        return transport is not None and transport.is_active()

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
            self.sftp.put(str(local), tmp, callback=progress, confirm=True)
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


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        return "connection refused"
    text = str(exc) or type(exc).__name__
    return text
