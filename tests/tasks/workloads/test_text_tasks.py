"""perplexity and next-token on tiny LLaMA, GPT-2 and OPT models, checked against direct
computations that do not use the task's window code."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tasks.errors import TaskError
from tasks.quality import combined_perplexity
from tasks.workloads import get_task

from .conftest import build_model


def run_all(task_name: str, model, tokenizer, **params):
    task = get_task(task_name)
    prepared = task.prepare(model, tokenizer, task.parse_params(params))
    results = [prepared.run_query(i) for i in range(prepared.num_queries())]
    return prepared, results, {s.metric: s for s in prepared.scores(results)}


def token_ids(tokenizer, max_tokens: int) -> torch.Tensor:
    from tasks.data import builtin_text

    return torch.tensor(tokenizer(builtin_text("eval"), verbose=False)["input_ids"][:max_tokens])


def test_disjoint_windows_match_the_models_own_loss(any_model, tokenizer) -> None:
    window, n = 64, 600
    _, results, scores = run_all(
        "perplexity", any_model, tokenizer, window=window, stride=window, max_tokens=n
    )
    ids = token_ids(tokenizer, n)
    nll, count = 0.0, 0
    with torch.no_grad():
        for chunk in ids.split(window):
            if len(chunk) < 2:
                continue
            loss = any_model(input_ids=chunk[None], labels=chunk[None]).loss
            nll += float(loss) * (len(chunk) - 1)
            count += len(chunk) - 1
    assert scores["scored_tokens"].value == count == sum(r.extra["scored_tokens"] for r in results)
    assert scores["nll_sum"].value == pytest.approx(nll, rel=1e-5)
    assert scores["perplexity"].value == pytest.approx(math.exp(nll / count), rel=1e-5)


def test_overlapping_windows_match_token_by_token_scoring(llama, tokenizer) -> None:
    window, stride, n = 16, 5, 45
    _, _, scores = run_all(
        "perplexity", llama, tokenizer, window=window, stride=stride, max_tokens=n
    )
    ids = token_ids(tokenizer, n)
    nll = 0.0
    with torch.no_grad():
        for p in range(1, n):
            # token p is scored by the first window that reaches past it
            k = 0 if p < window else (p - window) // stride + 1
            context = ids[k * stride : p + 1]
            logits = llama(input_ids=context[None]).logits[0, -2]
            nll -= float(torch.log_softmax(logits.double(), -1)[ids[p]])
    assert scores["scored_tokens"].value == n - 1
    assert scores["nll_sum"].value == pytest.approx(nll, rel=1e-5)


def test_perplexity_is_deterministic_and_combines_exactly(llama, tokenizer) -> None:
    prepared, first, scores = run_all("perplexity", llama, tokenizer, window=128, stride=64)
    _, second, again = run_all("perplexity", llama, tokenizer, window=128, stride=64)
    assert [r.extra for r in first] == [r.extra for r in second]
    assert scores["perplexity"].value == again["perplexity"].value
    assert prepared.num_queries() == len(prepared.windows) > 10
    # two devices each running half of the windows give the same number
    half = len(first) // 2
    parts = [
        (sum(r.extra["nll_sum"] for r in rs), sum(r.extra["scored_tokens"] for r in rs))
        for rs in (first[:half], first[half:])
    ]
    assert combined_perplexity(parts) == pytest.approx(scores["perplexity"].value, rel=1e-12)
    assert all(r.t_end > r.t_start and r.prompt_tokens <= 128 for r in first)
    assert scores["perplexity"].details["text_tokens"] == len(token_ids(tokenizer, 10**6))


def test_window_is_capped_at_the_models_context(tokenizer) -> None:
    short = build_model("gpt2", context=48)
    prepared, _, scores = run_all("perplexity", short, tokenizer, window=1024, max_tokens=300)
    assert prepared.window == 48 and prepared.stride == 24
    assert scores["perplexity"].details["window"] == 48


def test_scores_need_every_window_once(llama, tokenizer) -> None:
    prepared, results, _ = run_all("perplexity", llama, tokenizer, window=32, max_tokens=200)
    with pytest.raises(TaskError, match="every window exactly once"):
        prepared.scores(results[:-1])
    with pytest.raises(TaskError, match="does not exist"):
        prepared.run_query(prepared.num_queries())


def test_too_short_text(llama, tokenizer, tmp_path: Path) -> None:
    path = tmp_path / "one.txt"
    path.write_text("a")
    task = get_task("perplexity")
    with pytest.raises(TaskError, match="at least 2"):
        task.prepare(llama, tokenizer, task.parse_params({"text": str(path)}))


def test_next_token_accuracy_matches_direct_argmax(any_model, tokenizer) -> None:
    window, n = 50, 400
    _, results, scores = run_all(
        "next-token", any_model, tokenizer, window=window, stride=window, max_tokens=n
    )
    ids = token_ids(tokenizer, n)
    top1 = top5 = count = 0
    with torch.no_grad():
        for chunk in ids.split(window):
            logits = any_model(input_ids=chunk[None]).logits[0, :-1]
            targets = chunk[1:]
            top1 += int((logits.argmax(-1) == targets).sum())
            top5 += int((logits.topk(5, -1).indices == targets[:, None]).any(-1).sum())
            count += len(targets)
    assert scores["scored_tokens"].value == count
    assert (scores["top1_hits"].value, scores["top5_hits"].value) == (top1, top5)
    assert scores["top1"].value == top1 / count and scores["top5"].value == top5 / count
    assert top5 >= top1
    assert sum(r.extra["top1_hits"] for r in results) == top1


def test_next_token_counts_a_memorised_text_as_hits(tokenizer) -> None:
    """A model that always predicts the true next token scores 1.0, so hits are real hits."""
    ids = token_ids(tokenizer, 120)

    class Oracle(torch.nn.Module):
        config = type("Config", (), {"max_position_embeddings": 512})()

        def forward(self, input_ids, use_cache=False):
            row = input_ids[0]
            start = next(s for s in range(len(ids)) if torch.equal(ids[s : s + len(row)], row))
            following = torch.cat([ids, ids[:1]])[start + 1 : start + 1 + len(row)]
            logits = torch.full((1, len(row), 300), -5.0)
            logits[0, torch.arange(len(row)), following] = 5.0
            return type("Out", (), {"logits": logits})()

    _, _, scores = run_all("next-token", Oracle(), tokenizer, window=40, stride=20, max_tokens=120)
    assert scores["top1"].value == 1.0 and scores["scored_tokens"].value == 119


def test_models_without_logits_to_keep_give_the_same_sums(llama, tokenizer) -> None:
    class FullLogits(torch.nn.Module):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner, self.config = inner, inner.config

        def forward(self, input_ids, use_cache=False):
            return self.inner(input_ids=input_ids, use_cache=use_cache)

    params = {"window": 40, "stride": 15, "max_tokens": 300}
    prepared, trimmed, _ = run_all("perplexity", llama, tokenizer, **params)
    plain, full, _ = run_all("perplexity", FullLogits(llama), tokenizer, **params)
    assert prepared._keeps_logits and not plain._keeps_logits
    for a, b in zip(trimmed, full, strict=True):
        assert a.extra["nll_sum"] == pytest.approx(b.extra["nll_sum"], rel=1e-5)
