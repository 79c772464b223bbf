"""Boards booked through a real labgrid coordinator (started on loopback for this module).

Each run is ``tslm-fleet run`` on ``local`` devices that name labgrid places; someone
else (``alice``, through ``labgrid-client``) holds, forces and frees places. The lines
``lab: DEVICE: place PLACE KIND`` of the run's output are the events checked here.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("labgrid")

from orchestrator.lab.client import LabClient
from orchestrator.lab.errors import LabError, PlaceUnknownError
from testbed.labgrid import Coordinator
from testbed.models import save_tiny_model

pytestmark = pytest.mark.slow

ALICE = "alice"
_EVENT = re.compile(r"lab: (\S+): place (\S+) (\w+)")


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory):
    coord = Coordinator(tmp_path_factory.mktemp("coordinator"))
    yield coord
    coord.close()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("model") / "tiny-llama"
    save_tiny_model(target)
    return target


@pytest.fixture(scope="module")
def me(coordinator: Coordinator) -> str:
    with LabClient(coordinator.address) as client:
        return client.identity


class Lab:
    """One test's places, inventory, experiment and runs."""

    def __init__(self, tmp: Path, coordinator: Coordinator, tiny: Path, tag: str) -> None:
        self.tmp = tmp
        self.coordinator = coordinator
        self.places = {name: f"{tag}-{name}" for name in ("a", "b")}
        for place in self.places.values():
            coordinator.create_place(place)
        self.db = tmp / "results.db"
        devices = "".join(
            f"  {name}: {{transport: local, workdir: {tmp / ('work-' + name)}, "
            f"meter: {{kind: none}}, labgrid: {{place: {place}}}}}\n"
            for name, place in self.places.items()
        )
        (tmp / "inventory.yaml").write_text(
            f"defaults: {{labgrid: {{coordinator: '{coordinator.address}'}}}}\ndevices:\n{devices}"
        )
        self.experiment(tiny, queries=2)

    def experiment(self, tiny: Path, *, queries: int) -> None:
        (self.tmp / "exp.yaml").write_text(
            f"model: {tiny}\nvariants: [dense]\n"
            f"tasks:\n  - generate: {{num_queries: {queries}, max_new_tokens: 2}}\n"
            "repetitions: 1\nwarmup: 0\nidle_seconds: 0.2\n"
        )

    def args(self, devices: str, *extra: str) -> list[str]:
        return [
            sys.executable, "-m", "orchestrator", "run", "-d", devices, "-e", "exp.yaml",
            "--no-dashboard", "--db", f"sqlite:///{self.db}",
            "--cache-dir", str(self.tmp / "cache"), *extra,
        ]  # fmt: skip

    def run(self, devices: str, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.args(devices, *extra), cwd=self.tmp, capture_output=True, text=True, timeout=300
        )

    def start(self, devices: str, *extra: str) -> subprocess.Popen:
        out = (self.tmp / "run.out").open("w")
        return subprocess.Popen(
            self.args(devices, *extra), cwd=self.tmp, stdout=out, stderr=subprocess.STDOUT
        )

    def output(self) -> str:
        return (self.tmp / "run.out").read_text()

    def holder(self, device: str) -> str | None:
        with LabClient(self.coordinator.address) as client:
            return client.holder(self.places[device], sync=True)

    def sql(self, query: str) -> list[tuple]:
        with sqlite3.connect(self.db) as conn:
            return conn.execute(query).fetchall()

    def wait_for(self, query: str, timeout_s: float = 120) -> list[tuple]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                rows = self.sql(query)
            except sqlite3.OperationalError:
                rows = []
            if rows:
                return rows
            time.sleep(0.2)
        raise AssertionError(f"nothing matched in {timeout_s} s: {query}")


@pytest.fixture
def lab(request, tmp_path: Path, coordinator: Coordinator, tiny: Path) -> Lab:
    name = request.node.name.lower().removeprefix("test_")
    tag = re.sub(r"[^a-z0-9]+", "-", name)[:40].strip("-")
    return Lab(tmp_path, coordinator, tiny, tag)


def events(output: str) -> dict[str, list[str]]:
    """The lab events of a run's output, per device, in order."""
    found: dict[str, list[str]] = {}
    for device, _place, kind in _EVENT.findall(output):
        found.setdefault(device, []).append(kind)
    return found


def trials(lab: Lab) -> dict[str, tuple[str, str | None]]:
    rows = lab.sql(
        "select d.name, t.status, t.error from trials t join devices d on d.id = t.device_id"
    )
    return {name: (status, error) for name, status, error in rows}


# --------------------------------------------------------------------------- client


def test_client_errors_name_the_coordinator_and_the_place(coordinator: Coordinator) -> None:
    with pytest.raises(LabError, match=r"coordinator 127\.0\.0\.1:1 cannot be reached"):
        LabClient("127.0.0.1:1", connect_timeout_s=10)
    with (
        LabClient(coordinator.address) as client,
        pytest.raises(PlaceUnknownError, match="has no place 'no-such-place'"),
    ):
        client.holder("no-such-place")


def test_unreachable_coordinator_is_an_error_at_start(lab: Lab) -> None:
    inventory = lab.tmp / "inventory.yaml"
    inventory.write_text(inventory.read_text().replace(lab.coordinator.address, "127.0.0.1:1"))
    done = lab.run("a")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "labgrid coordinator 127.0.0.1:1 cannot be reached" in done.stderr
    assert "Traceback" not in done.stderr
    assert not lab.db.exists() or not lab.sql("select * from trials")


# --------------------------------------------------------------------------- runs


