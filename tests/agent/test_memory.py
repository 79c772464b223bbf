"""The agent's peak resident set: reset at a job's start, read at its end."""

from __future__ import annotations

from pathlib import Path

from agent import memory


def test_the_peak_is_the_jobs_own_after_a_reset() -> None:
    held = bytearray(64 * 2**20)
    held[::4096] = b"\x01" * len(held[::4096])  # touch every page
    before = memory.peak_rss(reset_done=False)
    assert before.scope == "process" and before.peak_rss_bytes >= 64 * 2**20
    del held
    assert memory.reset_peak()
    after = memory.peak_rss(reset_done=True)
    assert after.scope == "job"
    assert after.peak_rss_bytes < before.peak_rss_bytes - 32 * 2**20
    current = memory.rss_bytes()
    assert current is not None and current <= after.peak_rss_bytes + 2**20


def test_without_proc_the_peak_is_the_processs(tmp_path: Path) -> None:
    assert memory.reset_peak(tmp_path / "missing") is False
    assert memory.rss_bytes(tmp_path / "missing") is None
    peak = memory.peak_rss(reset_done=True, proc=tmp_path / "missing")
    assert peak.scope == "process" and peak.peak_rss_bytes > 0
