"""Model resolution and loading: directories, GGUF files, hub ids, the embedded default."""

from __future__ import annotations

import json
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


def test_a_pickle_only_directory_is_refused_with_how_to_convert(tiny_dirs, tmp_path) -> None:
    from safetensors.torch import load_file

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_dirs["llama"], pickled)
    weights = pickled / "model.safetensors"
    torch.save(load_file(weights), pickled / "pytorch_model.bin")  # the old format
    weights.unlink()
    with pytest.raises(ModelError) as info:
        load_model(pickled, with_tokenizer=False)
    message = info.value.message
    assert "pytorch_model.bin" in message and "safetensors only" in message
    assert "save_pretrained" in (info.value.hint or "")


def test_safetensors_win_over_a_planted_pickle(tiny_dirs, tmp_path) -> None:
    """A .bin beside the safetensors is never read (it would run code)."""
    directory = tmp_path / "both"
    shutil.copytree(tiny_dirs["llama"], directory)
    (directory / "pytorch_model.bin").write_bytes(b"not a pickle: loading it would fail")
    model, _ = load_model(directory, with_tokenizer=False)
    assert model.config.model_type == "llama"


def test_a_cached_copy_is_verified_before_use(tiny_dirs, tmp_path) -> None:
    from tasks.models import CACHE_LISTING, _listing, verified_copy

    copy = tmp_path / "gguf-0123456789abcdef"
    shutil.copytree(tiny_dirs["llama"], copy)
    assert not verified_copy(copy) and not copy.exists()  # no listing: not trusted
    shutil.copytree(tiny_dirs["llama"], copy)
    (copy / CACHE_LISTING).write_text(json.dumps(_listing(copy)))
    assert verified_copy(copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    assert not verified_copy(copy) and not copy.exists()  # one flipped bit: removed


@pytest.mark.slow
def test_a_corrupted_conversion_is_rebuilt(tmp_path) -> None:
    model, tokenizer = load_model("default", cache_dir=tmp_path)
    (converted,) = tmp_path.glob("gguf-*")
    weights = converted / "model.safetensors"
    with open(weights, "r+b") as fh:
        fh.seek(weights.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0xFF]))
    again, _ = load_model("default", cache_dir=tmp_path)
    ids = tokenizer("The quick brown fox", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)
    from tasks.models import verified_copy

    assert verified_copy(converted)
