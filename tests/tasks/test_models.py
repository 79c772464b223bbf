"""Model resolution and loading: directories, GGUF files, hub ids, the embedded default."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tasks.errors import ModelError
from tasks.models import count_params, embedded_gguf, load_model, resolve_model


def test_directory(tiny_dirs) -> None:
    ref = resolve_model(tiny_dirs["llama"])
    assert (ref.kind, ref.name, ref.path) == ("dir", "llama", tiny_dirs["llama"].resolve())
    assert {p.name for p in ref.files()} >= {"config.json", "model.safetensors"}
    assert resolve_model(str(tiny_dirs["llama"])).sha256 == ref.sha256


def test_directory_identity_follows_content(tiny_dirs, tmp_path) -> None:
    copy = Path(shutil.copytree(tiny_dirs["gpt2"], tmp_path / "gpt2"))
    assert resolve_model(copy).sha256 == resolve_model(tiny_dirs["gpt2"]).sha256
    (copy / "generation_config.json").write_text("{}")
    assert resolve_model(copy).sha256 != resolve_model(tiny_dirs["gpt2"]).sha256


def test_load_directory_in_eval_mode(tiny_dirs) -> None:
    model, tokenizer = load_model(tiny_dirs["opt"])
    assert not model.training
    assert tokenizer("w1 w2").input_ids[-2:] == [5, 6]
    half, none = load_model(tiny_dirs["opt"], dtype=torch.bfloat16, with_tokenizer=False)
    assert none is None and half.get_input_embeddings().weight.dtype == torch.bfloat16
    assert count_params(model) == count_params(half)


def test_default_resolves_to_the_embedded_gguf() -> None:
    ref = resolve_model("default")
    assert ref.kind == "gguf" and ref.path == embedded_gguf()
    assert ref.files() == [ref.path]
    assert len(ref.sha256) == 64
    assert resolve_model("smollm2") == ref


@pytest.mark.parametrize(
    ("ref", "needle"),
    [
        ("no/such-model", "no hub access"),
        ("./missing.gguf", "does not exist"),
        ("bad name!", "neither a file"),
    ],
)
def test_errors(ref: str, needle: str) -> None:
    with pytest.raises(ModelError, match=needle):
        resolve_model(ref)


def test_not_a_model_directory(tmp_path) -> None:
    with pytest.raises(ModelError, match=r"no config\.json"):
        resolve_model(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match=r"not a \.gguf file"):
        resolve_model(tmp_path / "weights.bin")


def test_hub_id_from_the_local_cache(tiny_dirs, tmp_path, monkeypatch) -> None:
    # a hub cache laid out as huggingface_hub writes it, with no network
    repo = tmp_path / "hub" / "models--acme--tiny-llama"
    snap = repo / "snapshots" / ("a" * 40)
    shutil.copytree(tiny_dirs["llama"], snap)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    ref = resolve_model("acme/tiny-llama")
    assert (ref.kind, ref.name, ref.revision) == ("hub", "acme/tiny-llama", "a" * 40)
    assert ref.sha256 == resolve_model(tiny_dirs["llama"]).sha256
    model, _ = load_model(ref, with_tokenizer=False)
    assert model.config.model_type == "llama"


@pytest.mark.slow
def test_embedded_gguf_loads_and_caches_a_conversion(tmp_path) -> None:
    model, tokenizer = load_model("default", cache_dir=tmp_path)
    assert model.get_input_embeddings().weight.shape == (49152, 576)
    converted = list(tmp_path.glob("gguf-*"))
    assert len(converted) == 1 and (converted[0] / "model.safetensors").is_file()
    again, _ = load_model("default", cache_dir=tmp_path)
    ids = tokenizer("The quick brown fox", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)
