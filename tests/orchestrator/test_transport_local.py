"""The local transport, the shared Transport helpers and SSH command quoting (real shell)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.inventory import parse_inventory
from orchestrator.transport import open_transport
from orchestrator.transport.errors import RemoteCommandError, TransportError
from orchestrator.transport.local import LocalTransport
from orchestrator.transport.ssh import remote_command

HOSTILE = [
    "a b",
    "'quoted'",
    '"dq"',
    "$(touch {m})",
    "`touch {m}`",
    "; touch {m}",
    "x\ny",
    "*",
    "~",
    "$HOME",
    "-n",
    "ü€",
    "\\",
    "&& touch {m} &",
]


def local_device(tmp_path: Path, *, python: str | None = None, workdir: str | None = None):
    extra = f", python: '{python}'" if python else ""
    wd = workdir or str(tmp_path / "wd")
    inv = parse_inventory(f"devices:\n  here: {{transport: local, workdir: '{wd}'{extra}}}\n")
    return inv["here"]


@pytest.fixture
def transport(tmp_path: Path) -> LocalTransport:
    t = open_transport(local_device(tmp_path))
    assert isinstance(t, LocalTransport)
    return t


def test_run_returns_exit_status_and_output(transport: LocalTransport) -> None:
    res = transport.run(
        [
            sys.executable,
            "-c",
            "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)",
        ],
        check=False,
    )
    assert (res.exit_code, res.stdout, res.stderr) == (3, "out\n", "err\n")
    with pytest.raises(RemoteCommandError) as info:
        transport.run([sys.executable, "-c", "import sys; sys.exit('boom')"])
    assert info.value.exit_code == 1 and "boom" in info.value.message
    assert "here:" in info.value.message


def test_run_passes_stdin_env_and_cwd(transport: LocalTransport, tmp_path: Path) -> None:
    res = transport.run(
        [
            sys.executable,
            "-c",
            "import os, sys; print(sys.stdin.read(), os.environ['TSLM_X'], os.getcwd())",
        ],
        stdin=b"hello",
        env={"TSLM_X": "v w"},
        cwd=str(tmp_path),
    )
    assert res.stdout.split() == ["hello", "v", "w", str(tmp_path)]


def test_missing_program_looks_like_a_shell_127(transport: LocalTransport) -> None:
    res = transport.run(["/nonexistent/tslm-prog"], check=False)
    assert res.exit_code == 127
    with pytest.raises(RemoteCommandError) as info:
        transport.run(["/nonexistent/tslm-prog"])
    assert info.value.hint and "doctor" in info.value.hint


def test_timeout_raises_transport_error(transport: LocalTransport) -> None:
    started = time.monotonic()
    with pytest.raises(TransportError, match=r"did not finish within 0\.3 s"):
        transport.run(["sleep", "5"], timeout_s=0.3)
    assert time.monotonic() - started < 3


def test_stream_yields_lines_as_they_arrive(transport: LocalTransport) -> None:
    started = time.monotonic()
    lines = transport.stream(["sh", "-c", "echo one; sleep 1; printf 'two\\nthree'"])
    assert next(lines) == "one"
    assert time.monotonic() - started < 0.9
    assert list(lines) == ["two", "three"]
    with pytest.raises(RemoteCommandError):
        list(transport.stream(["sh", "-c", "echo x; exit 4"]))
    assert list(transport.stream(["sh", "-c", "echo x; exit 4"], check=False)) == ["x"]


def test_paths_resolve_against_home_never_a_shell(transport: LocalTransport) -> None:
    home = str(Path.home())
    assert transport.resolve("~") == home
    assert transport.resolve("~/a/b") == f"{home}/a/b"
    assert transport.resolve("rel/x") == f"{home}/rel/x"
    assert transport.resolve("/abs/~/x") == "/abs/~/x"
    assert transport.resolve("~user/x") == f"{home}/~user/x"


def test_put_sha256_exists_listdir_remove(transport: LocalTransport, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 3_000_000)
    seen: list[tuple[int, int]] = []
    target = str(tmp_path / "wd" / "deep" / "file.bin")
    transport.put(src, target, progress=lambda done, total: seen.append((done, total)))
    assert Path(target).read_bytes() == src.read_bytes()
    assert seen[-1] == (3_000_000, 3_000_000) and len(seen) >= 2
    assert transport.sha256(target) == hashlib.sha256(src.read_bytes()).hexdigest()
    assert transport.sha256(str(tmp_path / "missing")) is None
    assert transport.listdir(str(tmp_path / "wd" / "deep")) == ["file.bin"]  # no temp left
    assert transport.listdir(str(tmp_path / "nothing")) == []
    transport.remove(target)
    transport.remove(target)  # missing is fine
    assert not transport.exists(target)
    transport.makedirs(str(tmp_path / "wd" / "t" / "u"))
    transport.remove(str(tmp_path / "wd" / "t"), recursive=True)
    assert not (tmp_path / "wd" / "t").exists()


def test_sha256_falls_back_to_sha256sum_without_the_device_python(tmp_path: Path) -> None:
    t = open_transport(local_device(tmp_path, python="/nonexistent/venv/bin/python3"))
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    got = t.sha256_many([str(f), str(tmp_path / "nope")])
    assert got == {str(f): hashlib.sha256(b"abc").hexdigest(), str(tmp_path / "nope"): None}


def test_failed_put_leaves_no_temporary_file(transport: LocalTransport, tmp_path: Path) -> None:
    (tmp_path / "wd").mkdir()
    blocker = tmp_path / "wd" / "dir"
    blocker.mkdir()
    (blocker / "child").write_text("keeps the directory non-empty")
    src = tmp_path / "s"
    src.write_text("data")
    with pytest.raises(TransportError, match="cannot copy"):
        transport.put(src, str(blocker))  # cannot replace a non-empty directory
    assert sorted(p.name for p in (tmp_path / "wd").iterdir()) == ["dir"]


# --------------------------------------------------------------------------- quoting


def test_remote_command_quotes_every_argument_for_a_real_shell(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    args = [a.format(m=marker) for a in HOSTILE]
    workdir = tmp_path / f"w d; touch {marker}"
    workdir.mkdir(parents=True)
    argv = [
        sys.executable,
        "-c",
        "import json, os, sys; print(json.dumps([os.getcwd(), "
        "os.environ['TSLM_V'], *sys.argv[1:]]))",
        *args,
    ]
    line = remote_command(argv, cwd=str(workdir), env={"TSLM_V": f"$(touch {marker})"})
    out = subprocess.run(["sh", "-c", line], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [str(workdir), f"$(touch {marker})", *args]
    assert not marker.exists()


def test_remote_command_refuses_an_empty_argv() -> None:
    with pytest.raises(TransportError):
        remote_command([])
