"""Security of the fleet: host keys, hostile inventory values, read-only queries, paths
that try to leave the work directory, and secrets that must never be stored or logged."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
from pathlib import Path

import pytest

from orchestrator.inventory import load_inventory
from orchestrator.transport import open_transport
from testbed.fleet import VENV_PYTHON, FakeDevice
from tests.fleet.harness import (
    cli,
    db_rows,
    device_jobs,
    process_alive,
    run_args,
    run_id_of,
    trials,
    write_experiment,
)

pytestmark = [pytest.mark.fleet]

SHORT = (("generate", {"num_queries": 2, "max_new_tokens": 3}),)


def user_processes(device: FakeDevice) -> list[int]:
    uid = str(device.uid)
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            uids = next((ln.split()[1:] for ln in status.splitlines() if ln.startswith("Uid:")), [])
            if uid in uids and process_alive(int(entry.name)):
                found.append(int(entry.name))
    return found


@pytest.mark.timeout(120)
def test_changed_host_key_is_refused_and_nothing_runs(
    fleet_factory, tiny_model: Path, tmp_path: Path
) -> None:
    fleet = fleet_factory(1)
    device = fleet["pi4"]
    device.regenerate_host_key()  # reinstalled board, or someone in the middle
    exp = write_experiment(tmp_path / "exp.yaml", tiny_model, tasks=SHORT)
    db = f"sqlite:///{tmp_path / 'r.db'}"
    run = cli(*run_args(fleet, "pi4", exp, db, tmp_path / "cache"), cwd=tmp_path)
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert "Traceback" not in out
    assert "pi4" in out and "host key CHANGED" in out and "refusing to connect" in out
    assert not (device.home / ".tslm").exists()  # no work dir, no job, no bundle
    assert user_processes(device) == []
    (trial,) = trials(db, run_id_of(run.stdout))
    assert trial["status"] == "failed" and "host key CHANGED" in trial["error"]


HOSTILE = ["; touch {m}", "$(touch {m})", "`touch {m}`", " && touch {m} ", "\ntouch {m}\n"]


@pytest.mark.timeout(240)
def test_hostile_inventory_values_do_not_inject_commands(
    fleet_factory, tiny_model: Path, tmp_path: Path
) -> None:
    marker = Path(f"/tmp/tslm-injected-{secrets.token_hex(4)}")
    values = [v.format(m=marker) for v in HOSTILE]
    fleet = fleet_factory(3, names=["pi4", "pi5", "pi3"])
    hostile = "x" + "".join(values)
    fleet.write_inventory(
        overrides={
            "pi4": {"workdir": f"~/w {hostile}"},
            "pi5": {"python": f"{VENV_PYTHON}{hostile}"},
            "pi3": {"meter": {"kind": "um25c", "port": f"/dev/ttyX{hostile}"}},
        }
    )
    exp = write_experiment(tmp_path / "exp.yaml", tiny_model, tasks=SHORT)
    db = f"sqlite:///{tmp_path / 'r.db'}"
    run = cli(*run_args(fleet, "pi4,pi5,pi3", exp, db, tmp_path / "cache"), cwd=tmp_path)
    out = run.stdout + run.stderr
    assert "Traceback" not in out
    assert not marker.exists(), "an inventory value reached a shell"
    for device in fleet.devices:
        assert not (device.home / marker.name).exists()
    status = {t["device"]: t["status"] for t in trials(db, run_id_of(run.stdout))}
    # a strange but legal work directory is just a directory name
    assert status["pi4"] == "ok", out[-3000:]
    assert (fleet["pi4"].home / f"w {hostile}" / "jobs").is_dir()
    assert status["pi5"] == "failed" and status["pi3"] == "failed"


def valid_spec() -> dict:
    """A valid job spec as a dict (tests then break one field)."""
    from agent.protocol import FileRef, JobSpec, MeterSpec, TaskSpec, WindowPolicy

    return JobSpec(
        job_id="escape",
        run_id="r",
        model=FileRef(path="models/m", sha256="0" * 64),
        model_name="m",
        artifact=None,
        variant="dense",
        embedding_mode="on-the-fly",
        tasks=(TaskSpec(name="generate", params={}),),
        repetitions=1,
        warmup=0,
        idle_seconds=0.0,
        window=WindowPolicy(min_fresh_samples=10, min_seconds=0.0),
        threads=None,
        meter=MeterSpec(kind="none", options={}),
        max_duration_s=60.0,
        seq_start=1,
    ).to_dict()


def _filled_store(url: str) -> None:
    from db.store import open_store

    store = open_store(url)
    try:
        store.create_run("r1", {"model": "m"}, "inventory.yaml", model="m", tool_version="t")
    finally:
        store.close()


WRITES = [
    "DELETE FROM runs",
    "UPDATE runs SET status = 'failed'",
    "INSERT INTO devices (name) VALUES ('evil')",
    "DROP TABLE runs",
    "CREATE TABLE evil (x INTEGER)",
    "SELECT 1; DELETE FROM runs",
]


def _check_query_cannot_write(url: str, cwd: Path, query_url: str | None = None) -> None:
    _filled_store(url)
    before = db_rows(url, "SELECT id, status FROM runs")
    for sql in WRITES:
        res = cli("query", "--db", query_url or url, sql, cwd=cwd)
        assert res.returncode != 0, (sql, res.stdout)
        assert "Traceback" not in res.stdout + res.stderr, res.stderr
    assert db_rows(url, "SELECT id, status FROM runs") == before
    assert db_rows(url, "SELECT name FROM devices WHERE name = 'evil'") == []


@pytest.mark.timeout(120)
def test_query_cannot_write_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    _check_query_cannot_write(url, tmp_path)
    # nor create other files through the read-only connection
    for sql in ("ATTACH DATABASE '{f}' AS x", "VACUUM INTO '{f}'"):
        target = tmp_path / f"new-{len(sql)}.db"
        res = cli("query", "--db", url, sql.format(f=target), cwd=tmp_path)
        assert res.returncode != 0 and not target.exists(), sql


@pytest.mark.postgres
@pytest.mark.timeout(120)
def test_query_cannot_write_postgresql(postgres_url: str, tmp_path: Path) -> None:
    """As a reader role (the superuser is refused outright: tests/db/test_query_roles.py)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from db.roles import create_reader
    from db.store import open_store

    open_store(postgres_url).close()  # the schema, so that the reader may read its tables
    engine = create_engine(postgres_url)
    try:
        create_reader(engine, "security_reader")
        reader = make_url(postgres_url).set(username="security_reader")
        _check_query_cannot_write(
            postgres_url, tmp_path, reader.render_as_string(hide_password=False)
        )
    finally:
        with engine.connect() as conn:
            conn.execute(text("DROP OWNED BY security_reader"))
            conn.execute(text("DROP ROLE security_reader"))
            conn.commit()
        engine.dispose()


