"""Tiny seeded transformers models (GPT-2, OPT, LLaMA) built from configs, saved to disk.

Hidden sizes factor into order-3 shapes (48 = 3x4x4, 64 = 4x4x4; OPT's 32-wide
embedding = 2x4x4). No hub: configs and random weights only; a word-level tokenizer is
saved alongside so that ``load_model`` loads the directory like a real one.
"""

from __future__ import annotations

from pathlib import Path

import torch

VOCAB = 256


def build(arch: str, *, tie: bool = True, seed: int = 0):
    """A tiny causal LM of ``arch`` (gpt2, opt or llama) with seeded random weights."""
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        OPTConfig,
        OPTForCausalLM,
    )

    torch.manual_seed(seed)
    if arch == "gpt2":
        config = GPT2Config(
            vocab_size=VOCAB,
            n_embd=64,
            n_layer=2,
            n_head=4,
            n_positions=64,
            bos_token_id=0,
            eos_token_id=1,
            tie_word_embeddings=tie,
        )
        model = GPT2LMHeadModel(config)
    elif arch == "opt":
        config = OPTConfig(
            vocab_size=VOCAB,
            hidden_size=48,
            ffn_dim=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            word_embed_proj_dim=32,
            max_position_embeddings=64,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            tie_word_embeddings=tie,
        )
        model = OPTForCausalLM(config)
    elif arch == "llama":
        config = LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            bos_token_id=0,
            eos_token_id=1,
            tie_word_embeddings=tie,
        )
        model = LlamaForCausalLM(config)
    else:
        raise ValueError(arch)
    # spread the embedding like a trained one so that truncation has something to lose
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb.copy_(torch.randn_like(emb) * torch.linspace(0.5, 1.5, emb.shape[1]))
    return model.eval()


def tokenizer():
    """A word-level fast tokenizer over ``VOCAB`` ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<s>", "</s>", "<pad>", "<unk>"] + [f"w{i}" for i in range(VOCAB - 4)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )


def save(directory: Path, arch: str, *, tie: bool = True) -> Path:
    """Save a tiny ``arch`` model and tokenizer into ``directory``; returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    build(arch, tie=tie).save_pretrained(directory)
    tokenizer().save_pretrained(directory)
    return directory
