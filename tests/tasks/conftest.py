"""Fixtures of the tasks tests: tiny model directories, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tasks import tiny


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Saved tiny models: gpt2, opt, llama (tied) and llama-untied."""
    root = tmp_path_factory.mktemp("tiny-models")
    dirs = {arch: tiny.save(root / arch, arch) for arch in ("gpt2", "opt", "llama")}
    dirs["llama-untied"] = tiny.save(root / "llama-untied", "llama", tie=False)
    return dirs