@pytest.mark.timeout(180)
def test_paths_leaving_the_work_directory_are_refused(fleet_factory, tmp_path: Path) -> None:
    from orchestrator.bundle import build_bundle
    from orchestrator.deploy import PushItem, RemoteLayout, deploy_files
    from tasks.errors import ConfigError
    from tasks.hashing import sha256_file, sha256_path

    fleet = fleet_factory(1)
    device = fleet["pi4"]
    inv = load_inventory(fleet.inventory_path).devices["pi4"]
    bundle = build_bundle(tmp_path / "bundles")
    (device.home / "outside").write_text("not yours")
    with open_transport(inv) as transport:
        rel = RemoteLayout.bundle_path(bundle.sha256)
        deploy_files(transport, [PushItem(bundle.path, rel, bundle.sha256)])
        with pytest.raises(ConfigError, match=r"\.\."):
            deploy_files(transport, [PushItem(bundle.path, "../escape.pyz", bundle.sha256)])
        workdir = transport.workdir()

        def agent_run(spec: dict) -> subprocess.CompletedProcess:
            local = tmp_path / "job.json"
            local.write_text(json.dumps(spec))
            transport.put(local, f"{workdir}/incoming/job.json")
            res = transport.run(
                [
                    str(VENV_PYTHON),
                    f"{workdir}/{rel}",
                    "--workdir",
                    workdir,
                    "run",
                    f"{workdir}/incoming/job.json",
                ],
                check=False,
                timeout_s=120,
            )
            return subprocess.CompletedProcess([], res.exit_code, res.stdout, res.stderr)

        spec = valid_spec()
        spec["model"]["path"] = "../outside"
        res = agent_run(spec)
        assert res.returncode == 2, res.stdout + res.stderr
        assert "leaves the agent's work directory" in res.stderr
        assert "Traceback" not in res.stderr

        # an artifact whose manifest lists a file outside its directory
        art = tmp_path / "art"
        art.mkdir()
        manifest = {
            "format": "tslm-embedding-artifact",
            "format_version": 1,
            "method": "tt",
            "params": {},
            "files": {
                "../../outside": {"sha256": "0" * 64},
                "cores.safetensors": {"sha256": "0" * 64},
            },
        }
        (art / "manifest.json").write_text(json.dumps(manifest))
        (art / "cores.safetensors").write_bytes(b"x")
        for name in ("manifest.json", "cores.safetensors"):
            transport.put(art / name, f"{workdir}/artifacts/evil/{name}")
        model_dir = tmp_path / "model"
        model_dir.mkdir()
        (model_dir / "config.json").write_text("{}")
        transport.put(model_dir / "config.json", f"{workdir}/models/m/config.json")
        spec = valid_spec()
        spec.update(
            job_id="escape-artifact",
            variant="tt:rank=2",
            model={"path": "models/m", "sha256": sha256_path(model_dir)},
            artifact={"path": "artifacts/evil", "sha256": sha256_file(art / "manifest.json")},
        )
        res = agent_run(spec)
        assert res.returncode != 0
        assert (
            "../../outside" in res.stdout + res.stderr and "not allowed" in res.stdout + res.stderr
        ), res.stdout[-2000:] + res.stderr[-2000:]
    assert (device.home / "outside").read_text() == "not yours"