def test_free_place_and_a_place_freed_while_waiting(lab: Lab, me: str) -> None:
    lab.coordinator.hold(lab.places["b"], ALICE)
    proc = lab.start("a,b", "--place-wait", "120")
    deadline = time.monotonic() + 60
    while "place " + lab.places["b"] + " waiting" not in lab.output():
        assert time.monotonic() < deadline, lab.output()
        time.sleep(0.2)
    lab.coordinator.free(lab.places["b"], ALICE)  # alice lets go while b waits
    assert proc.wait(300) == 0, lab.output()
    got = events(lab.output())
    assert got["a"] == ["acquired", "released"]
    assert got["b"] == ["waiting", "acquired", "released"]
    assert lab.holder("a") is None and lab.holder("b") is None
    assert sorted(lab.sql("select device, holder, outcome from place_holds")) == [
        ("a", me, "released"),
        ("b", me, "released"),
    ]
    assert {s for s, _ in trials(lab).values()} == {"ok"}


def test_held_place_with_no_wait_skips_that_device_only(lab: Lab) -> None:
    lab.coordinator.hold(lab.places["b"], ALICE)
    done = lab.run("a,b", "--place-wait", "0")
    assert done.returncode == 1, done.stdout + done.stderr
    got = events(done.stdout)
    assert got["a"] == ["acquired", "released"]
    assert got["b"] == ["waiting", "skipped"]
    status = trials(lab)
    assert status["a"][0] == "ok"
    assert status["b"][0] == "stopped"
    assert f"place {lab.places['b']} is held by" in status["b"][1]
    assert f"/{ALICE}" in status["b"][1]
    assert lab.holder("b").endswith(f"/{ALICE}")  # never touched
    assert lab.sql("select status from runs") == [("partial",)]


def test_place_forced_mid_run_stops_that_device(lab: Lab, tiny: Path) -> None:
    lab.experiment(tiny, queries=400)
    proc = lab.start("a")
    lab.wait_for("select 1 from trials where status = 'running'")
    time.sleep(1.0)
    lab.coordinator.force(lab.places["a"], ALICE)
    assert proc.wait(300) == 1, lab.output()
    assert events(lab.output())["a"] == ["acquired", "lost"]
    status, error = trials(lab)["a"]
    assert status == "failed"
    assert "reservation lost" in error and f"/{ALICE}" in error
    assert lab.holder("a").endswith(f"/{ALICE}")  # the forced place stays with alice
    assert lab.sql("select outcome from place_holds") == [("lost",)]


def test_crash_then_resume_reuses_the_place(lab: Lab, me: str) -> None:
    proc = lab.start("a")
    lab.wait_for("select 1 from place_holds where released_at is null")
    proc.send_signal(signal.SIGKILL)  # the controller dies holding the place
    proc.wait(30)
    assert lab.holder("a") == me
    run_id = lab.sql("select id from runs")[0][0]
    acquired_at = lab.sql("select acquired_at from place_holds")
    done = lab.run("a", "--resume", run_id)
    assert done.returncode == 0, done.stdout + done.stderr
    assert events(done.stdout)["a"] == ["reused", "released"]
    assert lab.holder("a") is None
    assert lab.sql("select acquired_at from place_holds") == acquired_at  # acquired once
    assert lab.sql("select outcome from place_holds") == [("released",)]


def test_ctrl_c_releases_the_place(lab: Lab, tiny: Path) -> None:
    lab.experiment(tiny, queries=400)
    proc = lab.start("a")
    lab.wait_for("select 1 from trials where status = 'running'")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(300) == 130, lab.output()
    assert events(lab.output())["a"] == ["acquired", "released"]
    assert lab.holder("a") is None
    assert lab.sql("select outcome from place_holds") == [("released",)]


def test_ctrl_c_while_waiting_leaves_the_others_place_alone(lab: Lab) -> None:
    lab.coordinator.hold(lab.places["b"], ALICE)
    proc = lab.start("b", "--place-wait", "120")
    deadline = time.monotonic() + 60
    while f"place {lab.places['b']} waiting" not in lab.output():
        assert time.monotonic() < deadline, lab.output()
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(120) == 130, lab.output()
    assert events(lab.output())["b"] == ["waiting"]
    assert trials(lab)["b"][0] == "interrupted"
    assert lab.holder("b").endswith(f"/{ALICE}")
    assert lab.sql("select * from place_holds") == []


def test_lab_release_frees_the_runs_places_and_leaves_others(lab: Lab, me: str) -> None:
    proc = lab.start("a,b")
    lab.wait_for(
        "select n from (select count(*) as n from place_holds where released_at is null) "
        "where n = 2"
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    lab.coordinator.force(lab.places["b"], ALICE)  # someone takes b meanwhile
    run_id = lab.sql("select id from runs")[0][0]
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "lab", "release", run_id, "--db",
         f"sqlite:///{lab.db}"],
        cwd=lab.tmp, capture_output=True, text=True, timeout=120, env=dict(os.environ),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"a: released place {lab.places['a']}" in done.stdout
    assert f"/{ALICE}, not by this run; left as it is" in done.stdout
    assert lab.holder("a") is None
    assert lab.holder("b").endswith(f"/{ALICE}")
    assert sorted(lab.sql("select device, outcome from place_holds")) == [
        ("a", "released"),
        ("b", "gone"),
    ]
    places = subprocess.run(
        [sys.executable, "-m", "orchestrator", "lab", "places", "-x", lab.coordinator.address],
        cwd=lab.tmp, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert places.returncode == 0, places.stderr
    assert lab.places["b"] in places.stdout and ALICE in places.stdout
