"""generate on tiny models: fixed work per query, timing, hashes, templates, batching."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from tasks.data import builtin_prompts
from tasks.errors import TaskError
from tasks.workloads import get_task
from tasks.workloads.generate import output_sha256

from .conftest import EOS, build_model


def prepare(model, tokenizer, **params):
    task = get_task("generate")
    return task.prepare(model, tokenizer, task.parse_params(params))


def run_all(prepared):
    return [prepared.run_query(i) for i in range(prepared.num_queries())]


def test_every_query_generates_exactly_max_new_tokens(any_model, tokenizer) -> None:
    prepared = prepare(any_model, tokenizer, max_new_tokens=7, num_queries=5)
    results = run_all(prepared)
    assert [r.output_tokens for r in results] == [7] * 5
    for r in results:
        assert 0 < r.ttft_s < r.latency_s
        assert r.tokens_per_s == pytest.approx(7 / r.latency_s)
        assert r.prompt_tokens == len(prepared.prompt_ids[r.index])
        assert len(r.output_sha256) == 64


def test_end_of_sequence_cannot_cut_a_query_short(tokenizer) -> None:
    """A model whose greedy choice is always the end-of-sequence token still does the work."""
    model = build_model("llama")
    with torch.no_grad():
        # no layer adds anything to the residual stream, embeddings are positive and the
        # head reads only the end-of-sequence row: its logit is the largest at every step
        for layer in model.model.layers:
            layer.mlp.down_proj.weight.zero_()
            layer.self_attn.o_proj.weight.zero_()
        model.model.embed_tokens.weight.abs_()
        model.model.norm.weight.fill_(1.0)
        model.lm_head.weight.zero_()
        model.lm_head.weight[EOS] = 1.0
    ids = torch.tensor([tokenizer("Hello there")["input_ids"]])
    plain = model.generate(input_ids=ids, max_new_tokens=6, do_sample=False)
    assert plain.shape[1] - ids.shape[1] == 1 and plain[0, -1] == EOS
    prepared = prepare(model, tokenizer, max_new_tokens=6, num_queries=2)
    assert [r.output_tokens for r in run_all(prepared)] == [6, 6]


def test_hash_matches_an_independent_greedy_decode(llama, tokenizer) -> None:
    prepared = prepare(llama, tokenizer, max_new_tokens=6, num_queries=3)
    for result in run_all(prepared):
        ids = torch.tensor([prepared.prompt_ids[result.index]])
        with torch.no_grad():
            for _ in range(6):  # no KV cache: the whole sequence every step
                logits = llama(input_ids=ids, use_cache=False).logits[0, -1]
                logits[EOS] = -float("inf")  # as min_new_tokens does
                ids = torch.cat([ids, logits.argmax().view(1, 1)], dim=1)
        text = tokenizer.decode(ids[0, -6:], skip_special_tokens=False)
        assert result.output_sha256 == hashlib.sha256(text.encode()).hexdigest()


def test_two_runs_give_identical_outputs(any_model, tokenizer) -> None:
    first = run_all(prepare(any_model, tokenizer, max_new_tokens=5, num_queries=4))
    second = run_all(prepare(any_model, tokenizer, max_new_tokens=5, num_queries=4))
    assert [r.output_sha256 for r in first] == [r.output_sha256 for r in second]
    assert len({r.output_sha256 for r in first}) > 1  # different prompts, different outputs


def test_queries_cycle_through_the_prompts(llama, tokenizer, tmp_path: Path) -> None:
    path = tmp_path / "three.txt"
    path.write_text("one two\nthree four\nfive six\n")
    prepared = prepare(llama, tokenizer, prompts=str(path), num_queries=5, max_new_tokens=3)
    results = run_all(prepared)
    assert [r.extra["prompt_indices"] for r in results] == [[0], [1], [2], [0], [1]]
    assert results[3].output_sha256 == results[0].output_sha256
    assert prepare(llama, tokenizer).num_queries() == len(builtin_prompts())


def test_batches_are_left_padded_and_do_the_same_work(llama, tokenizer) -> None:
    prepared = prepare(llama, tokenizer, batch_size=2, num_queries=2, max_new_tokens=4)
    results = run_all(prepared)
    assert [r.extra["prompt_indices"] for r in results] == [[0, 1], [2, 3]]
    assert [r.output_tokens for r in results] == [8, 8]
    assert results[0].prompt_tokens == len(prepared.prompt_ids[0]) + len(prepared.prompt_ids[1])
    assert prepare(llama, tokenizer, batch_size=5).num_queries() == 5  # ceil(24 / 5)


def test_chat_template_is_used_when_the_tokenizer_has_one(llama, chat_tokenizer, tokenizer) -> None:
    templated = prepare(llama, chat_tokenizer, max_new_tokens=2, num_queries=1)
    plain = prepare(llama, chat_tokenizer, max_new_tokens=2, num_queries=1, chat_template=False)
    assert templated.use_chat_template and not plain.use_chat_template
    assert chat_tokenizer.decode(templated.prompt_ids[0]).startswith("<s>user: ")
    assert len(templated.prompt_ids[0]) > len(plain.prompt_ids[0])
    assert not prepare(llama, tokenizer, max_new_tokens=2).use_chat_template
    with pytest.raises(TaskError, match="no chat template"):
        prepare(llama, tokenizer, chat_template=True)


def test_prompt_longer_than_the_context(tokenizer) -> None:
    short = build_model("gpt2", context=24)
    with pytest.raises(TaskError, match="context of 24"):
        prepare(short, tokenizer, max_new_tokens=20)


def test_scores_and_bad_query_index(llama, tokenizer) -> None:
    prepared = prepare(llama, tokenizer, max_new_tokens=3, num_queries=3)
    results = run_all(prepared)
    scores = {s.metric: s for s in prepared.scores(results)}
    assert scores["generated_tokens"].value == 9
    assert (
        scores["generated_tokens"].details["outputs_sha256"]
        == hashlib.sha256("".join(r.output_sha256 for r in results).encode()).hexdigest()
    )
    assert scores["tokens_per_s"].value > 0
    with pytest.raises(TaskError, match="does not exist"):
        prepared.run_query(3)


def test_output_hash_of_a_batch() -> None:
    assert output_sha256(["a"]) == hashlib.sha256(b"a").hexdigest()
    assert output_sha256(["a", "b"]) != output_sha256(["ab"])


def test_decode_time_per_token_counts_steps_of_the_batch() -> None:
    from tasks.workloads.base import QueryResult

    one = QueryResult(0, 10.0, 10.9, 5, 10, ttft_s=0.18)
    assert one.decode_s_per_token == pytest.approx(0.08)  # 9 steps after the first token
    # two sequences of 10 new tokens each: still 9 steps
    two = QueryResult(0, 10.0, 10.9, 10, 20, ttft_s=0.18, extra={"new_tokens_per_row": 10})
    assert two.decode_s_per_token == pytest.approx(0.08)
    assert QueryResult(0, 10.0, 10.2, 5, 1, ttft_s=0.18).decode_s_per_token is None
    assert QueryResult(0, 10.0, 10.9, 5, 10).decode_s_per_token is None
