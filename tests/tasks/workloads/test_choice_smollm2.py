"""The choice and last-word tasks against lm-evaluation-harness on the default model,
SmolLM2-135M-Instruct, dense and with a TT-compressed embedding: a handful of items each,
identical per-item decisions and identical accuracies."""

from __future__ import annotations

import pytest

from bench.lm_eval_reference import lm_eval_model, run_reference
from tasks.workloads import get_task

pytestmark = pytest.mark.slow
pytest.importorskip("lm_eval")

ITEMS = 8
TT_VARIANT = "tt:rank=6:shape=8x8x9"


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    from tasks.models import load_model, resolve_model

    ref = resolve_model("default")
    model, tokenizer = load_model(ref, cache_dir=tmp_path_factory.mktemp("models"))
    return ref, model, tokenizer


def _check(model, tokenizer, task_name: str, record, label: str) -> dict[str, float]:
    task = get_task(task_name)
    prepared = task.prepare(model, tokenizer, task.parse_params({"limit": ITEMS, "seed": 11}))
    queries = [prepared.run_query(i) for i in range(prepared.num_queries())]
    scores = {s.metric: s.value for s in prepared.scores(queries)}
    results = prepared.item_records(queries)
    reference = run_reference(lm_eval_model(model, tokenizer), task_name, prepared.data.items)
    assert len(results) == len(reference.items) == ITEMS
    for ours, ref in zip(results, reference.items, strict=True):
        assert ours["acc"] == ref.acc
        if task_name == "choice":
            assert ours["acc_norm"] == ref.acc_norm
            assert ours["logprobs"] == pytest.approx(ref.logprobs, abs=2e-3)
        else:
            assert ours["logprob"] == pytest.approx(ref.logprobs[0], abs=2e-3)
    agree = sum(
        (o["acc"], o.get("acc_norm")) == (r.acc, r.acc_norm)
        for o, r in zip(results, reference.items, strict=True)
    )
    record(
        {
            "check": label,
            "task": task_name,
            "items": len(results),
            "ours": {k: scores.get(k) for k in ("acc", "acc_norm")},
            "lm_eval": {k: reference.metrics.get(k) for k in ("acc", "acc_norm")},
            "items_agreeing": agree,
        }
    )
    assert scores["acc"] == reference.metrics["acc"]
    if task_name == "choice":
        assert scores["acc_norm"] == reference.metrics["acc_norm"]
    return scores


@pytest.mark.timeout(1800)  # the model's conversion and lm-eval on a busy 2-core machine
def test_dense_matches_lm_eval(smollm2, crosscheck_record) -> None:
    _, model, tokenizer = smollm2
    choice = _check(model, tokenizer, "choice", crosscheck_record, "SmolLM2 dense")
    assert choice["acc"] > 0.25  # better than chance on the smoke items
    _check(model, tokenizer, "last-word", crosscheck_record, "SmolLM2 dense")


@pytest.mark.timeout(1800)
def test_compressed_variant_matches_lm_eval(smollm2, tmp_path, crosscheck_record) -> None:
    from tasks.artifacts import apply_artifact, build_artifact, load_artifact
    from tasks.compression import parse_variant

    ref, model, tokenizer = smollm2
    info = build_artifact(ref, parse_variant(TT_VARIANT), tmp_path, model=model)
    assert info is not None
    compressed = apply_artifact(model, load_artifact(info.path, info.sha256))
    label = f"SmolLM2 {TT_VARIANT}"
    _check(compressed, tokenizer, "choice", crosscheck_record, label)
    _check(compressed, tokenizer, "last-word", crosscheck_record, label)
