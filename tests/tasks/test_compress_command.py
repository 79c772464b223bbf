"""``tslm-fleet compress`` end to end in a subprocess on a tiny model directory."""

from __future__ import annotations

import json
import subprocess
import sys


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "compress", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_summary_then_json_from_the_cache(tiny_dirs, tmp_path) -> None:
    out = _cli("--model", str(tiny_dirs["gpt2"]), "--variant", "tt:rank=3", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "compression" in out.stdout and "4x4x4" in out.stdout
    again = _cli(
        "--model",
        str(tiny_dirs["gpt2"]),
        "--variant",
        "tt:rank=3",
        "--out",
        str(tmp_path),
        "--json",
    )
    manifest = json.loads(again.stdout)
    assert manifest["variant"] == "tt:rank=3" and manifest["method"] == "tt"
    assert len([p for p in tmp_path.iterdir() if not p.name.startswith(".")]) == 1


def test_user_errors_are_clean(tiny_dirs, tmp_path) -> None:
    out = _cli("--model", str(tiny_dirs["gpt2"]), "--variant", "tt:rnak=3", "--out", str(tmp_path))
    assert out.returncode == 2
    assert "did you mean 'rank'" in out.stderr and "Traceback" not in out.stderr
    out = _cli("--model", str(tiny_dirs["gpt2"]), "--variant", "dense", "--out", str(tmp_path))
    assert out.returncode == 2 and "no artifact" in out.stderr
