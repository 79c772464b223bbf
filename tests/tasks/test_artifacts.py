"""Artifacts on tiny GPT-2/OPT/LLaMA models: exactness, round trip, cache, tampering, heads."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from tasks.artifacts import (
    MANIFEST,
    TENSORS,
    apply_artifact,
    build_artifact,
    load_artifact,
)
from tasks.compression import parse_variant
from tasks.errors import ArtifactError, CompressionError
from tasks.models import count_params, head_is_tied, load_model, resolve_model

IDS = torch.randint(4, 256, (2, 12), generator=torch.Generator().manual_seed(0))


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


def _model(path: Path):
    return load_model(path, with_tokenizer=False)[0]


def _build(tiny_dirs, arch: str, spec: str, cache: Path):
    return build_artifact(resolve_model(tiny_dirs[arch]), parse_variant(spec), cache)


@pytest.mark.parametrize("arch", ["gpt2", "opt", "llama"])
@pytest.mark.parametrize("mode", ["on-the-fly", "materialized"])
def test_full_rank_tt_reproduces_the_dense_logits(tiny_dirs, tmp_path, arch, mode) -> None:
    info = _build(tiny_dirs, arch, "tt:rank=1000", tmp_path)
    dense = _logits(_model(tiny_dirs[arch]))
    model = apply_artifact(_model(tiny_dirs[arch]), load_artifact(info.path, info.sha256), mode)
    assert float((_logits(model) - dense).abs().max()) <= 1e-4
    assert info.manifest["reconstruction_error_max"] < 1e-6


@pytest.mark.parametrize("arch", ["gpt2", "opt", "llama"])
def test_truncation_changes_the_logits(tiny_dirs, tmp_path, arch) -> None:
    info = _build(tiny_dirs, arch, "tt:rank=2", tmp_path)
    model = apply_artifact(_model(tiny_dirs[arch]), load_artifact(info.path))
    assert float((_logits(model) - _logits(_model(tiny_dirs[arch]))).abs().max()) > 1e-3
    assert info.manifest["compression_ratio"] > 1


def test_manifest_contents(tiny_dirs, tmp_path) -> None:
    info = _build(tiny_dirs, "llama", "tt:eps=0.3", tmp_path)
    m = info.manifest
    assert json.loads((info.path / MANIFEST).read_bytes()) == m
    assert m["model"] == "llama" and m["model_kind"] == "dir"
    assert m["model_sha256"] == resolve_model(tiny_dirs["llama"]).sha256
    assert m["method"] == "tt" and m["variant"] == "tt:eps=0.3"
    assert m["params"]["shape"] == [3, 4, 4] and m["params"]["shape_choice"]["auto"]
    assert (m["vocab_size"], m["hidden_size"]) == (256, 48)
    assert m["embedding_params"] == 256 * 48
    assert m["compression_ratio"] == pytest.approx(256 * 48 / m["compressed_params"])
    assert m["reconstruction_error_max"] <= 0.3 + 1e-6
    assert m["files"][TENSORS]["bytes"] == (info.path / TENSORS).stat().st_size
    assert m["size_bytes"] == m["files"][TENSORS]["bytes"]
    assert {f.name for f in info.files()} == {MANIFEST, TENSORS}


def test_same_request_reuses_the_directory(tiny_dirs, tmp_path) -> None:
    first = _build(tiny_dirs, "gpt2", "tt:rank=3", tmp_path)
    again = _build(tiny_dirs, "gpt2", "tt:rank=3:head=keep-dense", tmp_path)
    assert again.reused and not first.reused
    assert (again.path, again.sha256) == (first.path, first.sha256)
    other = _build(tiny_dirs, "gpt2", "tt:rank=4", tmp_path)
    assert other.path != first.path


def test_damaged_cache_entry_is_rebuilt(tiny_dirs, tmp_path) -> None:
    first = _build(tiny_dirs, "gpt2", "int8", tmp_path)
    (first.path / TENSORS).write_bytes(b"garbage")
    again = _build(tiny_dirs, "gpt2", "int8", tmp_path)
    assert not again.reused
    load_artifact(again.path, again.sha256)


def test_dense_has_no_artifact(tiny_dirs, tmp_path) -> None:
    assert _build(tiny_dirs, "gpt2", "dense", tmp_path) is None


def test_tampered_tensor_file_is_detected(tiny_dirs, tmp_path) -> None:
    info = _build(tiny_dirs, "opt", "tt:rank=2", tmp_path)
    data = bytearray((info.path / TENSORS).read_bytes())
    data[-1] ^= 0x01
    (info.path / TENSORS).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="does not match the manifest"):
        load_artifact(info.path, info.sha256)


def test_tampered_manifest_is_detected(tiny_dirs, tmp_path) -> None:
    info = _build(tiny_dirs, "opt", "tt:rank=2", tmp_path)
    text = (
        (info.path / MANIFEST)
        .read_text()
        .replace('"head_policy": "keep-dense"', '"head_policy": "tied"')
    )
    (info.path / MANIFEST).write_text(text)
    with pytest.raises(ArtifactError, match="does not match the expected"):
        load_artifact(info.path, info.sha256)


def test_missing_file_and_wrong_directory(tiny_dirs, tmp_path) -> None:
    info = _build(tiny_dirs, "opt", "svd:rank=4", tmp_path)
    (info.path / TENSORS).unlink()
    with pytest.raises(ArtifactError, match="is missing"):
        load_artifact(info.path)
    with pytest.raises(ArtifactError, match="not an artifact directory"):
        load_artifact(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("spec", "tensor"),
    [
        ("svd:rank=4", "left"),
        ("int:bits=4", "scale"),
        ("tt:rank=2:cores=int8", "scale"),
        ("mixed:bits=4", None),
    ],
)
def test_a_tensor_missing_from_the_artifact_is_named(tiny_dirs, tmp_path, spec, tensor) -> None:
    arch = "gpt2" if spec.startswith("mixed") else "opt"
    info = _build(tiny_dirs, arch, spec, tmp_path)
    artifact = load_artifact(info.path, info.sha256)
    name = tensor or sorted(artifact.tensors)[0]
    del artifact.tensors[name]
    with pytest.raises(ArtifactError, match=f"'{name}' is missing") as err:
        apply_artifact(_model(tiny_dirs[arch]), artifact)
    assert str(info.path) in str(err.value)


def test_a_pickle_beside_the_tensors_is_never_loaded(tiny_dirs, tmp_path) -> None:
    info = _build(tiny_dirs, "gpt2", "tt:rank=2", tmp_path)
    marker = tmp_path / "executed"
    (info.path / "evil.pt").write_bytes(
        b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    )
    artifact = load_artifact(info.path, info.sha256)
    apply_artifact(_model(tiny_dirs["gpt2"]), artifact)
    assert not marker.exists()


def test_artifact_for_another_model_is_refused(tiny_dirs, tmp_path) -> None:
    info = _build(tiny_dirs, "gpt2", "tt:rank=2", tmp_path)
    with pytest.raises(ArtifactError, match="built for an embedding of 256 x 64"):
        apply_artifact(_model(tiny_dirs["llama"]), load_artifact(info.path))


def test_keep_dense_head_policy(tiny_dirs, tmp_path) -> None:
    base = _model(tiny_dirs["llama"])
    assert head_is_tied(base)
    head_before = base.get_output_embeddings().weight.detach().clone()
    info = _build(tiny_dirs, "llama", "tt:rank=2", tmp_path)
    model = apply_artifact(base, load_artifact(info.path))
    assert torch.equal(model.get_output_embeddings().weight, head_before)
    model.tie_weights()  # transformers must not re-tie the head to the new embedding
    assert torch.equal(model.get_output_embeddings().weight, head_before)
    m = info.manifest
    total = count_params(_model(tiny_dirs["llama"]))
    assert m["total_params_before"] == total
    assert m["total_params"] == total + m["compressed_params"]
    assert m["total_params_by_head_policy"]["tied"] == total - 256 * 48 + m["compressed_params"]


@pytest.mark.parametrize("mode", ["on-the-fly", "materialized"])
def test_tied_head_policy_uses_the_reconstruction(tiny_dirs, tmp_path, mode) -> None:
    info = _build(tiny_dirs, "llama", "tt:rank=2:head=tied", tmp_path)
    artifact = load_artifact(info.path)
    with pytest.warns(UserWarning, match="head=tied"):
        model = apply_artifact(_model(tiny_dirs["llama"]), artifact, mode)
    emb = model.get_input_embeddings()
    table = emb.weight if mode == "materialized" else emb.materialize()
    assert torch.equal(model.get_output_embeddings().weight, table)
    if mode == "materialized":
        assert model.get_output_embeddings().weight is emb.weight
    keep = apply_artifact(
        _model(tiny_dirs["llama"]),
        load_artifact(_build(tiny_dirs, "llama", "tt:rank=2", tmp_path).path),
    )
    assert not torch.allclose(_logits(model), _logits(keep))
    total = count_params(_model(tiny_dirs["llama"]))
    assert info.manifest["total_params"] == total - 256 * 48 + info.manifest["compressed_params"]


def test_tied_policy_needs_a_tied_model(tiny_dirs, tmp_path) -> None:
    with pytest.raises(CompressionError, match="does not tie"):
        _build(tiny_dirs, "llama-untied", "tt:rank=2:head=tied", tmp_path)
    info = _build(tiny_dirs, "llama-untied", "tt:rank=2", tmp_path)
    assert info.manifest["total_params"] == (
        info.manifest["total_params_before"] - 256 * 48 + info.manifest["compressed_params"]
    )


def test_generation_runs_with_a_compressed_embedding(tiny_dirs, tmp_path) -> None:
    info = _build(tiny_dirs, "gpt2", "tt:rank=3", tmp_path)
    model = apply_artifact(_model(tiny_dirs["gpt2"]), load_artifact(info.path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = model.generate(IDS[:1], max_new_tokens=5, do_sample=False, pad_token_id=1)
    assert out.shape == (1, 17)


def test_manifest_carries_both_ratios_and_the_bytes_on_disk(tiny_dirs, tmp_path) -> None:
    info = _build(tiny_dirs, "llama", "int:bits=4:group=16", tmp_path)
    m = info.manifest
    # the tiny model is saved as float32 safetensors: its source format is float32
    assert m["source_format"]["name"] == "F32"
    assert m["source_format"]["bytes"] == 256 * 48 * 4
    assert m["compression_ratio_source"] == pytest.approx(
        m["source_format"]["bytes"] / (4 * m["compressed_params"])
    )
    assert m["compression_ratio"] == pytest.approx(m["compression_ratio_source"])
    assert m["size_bytes"] == (info.path / TENSORS).stat().st_size > m["payload_bytes"]


@pytest.mark.parametrize(
    "spec", ["int:bits=4:group=16", "int8", "tt:rank=3:shape=3x4x4:cores=int6"]
)
def test_quantised_artifacts_serve_both_modes_alike(tiny_dirs, tmp_path, spec) -> None:
    info = _build(tiny_dirs, "llama", spec, tmp_path)
    artifact = load_artifact(info.path, info.sha256)
    fly = _logits(apply_artifact(_model(tiny_dirs["llama"]), artifact, "on-the-fly"))
    dense = _logits(apply_artifact(_model(tiny_dirs["llama"]), artifact, "materialized"))
    assert torch.allclose(fly, dense, atol=1e-5)
    assert info.manifest["reconstruction_error"] > 0
