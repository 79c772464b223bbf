"""The choice and last-word tasks against lm-evaluation-harness itself, on tiny models.

The tokenizer is a real byte-level BPE (trained on the built-in texts), so contexts with
trailing spaces, empty contexts, merges across the context/continuation boundary and
inputs longer than the model's context all take lm-eval's own paths.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.lm_eval_reference import lm_eval_model, run_reference
from tasks.workloads import get_task
from tasks.workloads.item_sources import load_items
from tasks.workloads.items import ChoiceItem, LastWordItem
from tasks.workloads.loglikelihood import LoglikelihoodScorer, encode_pair, encode_requests
from tests.tasks.workloads.conftest import build_model

pytest.importorskip("lm_eval")

#: pairs whose split exercises lm-eval's rules: trailing whitespace, empty context, merges
PAIRS = [
    ("Question: what is it?\nAnswer:", " a wooden spoon"),
    ("The answer is ", "yes"),
    ("Ends with two spaces  ", "then text"),
    ("Line break\n", "next line"),
    ("", " starts the text"),
    ("", "<s> after the prefix token"),
    ("the bread", "s were warm"),  # 'bread' + 's' may merge across the boundary
    ("tomato", "es on a balcony"),
]

EXTRA_CHOICE_ITEMS = [
    {"context": "The answer is ", "choices": ["yes", "no", "maybe"], "gold": 1},
    {"context": "", "choices": ["The sea is blue.", "The sea is loud."], "gold": 0},
    {"context": "the bread", "choices": ["s were warm", "ed fish", "box"], "gold": 2},
    # longer than the tiny model's 256 positions: lm-eval truncates from the left
    {"context": "word " * 300 + "and the last", "choices": ["one", "two words"], "gold": 0},
]


@pytest.fixture(scope="module")
def lm(tokenizer):
    return lm_eval_model(build_model("llama"), tokenizer)


@pytest.mark.parametrize(("context", "continuation"), PAIRS)
def test_encode_pair_is_lm_evals(lm, tokenizer, context: str, continuation: str) -> None:
    if context:
        expected = lm._encode_pair(context, continuation)
    else:
        (request,) = _requests(lm, context, [continuation])
        expected = (request[1], request[2])
    assert encode_pair(tokenizer, context, continuation) == tuple(map(list, expected))


def _requests(lm, context, continuations):
    """The (strings, context ids, continuation ids) lm-eval's loglikelihood builds."""
    from lm_eval.api.instance import Instance

    captured = []

    def capture(requests, **kwargs):
        captured.extend(requests)
        return [(0.0, False)] * len(requests)

    instances = [
        Instance("loglikelihood", {}, (context, c), i) for i, c in enumerate(continuations)
    ]
    lm._loglikelihood_tokens = capture
    try:
        lm.loglikelihood(instances, disable_tqdm=True)
    finally:
        del lm._loglikelihood_tokens
    return captured


def test_a_boundary_merge_keeps_the_contexts_own_tokens(tokenizer) -> None:
    context, continuation = "the bread", "s were warm"
    ctx, cont = encode_pair(tokenizer, context, continuation)
    whole = tokenizer.encode(context + continuation)
    assert ctx == tokenizer.encode(context) and cont == whole[len(ctx) :]


def test_empty_context_groups_by_prefix(tokenizer) -> None:
    groups = encode_requests(tokenizer, "", [" plain", "<s> prefixed"])
    assert sorted(pos for _, positions in groups for pos in positions) == [0, 1]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "opt"])
def test_shared_context_scores_as_full_sequences(tokenizer, arch: str) -> None:
    model = build_model(arch)
    shared = LoglikelihoodScorer(model, tokenizer)
    assert shared.cache_arg is not None  # these models take a key/value cache
    full = LoglikelihoodScorer(model, tokenizer, batch_size=2)
    continuations = [" a", " wooden spoon", " glass marble and more", " x"]
    context = "Question: which one conducts?\nAnswer:"
    a = shared.loglikelihoods(context, continuations)
    ((request, _),) = encode_requests(tokenizer, context, continuations)
    b = full._score_full(request)
    assert [r.tokens for r in a] == [r.tokens for r in b]
    assert [r.is_greedy for r in a] == [r.is_greedy for r in b]
    for x, y in zip(a, b, strict=True):
        assert x.logprob == pytest.approx(y.logprob, abs=1e-4)
    # smaller batches encode the context again for each batch, with the same results
    ((request, _),) = encode_requests(tokenizer, context, continuations)
    small = LoglikelihoodScorer(model, tokenizer, batch_size=1)._score_shared(request)
    assert [r.logprob for r in small] == pytest.approx([r.logprob for r in a], abs=1e-5)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "opt"])
def test_grouped_items_score_as_one_item_at_a_time(tokenizer, arch: str) -> None:
    from tasks.workloads.grouped import groupable, score_group

    model = build_model(arch)
    scorer = LoglikelihoodScorer(model, tokenizer)
    assert groupable(scorer)
    items = [
        ("A short one:", [" yes", " no way at all"]),
        ("A much longer context that needs padding on the left of the batch:", [" x", " yz"]),
        ("Question: which?\nAnswer:", [" the first", " the second one", " c"]),
    ]
    requests = [encode_requests(tokenizer, c, conts)[0][0] for c, conts in items]
    grouped = score_group(scorer, requests)
    for request, results in zip(requests, grouped, strict=True):
        alone = scorer._score_full(request)
        assert [r.is_greedy for r in results] == [r.is_greedy for r in alone]
        assert [r.logprob for r in results] == pytest.approx([r.logprob for r in alone], abs=1e-4)


