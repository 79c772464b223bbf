"""Tiny offline models and a tokenizer for the workload tests.

The tokenizer is a byte-level BPE of 300 tokens trained here on the built-in texts; the
models are LLaMA, GPT-2 and OPT built from small configs with seeded random weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

VOCAB = 300
BOS, EOS = 1, 2
CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant:{% endif %}"
)


@pytest.fixture(scope="session")
def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from tasks.data import builtin_text

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([builtin_text("eval"), builtin_text("calibration")], trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


@pytest.fixture(scope="session")
def chat_tokenizer(tokenizer):
    import copy

    chat = copy.deepcopy(tokenizer)
    chat.chat_template = CHAT_TEMPLATE
    return chat


def build_model(arch: str, context: int = 256):
    """A tiny seeded model of one architecture, in eval mode."""
    import torch
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        OPTConfig,
        OPTForCausalLM,
    )

    torch.manual_seed(1234)
    if arch == "llama":
        config = LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=context,
            bos_token_id=BOS,
            eos_token_id=EOS,
        )
        model = LlamaForCausalLM(config)
    elif arch == "gpt2":
        config = GPT2Config(
            vocab_size=VOCAB,
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_positions=context,
            bos_token_id=BOS,
            eos_token_id=EOS,
        )
        model = GPT2LMHeadModel(config)
    elif arch == "opt":
        config = OPTConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            ffn_dim=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=context,
            word_embed_proj_dim=32,
            bos_token_id=BOS,
            eos_token_id=EOS,
            pad_token_id=0,
        )
        model = OPTForCausalLM(config)
    else:
        raise ValueError(arch)
    return model.eval()


ARCHS = ("llama", "gpt2", "opt")


@pytest.fixture(scope="session", params=ARCHS)
def any_model(request):
    return build_model(request.param)


@pytest.fixture(scope="session")
def llama():
    return build_model("llama")


@pytest.fixture(scope="session")
def crosscheck_record():
    """Record one lm-eval cross-check's figures; with ``TSLM_CROSSCHECK_SUMMARY=FILE`` the
    session writes them all there as JSON (items, accuracies, per-item agreement)."""
    records: list[dict] = []
    yield records.append
    target = os.environ.get("TSLM_CROSSCHECK_SUMMARY")
    if target and records:
        Path(target).write_text(json.dumps(records, indent=2) + "\n")
