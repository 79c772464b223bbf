"""Tied LM heads computed from the compressed table, kernel chosen by timing."""

from __future__ import annotations

import warnings

import pytest
import torch

from tasks.artifacts import apply_artifact, build_artifact, load_artifact
from tasks.compression import get_method, parse_variant
from tasks.compression.embedding import resident_bytes
from tasks.compression.head import Candidate, CompressedHead, select_kernel
from tasks.errors import ArtifactError, ConfigError
from tasks.models import load_model, resolve_model

IDS = torch.randint(4, 256, (2, 12), generator=torch.Generator().manual_seed(0))


def _tied(tiny_dirs, tmp_path, spec: str, mode: str = "on-the-fly", **kw):
    info = build_artifact(resolve_model(tiny_dirs["llama"]), parse_variant(spec), tmp_path)
    model = load_model(tiny_dirs["llama"], with_tokenizer=False)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return apply_artifact(model, load_artifact(info.path), mode, **kw)


@pytest.mark.parametrize("spec", ["fp16:head=tied", "bf16:head=tied", "int8:head=tied"])
def test_compressed_head_matches_the_materialized_tied_head(tiny_dirs, tmp_path, spec) -> None:
    fly = _tied(tiny_dirs, tmp_path, spec)
    dense = _tied(tiny_dirs, tmp_path, spec, "materialized")
    head = fly.get_output_embeddings()
    assert isinstance(head, CompressedHead)
    assert head.source is fly.get_input_embeddings()
    # the table is held once, by the embedding; the head holds nothing of its own
    assert resident_bytes(head) == 0
    with torch.no_grad():
        got, want = fly(IDS).logits, dense(IDS).logits
    assert float((got - want).abs().max()) <= 0.02 * float(want.abs().max())
    assert head.choice.chosen in {c.name for c in fly.get_input_embeddings().head_kernels()}
    assert head.choice.decode_s[head.choice.chosen] is not None


def test_every_offered_kernel_is_correct(tiny_dirs, tmp_path) -> None:
    for spec in ("fp16:head=tied", "int8:head=tied"):
        base = _tied(tiny_dirs, tmp_path, spec)
        for cand in base.get_input_embeddings().head_kernels():
            try:
                model = _tied(tiny_dirs, tmp_path, spec, head_kernel=cand.name)
            except ArtifactError:
                continue  # a kernel this torch build lacks is rejected, never used
            assert model.get_output_embeddings().kernel_name == cand.name


def test_generation_with_a_compressed_head(tiny_dirs, tmp_path) -> None:
    model = _tied(tiny_dirs, tmp_path, "int8:head=tied")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = model.generate(IDS[:1], max_new_tokens=5, do_sample=False, pad_token_id=1)
    assert out.shape == (1, 17)


def test_unknown_forced_kernel_is_an_error(tiny_dirs, tmp_path) -> None:
    with pytest.raises(ArtifactError, match="no head kernel named"):
        _tied(tiny_dirs, tmp_path, "fp16:head=tied", head_kernel="nope")


def test_tt_keeps_a_dense_rebuilt_head(tiny_dirs, tmp_path) -> None:
    model = _tied(tiny_dirs, tmp_path, "tt:rank=2:head=tied")
    assert not isinstance(model.get_output_embeddings(), CompressedHead)


def test_wrong_or_failing_kernels_are_rejected() -> None:
    table = torch.randn(100, 16)

    def wrong():
        return lambda x: x @ table.T + 1.0

    def broken():
        raise RuntimeError("kernel missing in this build")

    def right():
        return lambda x: x @ table.T

    _, choice = select_kernel(
        [Candidate("wrong", wrong), Candidate("broken", broken), Candidate("right", right)],
        lambda ids: table[ids],
        100,
        16,
        calls=2,
    )
    assert choice.chosen == "right"
    assert "differ" in choice.rejected["wrong"] and "missing" in choice.rejected["broken"]
    with pytest.raises(ArtifactError, match="no head kernel works"):
        select_kernel([Candidate("wrong", wrong)], lambda ids: table[ids], 100, 16, calls=2)


def test_float_formats() -> None:
    table = torch.randn(50, 8) * 0.1
    for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        result = get_method(name).compress(table, parse_variant(name))
        assert result.tensors["table"].dtype == dtype
        assert table.numel() / result.params == pytest.approx(2.0)
        module = get_method(name).build_embedding(
            result.tensors, result.method, dtype=torch.float32
        )
        assert torch.equal(module.materialize(), table.to(dtype).float())
    with pytest.raises(ConfigError, match="no key 'bits'"):
        parse_variant("fp16:bits=4")


def test_layer0_gain_is_found(tiny_dirs) -> None:
    from tasks.models import layer0_gain

    for arch in ("llama", "gpt2"):
        model = load_model(tiny_dirs[arch], with_tokenizer=False)[0]
        gain = layer0_gain(model)
        width = model.get_input_embeddings().weight.shape[1]
        assert gain is not None and gain.shape == (width,)
    # the tiny OPT projects its 32-wide embedding to 48 before the first norm
    opt = load_model(tiny_dirs["opt"], with_tokenizer=False)[0]
    assert opt.model.decoder.layers[0].self_attn_layer_norm.weight.shape == (48,)
    assert layer0_gain(opt) is None


@pytest.mark.parametrize("rows", [1000, 48336 // 16])
def test_int8_kernel_on_a_ragged_table(rows: int) -> None:
    # torch's int8 kernel reads whole row blocks: the table is padded, the logits are not
    table = torch.randn(rows, 64) * 0.05
    result = get_method("int").compress(table, parse_variant("int8"))
    module = get_method("int").build_embedding(result.tensors, result.method, dtype=torch.float32)
    try:
        head = CompressedHead(module, only="int8pack-bf16")
    except ArtifactError:
        pytest.skip("torch's int8 kernel is not in this build")
    x = torch.randn(4, 64)
    exact = x @ module.materialize().T
    got = head(x)
    assert got.shape == (4, rows)
    assert float((got - exact).abs().max()) <= 0.02 * float(exact.abs().max())
