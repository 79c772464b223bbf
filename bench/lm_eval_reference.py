"""Run lm-evaluation-harness itself on the items of a ``choice`` or ``last-word`` task.

The items are written to a JSONL file and scored through a local lm-eval task built from
the same fields (``context`` / ``choices`` / ``gold``, or lm-eval's ``lambada_openai``
split of ``text``), with lm-eval's own Hugging Face model wrapper (``HFLM``) around the
very model object tslm-fleet scores. The cross-check tests and ``bench_choice`` compare
tslm-fleet's per-item decisions and accuracies with what this returns.

Needs the ``lm-eval`` package (the ``dev`` extra). Nothing is downloaded: the hub is
switched off before lm-eval and ``datasets`` are imported.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.workloads.named_data import item_record

#: one lm-eval task definition per tslm-fleet task, the item fields read as they are
TASK_CONFIGS: dict[str, dict[str, Any]] = {
    "choice": {
        "output_type": "multiple_choice",
        "doc_to_text": "context",
        "doc_to_choice": "choices",
        "doc_to_target": "gold",
        "target_delimiter": " ",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
    },
    # lm-eval's lambada_openai definitions
    "last-word": {
        "output_type": "loglikelihood",
        "doc_to_text": "{{text.split(' ')[:-1]|join(' ')}}",
        "doc_to_target": "{{' '+text.split(' ')[-1]}}",
        "metric_list": [
            {"metric": "perplexity", "aggregation": "perplexity", "higher_is_better": False},
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
        ],
    },
}


@dataclass(frozen=True)
class ReferenceItem:
    """lm-eval's outcome for one item (``doc_id`` = position in the items given)."""

    doc_id: int
    acc: float
    acc_norm: float | None
    logprobs: tuple[float, ...]


@dataclass(frozen=True)
class ReferenceResult:
    """lm-eval's aggregate metrics and per-item outcomes."""

    metrics: dict[str, float]
    items: tuple[ReferenceItem, ...]


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")


def write_task(directory: Path, task: str, items: Sequence[Any], name: str) -> Path:
    """Write the items and an lm-eval task YAML named ``name`` into ``directory``."""
    data = directory / f"{name}.jsonl"
    data.write_text("".join(json.dumps(item_record(i)) + "\n" for i in items))
    config = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test",
        **TASK_CONFIGS[task],
        "metadata": {"version": 1.0},
    }
    path = directory / f"{name}.yaml"
    path.write_text(json.dumps(config, indent=1))  # JSON is YAML
    return path


def lm_eval_model(model: Any, tokenizer: Any, batch_size: int = 1) -> Any:
    """lm-eval's ``HFLM`` wrapped around an already loaded model and tokenizer."""
    _offline()
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device="cpu")


def run_reference(lm: Any, task: str, items: Sequence[Any]) -> ReferenceResult:
    """Score ``items`` of ``task`` ("choice" or "last-word") with lm-eval through ``lm``."""
    _offline()
    import lm_eval
    from lm_eval.tasks import TaskManager

    name = f"tslm_{task.replace('-', '_')}"
    with tempfile.TemporaryDirectory(prefix="tslm-lm-eval-") as tmp:
        write_task(Path(tmp), task, items, name)
        out = lm_eval.simple_evaluate(
            model=lm,
            tasks=[name],
            task_manager=TaskManager(include_path=tmp, include_defaults=False),
            log_samples=True,
            bootstrap_iters=0,
            verbosity="ERROR",
        )
    metrics = {
        key.split(",")[0]: float(value)
        for key, value in out["results"][name].items()
        if "," in key and isinstance(value, int | float)
    }
    items = tuple(_item(s) for s in sorted(out["samples"][name], key=lambda s: s["doc_id"]))
    metrics.update(_stderrs(items))
    return ReferenceResult(metrics, items)


def _stderrs(items: Sequence[ReferenceItem]) -> dict[str, float]:
    """lm-eval's closed-form standard errors of the accuracies (its ``mean_stderr``).

    Computed here from lm-eval's per-item values because ``simple_evaluate`` would also
    bootstrap the perplexity's, in a process pool, to get them.
    """
    from lm_eval.api.metrics import mean_stderr

    out = {"acc_stderr": mean_stderr([i.acc for i in items])}
    if all(i.acc_norm is not None for i in items):
        out["acc_norm_stderr"] = mean_stderr([i.acc_norm for i in items])
    return out


def _item(sample: dict[str, Any]) -> ReferenceItem:
    logprobs = tuple(float(resp[0]) for resp in sample["filtered_resps"])
    acc_norm = sample.get("acc_norm")
    return ReferenceItem(
        doc_id=int(sample["doc_id"]),
        acc=float(sample["acc"]),
        acc_norm=None if acc_norm is None else float(acc_norm),
        logprobs=logprobs,
    )
