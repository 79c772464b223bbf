"""The ``local`` transport: the controller itself is the device.

Same interface as SSH, implemented with subprocesses (never a shell) and plain file
operations; the agent's work directory is a local folder.
"""

from __future__ import annotations

import os
import secrets
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator.transport.base import (
    DEFAULT_COMMAND_TIMEOUT_S,
    CommandResult,
    ProgressCallback,
    Transport,
)
from orchestrator.transport.errors import ConnectError, TransportError

_CHUNK = 1 << 20


class LocalTransport(Transport):
    """Runs commands as subprocesses of the controller."""

    def __init__(
        self, device: Any, *, accept_new_hostkeys: bool = False, connect_timeout_s: float = 10.0
    ) -> None:
        super().__init__(device)

    def _env(self, env: Mapping[str, str] | None) -> dict[str, str] | None:
        return None if not env else {**os.environ, **env}

    def _cwd(self, cwd: str | None) -> str:
        return self.resolve(cwd) if cwd is not None else self.home()

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
        args = [str(a) for a in argv]
        try:
            proc = subprocess.run(
                args,
                input=stdin if stdin is not None else b"",
                capture_output=True,
                timeout=timeout_s,
                cwd=self._cwd(cwd),
                env=self._env(env),
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise TransportError(
                f"{self.device.name}: `{' '.join(args)[:120]}` did not "
                f"finish within {timeout_s:g} s"
            ) from exc
        except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
            # report like a shell would, so callers handle both transports alike
            result = CommandResult(
                127 if isinstance(exc, FileNotFoundError) else 126,
                "",
                f"{args[0] if args else ''}: {exc.strerror}",
            )
        else:
            result = CommandResult(
                proc.returncode,
                proc.stdout.decode("utf-8", "replace"),
                proc.stderr.decode("utf-8", "replace"),
            )
        if check and result.exit_code != 0:
            raise self.command_error(args, result)
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
        args = [str(a) for a in argv]
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    cwd=self._cwd(cwd),
                    env=self._env(env),
                )
            except (FileNotFoundError, PermissionError) as exc:
                result = CommandResult(127, "", f"{args[0]}: {exc.strerror}")
                if check:
                    raise self.command_error(args, result) from exc
                return
            assert proc.stdout is not None
            buffer = b""
            last_data = time.monotonic()
            try:
                while True:
                    ready, _, _ = select.select([proc.stdout], [], [], 0.2)
                    if ready:
                        chunk = os.read(proc.stdout.fileno(), 65536)
                        if not chunk:
                            break
                        last_data = time.monotonic()
                        buffer += chunk
                        *lines, buffer = buffer.split(b"\n")
                        for line in lines:
                            yield line.decode("utf-8", "replace")
                    elif deadline is not None and time.monotonic() > deadline:
                        raise TransportError(
                            f"{self.device.name}: `{' '.join(args)[:120]}` "
                            f"did not finish within {timeout_s:g} s"
                        )
                    elif (
                        idle_timeout_s is not None and time.monotonic() - last_data > idle_timeout_s
                    ):
                        raise ConnectError(
                            f"{self.device.name}: `{' '.join(args)[:120]}` "
                            f"printed nothing for {idle_timeout_s:g} s"
                        )
                if buffer:
                    yield buffer.decode("utf-8", "replace")
                code = proc.wait()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                proc.stdout.close()
            if check and code != 0:
                err.seek(0)
                stderr = err.read().decode("utf-8", "replace")
                raise self.command_error(args, CommandResult(code, "", stderr))

    def put(self, local: Path, remote: str, *, progress: ProgressCallback | None = None) -> None:
        target = Path(self.resolve(remote))
        tmp = target.with_name(f"{target.name}.tmp-{secrets.token_hex(4)}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            total = Path(local).stat().st_size
            done = 0
            with open(local, "rb") as src, open(tmp, "wb") as dst:
                while chunk := src.read(_CHUNK):
                    dst.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
                dst.flush()
                os.fsync(dst.fileno())
            shutil.copymode(local, tmp)
            os.replace(tmp, target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise TransportError(
                f"{self.device.name}: cannot copy {local} to {target}: {exc.strerror or exc}"
            ) from exc

    def home(self) -> str:
        return str(Path.home())

    def exists(self, remote: str) -> bool:
        return os.path.lexists(self.resolve(remote))

    def makedirs(self, remote: str) -> None:
        try:
            Path(self.resolve(remote)).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TransportError(
                f"{self.device.name}: cannot create directory "
                f"{self.resolve(remote)}: {exc.strerror or exc}"
            ) from exc

    def remove(self, remote: str, *, recursive: bool = False) -> None:
        path = Path(self.resolve(remote))
        try:
            if recursive and path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        except OSError as exc:
            raise TransportError(
                f"{self.device.name}: cannot remove {path}: {exc.strerror or exc}"
            ) from exc

    def listdir(self, remote: str) -> list[str]:
        try:
            return sorted(os.listdir(self.resolve(remote)))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise TransportError(
                f"{self.device.name}: cannot list {self.resolve(remote)}: {exc.strerror or exc}"
            ) from exc

    def close(self) -> None:
        """Nothing to close: the local transport holds no connection."""
