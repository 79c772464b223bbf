"""The per-job journal: every event of a job, one JSON line each, in seq order.

The runner writes through an :class:`EventEmitter`, which numbers events, validates
them against the protocol, appends them to ``journal.jsonl`` (flushed per event) and
echoes them to stdout when a controller is attached. The journal is the source of truth:
a controller that lost its connection re-reads it from the last seq it stored
(``python -m agent follow JOB_ID --from SEQ``), so nothing is lost or duplicated.

Readers only ever consume complete lines; a line still being written (no newline yet)
is left for the next read.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from agent.protocol import Event, make_event, parse_event

JOURNAL_NAME = "journal.jsonl"


class Journal:
    """An append-only JSON-lines file, flushed after every line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = open(path, "ab")  # noqa: SIM115 - closed by close()

    def append(self, line: str) -> None:
        """Append one line and flush it to the kernel (visible to readers at once)."""
        self._fh.write(line.encode() + b"\n")
        self._fh.flush()

    def sync(self) -> None:
        """Force the journal to stable storage (window boundaries, end of job)."""
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if not self._fh.closed:
            self.sync()
            self._fh.close()


class EventEmitter:
    """Numbers, validates and writes events; safe to call from several threads.

    ``echo`` is the stream a live controller reads (stdout of ``run``); if it breaks
    (the SSH session went away) echoing stops and the job carries on, journal only.
    """

    def __init__(
        self,
        journal: Journal,
        seq_start: int = 1,
        echo: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._journal = journal
        self._next_seq = seq_start
        self._echo = echo
        self._clock = clock
        self._lock = threading.Lock()

    @property
    def last_seq(self) -> int:
        """Seq of the last event written (seq_start - 1 before the first)."""
        return self._next_seq - 1

    def emit(self, type: str, **data: Any) -> Event:
        """Write one event of ``type`` with ``data``; returns the validated event."""
        with self._lock:
            event = make_event(self._next_seq, type, self._clock(), **data)
            line = event.to_json()
            self._journal.append(line)
            self._next_seq += 1
            if self._echo is not None:
                try:
                    self._echo.write(line + "\n")
                    self._echo.flush()
                except (OSError, ValueError):
                    self._echo = None
            return event

    def sync(self) -> None:
        """fsync the journal."""
        with self._lock:
            self._journal.sync()


class JournalReader:
    """Incremental reader of a journal that may still be growing."""

    def __init__(self, path: Path, from_seq: int = 1) -> None:
        self.path = path
        self.from_seq = from_seq
        self._offset = 0

    def read_new(self) -> list[Event]:
        """Events with seq >= from_seq completed since the last call."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self._offset += end + 1
        events = []
        for number, line in enumerate(data[:end].split(b"\n"), start=1):
            if not line.strip():
                continue
            event = parse_event(line, where=f"{self.path} (new line {number})")
            if event.seq >= self.from_seq:
                events.append(event)
        return events


def read_events(path: Path, from_seq: int = 1) -> Iterator[Event]:
    """Every complete event of a journal with seq >= ``from_seq``."""
    yield from JournalReader(path, from_seq).read_new()