@pytest.mark.timeout(240)
def test_secrets_never_reach_the_database_or_the_logs(
    fleet_factory, tiny_model: Path, tmp_path: Path
) -> None:
    secret = f"TSLMSECRET{secrets.token_hex(8)}"
    fleet = fleet_factory(1)
    device = fleet["pi4"]
    # a key whose comment (stored inside the private key file) is the secret
    key = device.dir / "id_secret"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", secret, "-f", str(key)], check=True
    )
    authorized = device.home / ".ssh" / "authorized_keys"
    authorized.write_text(key.with_suffix(".pub").read_text())
    fleet.write_inventory(overrides={"pi4": {"identity_file": str(key)}})
    key_lines = [ln for ln in key.read_text().splitlines() if "PRIVATE KEY" not in ln]
    needles = {secret, base64.b64encode(secret.encode()).decode()[:16], *key_lines}
    exp = write_experiment(tmp_path / "exp.yaml", tiny_model, tasks=SHORT)
    db_path = tmp_path / "r.db"
    run = cli(
        *run_args(fleet, "pi4", exp, f"sqlite:///{db_path}", tmp_path / "cache"),
        cwd=tmp_path,
        env={"TSLM_TEST_PASSWORD": secret, "SSH_PASSPHRASE": secret},
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    haystacks = {"stdout": run.stdout.encode(), "stderr": run.stderr.encode()}
    for path in tmp_path.glob("r.db*"):
        haystacks[path.name] = path.read_bytes()
    for job in device_jobs(device):
        for path in job.iterdir():
            if path.is_file():
                haystacks[f"{job.name}/{path.name}"] = path.read_bytes()
    assert len(haystacks) > 4
    for name, data in haystacks.items():
        for needle in needles:
            assert needle.encode() not in data, f"{needle[:12]}... found in {name}"
