"""Fault matrix, network half: what the links and SSH servers of a lab do to a run.

Every test injects one fault into a real ``tslm-fleet run`` against real sshd devices,
then checks the run's and trials' statuses and that every query event the devices wrote
in their journals is in the database exactly once (:func:`harness.check_ledger`).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from orchestrator.inventory import load_inventory
from orchestrator.transport import open_transport
from orchestrator.transport.errors import ConnectError
from tests.fleet.harness import (
    assert_completed,
    check_ledger,
    cli,
    fault_note,
    fault_run,
    run_args,
    run_id_of,
    run_status,
    spawn_cli,
    trials,
    wait_for_queries,
    write_experiment,
)
from tests.fleet.linkshaper import ShapedRelay, netem_available

pytestmark = [pytest.mark.fleet]

#: query events are written when a repetition ends: a fault injected once the first
#: repetition's are in the journal lands while the other two run
LONG = (("generate", {"num_queries": 100, "max_new_tokens": 16}),)
REPS = 3
SHORT = (("generate", {"num_queries": 4, "max_new_tokens": 3}),)


@pytest.mark.fault("device unreachable at start", expected="other device completes, run partial")
@pytest.mark.timeout(600)
def test_device_unreachable_at_start(fleet_factory, tiny_model: Path, tmp_path: Path) -> None:
    fleet = fleet_factory(2)
    fleet["pi5"].stop()  # powered off: nothing listens any more
    exp = write_experiment(tmp_path / "exp.yaml", tiny_model, tasks=SHORT)
    db = f"sqlite:///{tmp_path / 'r.db'}"
    run = cli(*run_args(fleet, "pi4,pi5", exp, db, tmp_path / "cache"), cwd=tmp_path)
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert "Traceback" not in out
    run_id = run_id_of(run.stdout)
    assert run_status(db, run_id) == "partial"
    assert "pi5 failed:" in out and "cannot connect" in out
    by_device = {t["device"]: t for t in trials(db, run_id)}
    assert by_device["pi4"]["status"] == "ok"
    assert by_device["pi5"]["status"] == "failed"
    assert "pi5" in by_device["pi5"]["error"] and "connect" in by_device["pi5"]["error"]
    ledger = check_ledger(fleet, db, run_id)
    assert ledger.stored == 4


@pytest.mark.fault("link down mid-run (12 s), then back", expected="reattach, run completes")
@pytest.mark.timeout(600)
def test_link_down_mid_run_then_back(fleet_factory, tiny_model: Path, tmp_path: Path) -> None:
    fleet = fleet_factory(1, netns=True)
    device = fleet["pi4"]
    args, db = fault_run(fleet, "pi4", tiny_model, tmp_path, tasks=LONG, repetitions=REPS)
    spawned = spawn_cli(*args, cwd=tmp_path)
    try:
        wait_for_queries(device, 5, spawned=spawned)
        device.link_down()
        time.sleep(12)  # past the follow stall limit (8 s in these tests)
        device.link_up()
        code = spawned.wait(400)
    finally:
        device.link_up()
        spawned.kill()
    out = spawned.output
    assert_completed(fleet, db, code, out, queries=300)
    # the silent link was noticed by the stall limit, not by TCP giving up minutes later
    assert "connection stalled" in out and "reconnected" in out


@pytest.mark.timeout(120)
def test_a_silent_stream_is_a_lost_connection(fleet_factory) -> None:
    """The stall limit on a stream: a dead link raises ConnectError instead of hanging."""
    fleet = fleet_factory(1, netns=True)
    device = fleet["pi4"]
    inv = load_inventory(fleet.inventory_path).devices["pi4"]
    with open_transport(inv) as transport:
        lines = transport.stream(["sh", "-c", "echo first; sleep 60; echo never"], idle_timeout_s=3)
        assert next(lines) == "first"
        device.link_down()
        t0 = time.monotonic()
        try:
            with pytest.raises(ConnectError, match="stalled"):
                next(lines)
        finally:
            device.link_up()
        assert time.monotonic() - t0 < 10
        # a quiet but healthy stream is not cut while it keeps talking
        chatty = list(
            transport.stream(
                ["sh", "-c", "for i in 1 2 3 4; do echo $i; sleep 1; done"], idle_timeout_s=3
            )
        )
        assert chatty == ["1", "2", "3", "4"]


@pytest.mark.fault("sshd killed mid-run, restarted 3 s later", expected="reattach, run completes")
@pytest.mark.timeout(600)
def test_sshd_killed_mid_run_then_restarted(
    fleet_factory, tiny_model: Path, tmp_path: Path
) -> None:
    fleet = fleet_factory(1)
    device = fleet["pi4"]
    args, db = fault_run(fleet, "pi4", tiny_model, tmp_path, tasks=LONG, repetitions=REPS)
    spawned = spawn_cli(*args, cwd=tmp_path)
    try:
        wait_for_queries(device, 5, spawned=spawned)
        device.kill_sshd()  # the daemon and every session below it
        time.sleep(3)
        device.start()
        code = spawned.wait(400)
    finally:
        spawned.kill()
    out = spawned.output
    assert_completed(fleet, db, code, out, queries=300)
    assert "reconnected" in out


@pytest.mark.fault("300 ms delay + 5 % loss", expected="run completes")
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_slow_lossy_link(fleet_factory, tiny_model: Path, tmp_path: Path) -> None:
    """300 ms delay and 5 % loss: with tc netem where the kernel has it, else a relay that
    delays every chunk and stalls 5 % of them for a retransmission timeout."""
    relay = None
    if netem_available():
        fleet = fleet_factory(1, netns=True)
        fleet["pi4"].netem("delay 300ms loss 5%")
        how = "tc netem"
    else:
        fleet = fleet_factory(1)
        device = fleet["pi4"]
        relay = ShapedRelay(target=(device.address, device.port), delay_s=0.3, loss=0.05)
        relay.start()
        host, port = relay.address
        key_type, key = device.host_key.with_suffix(".pub").read_text().split()[:2]
        with open(device.known_hosts, "a") as fh:
            fh.write(f"[{host}]:{port} {key_type} {key}\n")
        fleet.write_inventory(overrides={"pi4": {"host": host, "port": port}})
        how = "TCP relay (no sch_netem in this kernel)"
    fault_note(how)
    try:
        exp = write_experiment(tmp_path / "exp.yaml", tiny_model, tasks=SHORT)
        db = f"sqlite:///{tmp_path / 'r.db'}"
        run = cli(*run_args(fleet, "pi4", exp, db, tmp_path / "cache"), cwd=tmp_path, timeout=500)
    finally:
        if relay is not None:
            relay.close()
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    run_id = run_id_of(run.stdout)
    assert run_status(db, run_id) == "ok"
    ledger = check_ledger(fleet, db, run_id)
    assert ledger.stored == 4
    if relay is not None:
        assert relay.chunks > 20 and relay.stalled_chunks > 0
