"""Put a loaded model's own embedding and LM head back after a variant replaced them.

:func:`tasks.artifacts.apply_artifact` replaces the input embedding and, by the head
policy, unties or re-points the LM head. A device that measures several variants loads
the base model once, takes an :class:`EmbeddingSnapshot` right after loading, and
restores it before applying the next variant, so every variant starts from the very
tensors a fresh load would give.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def _configs(model: Any) -> list[Any]:
    configs = [model.config]
    text = getattr(model.config, "get_text_config", None)
    if callable(text):
        configs.append(text())
    return configs


@dataclass(frozen=True)
class EmbeddingSnapshot:
    """The base model's input embedding module, head weight and tie settings."""

    input_embedding: Any
    head_weight: Any
    tie_word_embeddings: tuple[Any, ...]
    tied_weights_keys: Any

    @classmethod
    def take(cls, model: Any) -> EmbeddingSnapshot:
        """Record what :func:`tasks.artifacts.apply_artifact` may change in ``model``."""
        head = model.get_output_embeddings()
        keys = getattr(model, "all_tied_weights_keys", None)
        return cls(
            input_embedding=model.get_input_embeddings(),
            head_weight=None if head is None else head.weight,
            tie_word_embeddings=tuple(
                getattr(c, "tie_word_embeddings", None) for c in _configs(model)
            ),
            tied_weights_keys=dict(keys) if isinstance(keys, dict) else keys,
        )

    def restore(self, model: Any) -> Any:
        """Put the recorded modules and settings back into ``model``; returns it."""
        model.set_input_embeddings(self.input_embedding)
        head = model.get_output_embeddings()
        if head is not None and self.head_weight is not None:
            head.weight = self.head_weight
        for config, value in zip(_configs(model), self.tie_word_embeddings, strict=False):
            if value is not None:
                config.tie_word_embeddings = value
        if self.tied_weights_keys is not None:
            model.all_tied_weights_keys = (
                dict(self.tied_weights_keys)
                if isinstance(self.tied_weights_keys, dict)
                else self.tied_weights_keys
            )
        return model
