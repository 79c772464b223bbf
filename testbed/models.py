"""A tiny offline language model for tests and benchmarks.

A 2-layer LLaMA with seeded random weights and a word-level tokenizer trained on the
built-in prompts and evaluation text, saved with ``save_pretrained`` like any local
Hugging Face directory. No model hub is needed.
"""

from __future__ import annotations

from pathlib import Path


def save_tiny_model(target: Path) -> None:
    """Write the tiny seeded LLaMA and its tokenizer to ``target`` (a model directory)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from tasks.data import builtin_prompts, builtin_text

    words = Tokenizer(models.WordLevel(unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False
    )
    words.train_from_iterator([*builtin_prompts(), builtin_text("eval")], trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=words,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<unk>",
    )
    torch.manual_seed(7)
    config = LlamaConfig(
        vocab_size=words.get_vocab_size(),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    LlamaForCausalLM(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