def _jsonl(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def _run(task_name: str, model, tokenizer, params: dict):
    task = get_task(task_name)
    prepared = task.prepare(model, tokenizer, task.parse_params(params))
    results = [prepared.run_query(i) for i in range(prepared.num_queries())]
    return prepared, prepared.item_records(results), {s.metric: s for s in prepared.scores(results)}


@pytest.mark.parametrize("per_query", [8, 1])
def test_choice_matches_lm_eval_item_by_item(
    lm, tokenizer, tmp_path: Path, crosscheck_record, per_query: int
) -> None:
    smoke = load_items("choice", "smoke", None, None).items
    records = [{"context": i.context, "choices": list(i.choices), "gold": i.gold} for i in smoke]
    data = _jsonl(tmp_path / "items.jsonl", records + EXTRA_CHOICE_ITEMS)
    params = {"data": data, "items_per_query": per_query}
    prepared, results, scores = _run("choice", lm.model, tokenizer, params)
    reference = run_reference(lm, "choice", prepared.data.items)
    assert len(reference.items) == len(results) == 44
    for ours, ref in zip(results, reference.items, strict=True):
        assert ours["doc_id"] == ref.doc_id
        assert (ours["acc"], ours["acc_norm"]) == (ref.acc, ref.acc_norm)
        assert ours["logprobs"] == pytest.approx(ref.logprobs, abs=1e-4)
    crosscheck_record(
        {
            "check": f"tiny llama, byte-level BPE, {per_query} item(s) per query",
            "task": "choice",
            "items": len(results),
            "ours": {"acc": scores["acc"].value, "acc_norm": scores["acc_norm"].value},
            "lm_eval": {k: reference.metrics[k] for k in ("acc", "acc_norm")},
            "items_agreeing": len(results),  # every item asserted equal above
        }
    )
    assert scores["acc"].value == reference.metrics["acc"]
    assert scores["acc_norm"].value == reference.metrics["acc_norm"]
    assert scores["acc_stderr"].value == pytest.approx(reference.metrics["acc_stderr"])
    assert scores["acc_norm_stderr"].value == pytest.approx(reference.metrics["acc_norm_stderr"])
    assert scores["items"].value == 44 and scores["acc"].details["doc_ids"] == list(range(44))


def test_last_word_matches_lm_eval_item_by_item(lm, tokenizer, tmp_path: Path) -> None:
    model = lm.model
    smoke = [i.text for i in load_items("last-word", "smoke", None, None).items]
    # passages whose last word this tiny model predicts greedily, so acc is not all zero
    greedy = _greedy_passages(model, tokenizer)
    data = _jsonl(tmp_path / "lw.jsonl", [{"text": t} for t in [*smoke, *greedy, "alone"]])
    prepared, results, scores = _run("last-word", model, tokenizer, {"data": data})
    reference = run_reference(lm, "last-word", prepared.data.items)
    for ours, ref in zip(results, reference.items, strict=True):
        assert ours["acc"] == ref.acc
        assert ours["logprob"] == pytest.approx(ref.logprobs[0], abs=1e-4)
    assert 0 < scores["acc"].value == reference.metrics["acc"]
    assert scores["acc_stderr"].value == pytest.approx(reference.metrics["acc_stderr"])
    assert scores["word_perplexity"].value == pytest.approx(
        reference.metrics["perplexity"], rel=1e-4
    )


def _greedy_passages(model, tokenizer) -> list[str]:
    """Passages ending in a word that is the model's own greedy next token."""
    import torch

    from tasks.data import builtin_text

    words = builtin_text("eval").split()
    out = []
    for start in range(0, 600, 15):
        context = " ".join(words[start : start + 8])
        with torch.inference_mode():
            logits = model(torch.tensor([tokenizer.encode(context)])).logits[0, -1]
        word = tokenizer.decode([int(logits.argmax())])
        if word.startswith(" ") and word[1:].isalpha():
            out.append(context + word)
    return out


def test_scores_record_the_subset_and_stderr_needs_two_items(tokenizer, tmp_path) -> None:
    model = build_model("gpt2")
    data = _jsonl(tmp_path / "i.jsonl", [r for r in EXTRA_CHOICE_ITEMS[:3]])
    _, results, scores = _run("choice", model, tokenizer, {"data": data, "limit": 2, "seed": 5})
    assert scores["items"].value == 2 == len(results)
    assert len(scores["acc"].details["doc_ids"]) == 2
    _, _, one = _run("choice", model, tokenizer, {"data": data, "limit": 1})
    assert "acc_stderr" not in one and one["items"].value == 1
    assert ChoiceItem(0, "c", ("a", "b"), 0).choices == ("a", "b")
    assert LastWordItem(0, "x y").target == " y"
