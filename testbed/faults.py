"""The fault matrix: what each fleet fault test injected and how it really ended.

The outcome of every test marked ``@pytest.mark.fault(NAME, expected=...)`` is taken from
pytest's own reports (``tests/fleet/conftest.py`` feeds :meth:`FaultMatrix.report`), so a
fault test that fails or errors is recorded as not survived, with its reason; no test
writes its own verdict. The ledger (query records stored, lost, duplicated) is whatever
``tests/fleet/harness.check_ledger`` last measured for the test, before its assertions.

The session writes the matrix to ``build/faults.json`` (or ``$TSLM_FAULT_SUMMARY``). Its
committed copy, :data:`COMMITTED`, feeds the README's Fault tolerance section between
:data:`START` and :data:`END`:

    python -m testbed.faults                 # render README.md from the committed copy
    python -m testbed.faults --from build/faults.json   # adopt a run's file, then render

Records are ordered by where each test is defined, never by the order tests ran in.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "tests" / "fleet" / "faults.json"
SESSION_DEFAULT = ROOT / "build" / "faults.json"
SUMMARY_ENV = "TSLM_FAULT_SUMMARY"
README = ROOT / "README.md"
START, END = "<!-- faults:start -->", "<!-- faults:end -->"
#: the fields a README must agree with the committed file on (the rest vary with timing)
STABLE_FIELDS = ("fault", "survived", "lost", "duplicated")


class FaultMatrixError(Exception):
    """A fault file or README that cannot be read or rendered (says which and why)."""


@dataclass
class FaultRecord:
    """One fault test: what it injected, its pytest outcome and the query ledger."""

    fault: str
    expected: str
    test: str
    outcome: str = "not run"  # passed, failed, error, skipped
    reason: str = ""
    stored: int | None = None
    lost: int | None = None
    duplicated: int | None = None
    duration_s: float = 0.0
    note: str = ""
    order: tuple[str, int] = ("", 0)

    @property
    def survived(self) -> bool:
        return self.outcome == "passed"

    def as_json(self) -> dict[str, Any]:
        doc = asdict(self)
        del doc["order"]
        doc["survived"] = self.survived
        return doc


@dataclass
class FaultMatrix:
    """Records of the session's fault tests, keyed by pytest node id."""

    records: dict[str, FaultRecord] = field(default_factory=dict)
    current: str | None = None

    def start(self, nodeid: str, fault: str, expected: str, order: tuple[str, int]) -> FaultRecord:
        record = FaultRecord(fault=fault, expected=expected, test=nodeid, order=order)
        self.records[nodeid] = record
        self.current = nodeid
        return record

    def observe_ledger(self, stored: int, lost: int, duplicated: int) -> None:
        """The ledger of the running fault test (the last one measured wins)."""
        record = self.records.get(self.current or "")
        if record is not None:
            record.stored, record.lost, record.duplicated = stored, lost, duplicated

    def note(self, text: str) -> None:
        """A detail of how the running fault test injected its fault (shown, not compared)."""
        record = self.records.get(self.current or "")
        if record is not None:
            record.note = text

    def report(self, nodeid: str, when: str, outcome: str, reason: str, duration: float) -> None:
        """Fold one pytest report (setup, call or teardown) into the test's record."""
        record = self.records.get(nodeid)
        if record is None:
            return
        record.duration_s = round(record.duration_s + duration, 1)
        if outcome == "skipped":
            record.outcome, record.reason = "skipped", reason
        elif outcome == "failed":
            if record.outcome not in ("failed", "error"):
                record.outcome = "failed" if when == "call" else "error"
                record.reason = reason if when == "call" else f"{when}: {reason}"
        elif when == "call" and record.outcome == "not run":
            record.outcome = "passed"

    def ordered(self) -> list[FaultRecord]:
        return sorted(self.records.values(), key=lambda r: (r.order, r.test))

    def document(self) -> dict[str, Any]:
        records = self.ordered()
        return {
            "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "machine": f"{platform.machine()}, {platform.platform()}, "
            f"Python {platform.python_version()}, {os.cpu_count()} CPUs",
            "faults": [r.as_json() for r in records],
            **totals(r.as_json() for r in records),
        }

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.document(), indent=2) + "\n")


MATRIX = FaultMatrix()
"""The test session's matrix (one process: the fault tests never run in parallel)."""


def totals(faults: Any) -> dict[str, int]:
    faults = list(faults)
    return {
        "injected": len(faults),
        "survived": sum(1 for f in faults if f["survived"]),
        "records_lost": sum(f["lost"] or 0 for f in faults),
        "records_duplicated": sum(f["duplicated"] or 0 for f in faults),
    }


