"""The fault matrix: pytest's outcomes decide the verdict, and the README cannot drift
from the committed copy (testbed/faults.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from testbed import faults

ROOT = Path(__file__).resolve().parents[1]


def test_readme_matches_the_committed_fault_matrix() -> None:
    doc = faults.load(faults.COMMITTED)
    assert doc["faults"], "the committed fault matrix is empty"
    assert faults.parse_readme(faults.README) == faults.stable_rows(doc), (
        "README.md's fault table differs from tests/fleet/faults.json: "
        "run `python -m testbed.faults`"
    )


def test_the_drift_check_sees_a_changed_verdict(tmp_path: Path) -> None:
    doc = faults.load(faults.COMMITTED)
    readme = tmp_path / "README.md"
    readme.write_text(f"x\n{faults.START}\n{faults.END}\ny\n")
    faults.update_readme(readme, doc)
    assert faults.parse_readme(readme) == faults.stable_rows(doc)
    assert readme.read_text().startswith("x\n") and readme.read_text().endswith("y\n")
    doc["faults"][0]["survived"] = not doc["faults"][0]["survived"]
    assert faults.parse_readme(readme) != faults.stable_rows(doc)
    doc["faults"][0]["survived"] = not doc["faults"][0]["survived"]
    doc["faults"][-1]["lost"] = 7
    assert faults.parse_readme(readme) != faults.stable_rows(doc)


def test_timing_dependent_counts_are_not_compared(tmp_path: Path) -> None:
    doc = faults.load(faults.COMMITTED)
    readme = tmp_path / "README.md"
    readme.write_text(f"{faults.START}\n{faults.END}\n")
    faults.update_readme(readme, doc)
    for fault in doc["faults"]:
        fault["stored"] = 12345
        fault["duration_s"] = 99.0
    assert faults.parse_readme(readme) == faults.stable_rows(doc)


def test_record_order_does_not_depend_on_run_order() -> None:
    a, b = faults.FaultMatrix(), faults.FaultMatrix()
    tests = [("t/a.py::x", 10), ("t/a.py::y", 40), ("t/b.py::z", 5)]
    for matrix, sequence in ((a, tests), (b, list(reversed(tests)))):
        for nodeid, line in sequence:
            matrix.start(nodeid, nodeid, "", order=(nodeid.split("::")[0], line))
            matrix.report(nodeid, "call", "passed", "", 0.1)
    assert [r.test for r in a.ordered()] == [r.test for r in b.ordered()]
    assert [r.test for r in a.ordered()] == ["t/a.py::x", "t/a.py::y", "t/b.py::z"]


def test_adopting_a_partial_run_is_refused(tmp_path: Path) -> None:
    committed = tmp_path / "faults.json"
    committed.write_text(faults.COMMITTED.read_text())
    partial = json.loads(committed.read_text())
    partial["faults"] = partial["faults"][:1]
    source = tmp_path / "run.json"
    source.write_text(json.dumps(partial))
    with pytest.raises(faults.FaultMatrixError, match="lacks faults"):
        faults.adopt(source, committed)


CONFTEST = """
from tests.fleet.conftest import pytest_runtest_makereport, pytest_terminal_summary
"""

FAULT_TESTS = """
import pytest
from tests.fleet.harness import fault_note
from testbed.faults import MATRIX


@pytest.fixture
def broken():
    raise RuntimeError("could not set up")


@pytest.mark.fault("survives", expected="completes")
def test_survives():
    MATRIX.observe_ledger(4, 0, 0)
    fault_note("netem")


@pytest.mark.fault("fails", expected="completes")
def test_fails():
    MATRIX.observe_ledger(3, 1, 0)
    assert 1 == 2, "one record lost"


@pytest.mark.fault("errors", expected="completes")
def test_errors(broken):
    pass


@pytest.mark.fault("skipped", expected="completes")
def test_skipped():
    pytest.skip("no sshd here")


@pytest.mark.fault("meter {kind}", expected="flags")
@pytest.mark.parametrize("kind", ["silent", "bad_end"])
def test_param(kind):
    pass


def test_not_a_fault():
    pass
"""


def test_verdicts_come_from_pytest_outcomes(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_faults_demo.py").write_text(FAULT_TESTS)
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nmarkers =\n    fault(name, expected): a fault test\n"
    )
    out = tmp_path / "faults.json"
    env = {
        **os.environ,
        faults.SUMMARY_ENV: str(out),
        "PYTHONPATH": str(ROOT),
    }
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    doc = json.loads(out.read_text())
    by_name = {f["fault"]: f for f in doc["faults"]}
    assert list(by_name) == [
        "survives",
        "fails",
        "errors",
        "skipped",
        "meter bad_end",  # one test's parameters: by node id, whatever order they ran in
        "meter silent",
    ]
    assert by_name["survives"]["survived"] and by_name["survives"]["note"] == "netem"
    assert by_name["survives"]["stored"] == 4
    assert not by_name["fails"]["survived"]
    assert by_name["fails"]["outcome"] == "failed"
    assert "one record lost" in by_name["fails"]["reason"]
    assert by_name["fails"]["lost"] == 1
    assert by_name["errors"]["outcome"] == "error"
    assert "could not set up" in by_name["errors"]["reason"]
    assert by_name["errors"]["lost"] is None
    assert by_name["skipped"]["outcome"] == "skipped"
    assert "no sshd here" in by_name["skipped"]["reason"]
    assert doc["injected"] == 6 and doc["survived"] == 3 and doc["records_lost"] == 1
    rendered = "\n".join(faults.table_rows(doc))
    assert "| fails | completes | **NO**: " in rendered
    assert "| skipped | completes | skipped: " in rendered
