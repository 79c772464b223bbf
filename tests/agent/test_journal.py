"""The journal and the event emitter: numbering, validation, threads, partial lines."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest

from agent.journal import EventEmitter, Journal, JournalReader, read_events
from agent.protocol import parse_event
from tasks.errors import ProtocolError


def _emitter(path: Path, seq_start: int = 1, echo=None) -> tuple[Journal, EventEmitter]:
    journal = Journal(path)
    return journal, EventEmitter(journal, seq_start=seq_start, echo=echo)


def test_events_are_numbered_from_seq_start_and_echoed(tmp_path: Path) -> None:
    echo = io.StringIO()
    journal, emitter = _emitter(tmp_path / "j.jsonl", seq_start=41, echo=echo)
    emitter.emit("phase", phase="loading")
    emitter.emit("warning", message="careful", code="x")
    journal.close()
    events = list(read_events(tmp_path / "j.jsonl"))
    assert [(e.seq, e.type) for e in events] == [(41, "phase"), (42, "warning")]
    assert [parse_event(line).to_dict() for line in echo.getvalue().splitlines()] == [
        e.to_dict() for e in events
    ]
    assert emitter.last_seq == 42


def test_an_invalid_event_is_refused_and_does_not_consume_a_seq(tmp_path: Path) -> None:
    journal, emitter = _emitter(tmp_path / "j.jsonl")
    with pytest.raises(ProtocolError):
        emitter.emit("phase")  # no 'phase' field
    emitter.emit("phase", phase="idle")
    journal.close()
    assert [e.seq for e in read_events(tmp_path / "j.jsonl")] == [1]


def test_a_broken_echo_stream_leaves_the_journal_going(tmp_path: Path) -> None:
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    journal, emitter = _emitter(tmp_path / "j.jsonl", echo=Broken())
    for _ in range(3):
        emitter.emit("phase", phase="running")
    journal.close()
    assert len(list(read_events(tmp_path / "j.jsonl"))) == 3


def test_concurrent_emitters_give_gapless_ordered_lines(tmp_path: Path) -> None:
    journal, emitter = _emitter(tmp_path / "j.jsonl")

    def burst() -> None:
        for _ in range(200):
            emitter.emit("power", watts=1.0, samples=1, fresh_samples=1)

    threads = [threading.Thread(target=burst) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    journal.close()
    assert [e.seq for e in read_events(tmp_path / "j.jsonl")] == list(range(1, 801))


def test_reader_waits_for_a_line_to_be_complete(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal, emitter = _emitter(path)
    emitter.emit("phase", phase="loading")
    line = emitter.emit("phase", phase="idle").to_json()
    journal.close()
    text = path.read_text()
    half = len(text) - len(line) // 2
    path.write_text(text[:half])  # the second line is half written
    reader = JournalReader(path, from_seq=1)
    assert [e.seq for e in reader.read_new()] == [1]
    assert reader.read_new() == []
    with open(path, "a") as fh:
        fh.write(text[half:])
    assert [e.seq for e in reader.read_new()] == [2]


def test_reader_filters_by_seq_and_survives_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    assert JournalReader(path).read_new() == []
    journal, emitter = _emitter(path)
    for _ in range(5):
        emitter.emit("phase", phase="running")
    journal.close()
    assert [e.seq for e in read_events(path, from_seq=4)] == [4, 5]


def test_optional_fields_are_checked_when_present() -> None:
    done = '{"seq":3,"type":"done","t":1.0,"wall":"w","status":"ok","queries":1,"duration_s":1.0'
    assert parse_event(done + "}")["status"] == "ok"  # an earlier agent leaves them out
    assert (
        parse_event(done + ',"peak_rss_bytes":1024,"peak_rss_scope":"job"}')["peak_rss_bytes"]
        == 1024
    )
    for bad in ('"peak_rss_bytes":"1 GB"', '"decode_s_per_token":true', '"peak_rss_scope":null'):
        with pytest.raises(ProtocolError, match=bad.split(":")[0].strip('"')):
            parse_event(done + "," + bad + "}")