def crash_reason(longrepr: Any) -> str:
    """The one-line reason of a failed or skipped report."""
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None:
        text = str(crash.message)
    elif isinstance(longrepr, tuple) and len(longrepr) == 3:  # a skip: (file, line, reason)
        text = str(longrepr[2])
    else:
        text = str(longrepr)
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first.removeprefix("Skipped: ")[:200]


# -- reading, rendering, checking ---------------------------------------------------------


def load(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FaultMatrixError(f"{path}: cannot read the fault matrix: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("faults"), list):
        raise FaultMatrixError(f"{path}: not a fault matrix (no 'faults' list)")
    return doc


def _cell(value: Any) -> str:
    return "n/a" if value is None else str(value).replace("|", "/")


def _verdict(fault: dict[str, Any]) -> str:
    if fault["survived"]:
        return "yes"
    word = {"skipped": "skipped", "not run": "not run"}.get(fault["outcome"], "**NO**")
    return f"{word}: {_cell(fault['reason'])}" if fault.get("reason") else word


def table_rows(doc: dict[str, Any]) -> list[str]:
    rows = [
        "| fault | expected behaviour | survived | query records stored | lost | duplicated |",
        "|---|---|---|---|---|---|",
    ]
    for f in doc["faults"]:
        name = f["fault"] + (f" ({f['note']})" if f.get("note") else "")
        rows.append(
            f"| {_cell(name)} | {_cell(f['expected'])} | {_verdict(f)} | {_cell(f['stored'])} "
            f"| {_cell(f['lost'])} | {_cell(f['duplicated'])} |"
        )
    return rows


def readme_section(doc: dict[str, Any]) -> str:
    t = totals(doc["faults"])
    return "\n".join(
        [
            f"Last run of the fault tests: {doc.get('date', 'date unknown')} on "
            f"{doc.get('machine', 'an unrecorded machine')}. {t['injected']} faults injected, "
            f"{t['survived']} survived, {t['records_lost']} query records lost, "
            f"{t['records_duplicated']} duplicated. A test that failed, errored or was "
            "skipped is shown as such, with its reason (the verdict is pytest's outcome). "
            "Query counts depend on timing (how far a run got before the fault).",
            "",
            *table_rows(doc),
        ]
    )


def update_readme(readme: Path, doc: dict[str, Any]) -> None:
    """Replace the text between the fault markers of ``readme``; nothing else changes."""
    text = readme.read_text()
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise FaultMatrixError(f"{readme}: no '{START}' ... '{END}' markers")
    body = readme_section(doc)
    readme.write_text(text[: start + len(START)] + "\n" + body + "\n" + text[end:])


def parse_readme(readme: Path) -> list[dict[str, Any]]:
    """The stable fields of each row of the README's fault table (for the drift test)."""
    text = readme.read_text()
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise FaultMatrixError(f"{readme}: no '{START}' ... '{END}' markers")
    rows = []
    for line in text[start:end].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 6 or cells[0] in ("fault", "---"):
            continue
        rows.append(
            {
                "fault": cells[0],
                "survived": cells[2] == "yes",
                "lost": None if cells[4] == "n/a" else int(cells[4]),
                "duplicated": None if cells[5] == "n/a" else int(cells[5]),
            }
        )
    return rows


def stable_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The committed file's rows as the README shows them, stable fields only."""
    return [
        {
            "fault": _cell(f["fault"] + (f" ({f['note']})" if f.get("note") else "")),
            "survived": bool(f["survived"]),
            "lost": f["lost"],
            "duplicated": f["duplicated"],
        }
        for f in doc["faults"]
    ]


def adopt(source: Path, target: Path = COMMITTED) -> dict[str, Any]:
    """Copy a session's fault file over the committed one; a partial run is refused."""
    doc = load(source)
    if target.is_file():
        before = {f["fault"] for f in load(target)["faults"]}
        missing = sorted(before - {f["fault"] for f in doc["faults"]})
        if missing:
            raise FaultMatrixError(
                f"{source}: the run lacks faults the committed matrix has: {', '.join(missing)}"
                " (run every fault test: pytest tests/fleet -k 'faults')"
            )
    target.write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m testbed.faults", description="render the README's fault table"
    )
    parser.add_argument("--from", dest="source", type=Path, help="a session's faults.json")
    args = parser.parse_args(argv)
    try:
        doc = adopt(args.source) if args.source else load(COMMITTED)
        update_readme(README, doc)
    except FaultMatrixError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"README.md: fault table rendered from {COMMITTED.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
