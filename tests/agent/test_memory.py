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


def test_pages_of_a_mapped_file_are_released_and_read_back(tmp_path: Path) -> None:
    import torch

    path = tmp_path / "weights.bin"
    values = torch.arange(4 * 2**20, dtype=torch.float32)  # 16 MiB
    path.write_bytes(values.numpy().tobytes())
    mapped = torch.from_file(str(path), shared=False, size=values.numel(), dtype=torch.float32)
    assert torch.equal(mapped, values)  # every page touched
    held = memory.rss_bytes()
    released = memory.release_file_pages(mapped.data_ptr(), mapped.numel() * 4)
    assert released >= 15 * 2**20
    assert memory.rss_bytes() < held - 8 * 2**20
    assert torch.equal(mapped, values)  # read back from the file


def test_anonymous_memory_is_never_released() -> None:
    import torch

    values = torch.randn(2**20)
    copy = values.clone()
    assert memory.release_file_pages(values.data_ptr(), values.numel() * 4) == 0
    assert torch.equal(values, copy)
