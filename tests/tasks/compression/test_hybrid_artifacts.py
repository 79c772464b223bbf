"""keep/center/alloc through real artifacts of a tiny LLaMA: exactness, manifest, data used."""

from __future__ import annotations

import pytest
import torch

from tasks import data as builtin_data
from tasks.artifacts import apply_artifact, build_artifact, load_artifact
from tasks.compression import parse_variant
from tasks.errors import ConfigError
from tasks.models import embedding_table, load_model, resolve_model

IDS = torch.tensor([[9, 13, 11, 200, 3, 40, 9, 255]])


def _model(path):
    return load_model(path, with_tokenizer=False)[0]


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


@pytest.fixture
def calibration_only(monkeypatch) -> list[str]:
    """Serve a known calibration text; fail if anything reads another built-in text."""
    asked: list[str] = []

    def fake_builtin_text(kind: str = "eval") -> str:
        asked.append(kind)
        if kind != "calibration":
            raise AssertionError(f"compression read the built-in {kind} text")
        return "w9 w9 w9 w9 w200 w200 w200 w7 w7"

    monkeypatch.setattr(builtin_data, "builtin_text", fake_builtin_text)
    return asked


@pytest.mark.parametrize("mode", ["on-the-fly", "materialized"])
def test_full_rank_with_keep_and_center_reproduces_the_logits(
    tiny_dirs, tmp_path, calibration_only, mode
) -> None:
    path = tiny_dirs["llama"]
    info = build_artifact(
        resolve_model(path), parse_variant("tt:rank=1000:keep=8:center=true"), tmp_path
    )
    assert calibration_only == ["calibration"]
    model = apply_artifact(_model(path), load_artifact(info.path, info.sha256), mode)
    assert float((_logits(model) - _logits(_model(path))).abs().max()) <= 1e-4
    assert info.manifest["reconstruction_error_max"] < 1e-6


def test_kept_rows_follow_the_calibration_text(tiny_dirs, tmp_path, calibration_only) -> None:
    path = tiny_dirs["llama"]
    info = build_artifact(
        resolve_model(path),
        parse_variant("tt:ratio=1.5:keep=5:center=true:alloc=adaptive"),
        tmp_path,
    )
    artifact = load_artifact(info.path, info.sha256)
    # w9 = id 13, w200 = id 204, w7 = id 11; then the lowest ids
    assert artifact.tensors["dense_ids"].tolist() == [0, 1, 11, 13, 204]
    table = embedding_table(_model(path))
    emb = apply_artifact(_model(path), artifact).get_input_embeddings()
    kept = torch.tensor([0, 1, 11, 13, 204])
    assert torch.equal(emb(kept), table[kept])
    m = info.manifest
    params = m["params"]
    assert (params["keep"], params["keep_rows"], params["center"], params["alloc"]) == (
        5,
        5,
        True,
        "adaptive",
    )
    assert params["frequency"] == {"source": "calibration text", "tokens": 9, "distinct": 3}
    counts = params["counts"]
    assert counts["dense_params"] == 5 * 48 and counts["mean_params"] == 48
    assert m["compressed_params"] == counts["total_params"] == (counts["tt_params"] + 5 * 48 + 48)
    assert 1.5 <= m["compression_ratio"] <= 1.5 * 1.02
    assert calibration_only == ["calibration"]


def test_plain_variants_never_read_any_text(tiny_dirs, tmp_path, calibration_only) -> None:
    build_artifact(
        resolve_model(tiny_dirs["gpt2"]), parse_variant("tt:ratio=2:alloc=adaptive"), tmp_path
    )
    assert calibration_only == []


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("tt:rank=4:keep=auto", "keep=auto chooses the dense rows"),
        ("tt:eps=0.3:alloc=adaptive", "alloc=adaptive shares a parameter budget"),
        ("tt:rank=4:alloc=weighted", "alloc=weighted shares"),
        ("tt:rank=4:impl=tensorly:keep=10", "batched implementation only"),
        ("tt:ratio=2:kep=10", "did you mean 'keep'"),
        ("tt:ratio=2:centre=true", "did you mean 'center'"),
        ("tt:ratio=2:keep=-3", "keep='-3' is invalid"),
        ("tt:ratio=2:center=maybe", "must be true or false"),
        ("tt:ratio=2:alloc=greedy", "must be one of uniform/adaptive/weighted"),
    ],
)
def test_option_errors(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_variant(text)
    assert needle in str(info.value)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("tt:ratio=2:keep=0:center=false:alloc=uniform", "tt:ratio=2"),
        (
            "tt:alloc=adaptive:CENTER=yes:keep=AUTO:ratio=2",
            "tt:ratio=2:keep=auto:center=true:alloc=adaptive",
        ),
        ("tt:rank=4:keep=100", "tt:rank=4:keep=100"),
    ],
)
def test_option_canonical_forms(text: str, canonical: str) -> None:
    spec = parse_variant(text)
    assert spec.canonical == canonical and parse_variant(canonical) == spec
    assert spec.needs_calibration == ("keep=" in canonical)
