"""The base model of one agent process, loaded once and shared by the jobs it runs.

A device measures several variants of the same base model in one agent process (a job
batch). :class:`LoadedModels` loads the base model for the first job, keeps it, and for
every job puts the base embedding and head back before applying that job's artifact, so
each variant runs on exactly the model a fresh load would give. The model file's sha256
is checked once per process as well.

Kept for the next jobs, the base input table would stay resident under a variant that no
longer reads it (its embedding and head replaced, e.g. a tied head computed from the
compressed table), and a variant could then never take less memory than dense. Where the
loader mapped that table from its safetensors file, its pages are released from the
resident set while such a variant runs (read back from the file when a later job uses the
base table again; see :func:`agent.memory.release_file_pages`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class LoadedModels:
    """At most one base model (the last one asked for) and what was verified."""

    def __init__(self) -> None:
        self._key: tuple[str, str] | None = None
        self._model: Any = None
        self._tokenizer: Any = None
        self._snapshot: Any = None
        self._verified: set[tuple[str, str]] = set()
        #: how many times a base model was loaded (1 for a batch over one model)
        self.base_loads = 0
        #: bytes of the base input table released for the last variant applied
        self.released_bytes = 0

    def is_verified(self, path: Path, sha256: str) -> bool:
        return (str(path), sha256) in self._verified

    def mark_verified(self, path: Path, sha256: str) -> None:
        self._verified.add((str(path), sha256))

    def has_base(self, ref: Any) -> bool:
        """Whether the base model of ``ref`` is loaded already."""
        return self._key == (str(ref.path), ref.sha256)

    def model_for(self, ref: Any, cache_dir: Path, artifact: Any, mode: str) -> tuple[Any, Any]:
        """``(model, tokenizer)``: the base model of ``ref`` with ``artifact`` applied
        (None: dense). The base model is loaded only when it is not loaded already."""
        from tasks.embedding_swap import EmbeddingSnapshot

        if not self.has_base(ref):
            from tasks.models import load_model

            self._key = None
            self._model = self._tokenizer = self._snapshot = None
            model, tokenizer = load_model(ref, cache_dir=cache_dir)
            self._model, self._tokenizer = model, tokenizer
            self._snapshot = EmbeddingSnapshot.take(model)
            self._key = (str(ref.path), ref.sha256)
            self.base_loads += 1
        else:
            self._snapshot.restore(self._model)
        model = self._model
        if artifact is not None:
            from tasks.artifacts import apply_artifact

            try:
                model = apply_artifact(model, artifact, mode=mode)
            except BaseException:
                self._snapshot.restore(self._model)
                raise
        self.released_bytes = self._release_base_table(model)
        return model, self._tokenizer

    def _release_base_table(self, model: Any) -> int:
        """Release the resident pages of the base input table when neither the input
        embedding nor the head of ``model`` reads it any more; the bytes released."""
        from agent.memory import release_file_pages

        table = getattr(self._snapshot.input_embedding, "weight", None)
        if table is None or model.get_input_embeddings() is self._snapshot.input_embedding:
            return 0
        head = model.get_output_embeddings()
        if head is not None and getattr(head, "weight", None) is table:
            return 0
        return release_file_pages(table.data_ptr(), table.numel() * table.element_size())
