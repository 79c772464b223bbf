"""A throwaway labgrid coordinator on loopback, and other lab users at its places.

:class:`Coordinator` runs the real ``labgrid-coordinator`` (from the ``labgrid`` extra)
on a free loopback port, in a directory of its own (it keeps ``places.yaml`` in its
working directory). :meth:`Coordinator.client` runs ``labgrid-client`` against it as any
user, so a test can hold, force and release places as someone else would.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

#: how long the coordinator may take to answer after it starts
START_TIMEOUT_S = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tool(name: str) -> str:
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} is not installed (pip install 'tslm-fleet[labgrid]')")
    return found


class Coordinator:
    """A running labgrid coordinator; ``address`` is ``127.0.0.1:PORT``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = workdir / "coordinator.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [_tool("labgrid-coordinator"), "--listen", self.address],
            cwd=workdir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"labgrid-coordinator exited: {self.log_path.read_text()}")
            if self.client("places", check=False).returncode == 0:
                return
            time.sleep(0.3)
        raise RuntimeError(f"labgrid-coordinator did not answer in {START_TIMEOUT_S:g} s")

    def client(
        self, *args: str, user: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        """``labgrid-client -x ADDRESS ARGS...``, as ``user`` when given."""
        env = dict(os.environ)
        env.pop("LG_PLACE", None)
        if user is not None:
            env["LG_USERNAME"] = user
        done = subprocess.run(
            [_tool("labgrid-client"), "-x", self.address, *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"labgrid-client {' '.join(args)}: {done.stdout}{done.stderr}")
        return done

    def create_place(self, name: str) -> None:
        self.client("-p", name, "create")

    def hold(self, place: str, user: str) -> None:
        """``user`` acquires ``place``."""
        self.client("-p", place, "acquire", user=user)

    def force(self, place: str, user: str) -> None:
        """``user`` takes ``place`` from whoever holds it (release --kick, then acquire)."""
        self.client("-p", place, "release", "--kick", user=user)
        self.hold(place, user)

    def free(self, place: str, user: str) -> None:
        """``user`` releases ``place`` (kicking whoever holds it)."""
        self.client("-p", place, "release", "--kick", user=user)

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self._log.close()
