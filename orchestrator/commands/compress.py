"""``tslm-fleet compress``: build (or find in the cache) the artifact of one variant."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from tasks.errors import ConfigError


def _summary(info: Any, elapsed_s: float) -> Any:
    from rich.table import Table

    m = info.manifest
    params = m["params"]
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("model", f"{m['model']} ({m['model_kind']}, sha256 {m['model_sha256'][:12]})")
    table.add_row("variant", m["variant"])
    if "shape" in params:
        shape = "x".join(map(str, params["shape"]))
        auto = params.get("shape_choice", {}).get("auto")
        table.add_row("tensor shape", f"{shape}{' (chosen automatically)' if auto else ''}")
        stats = params.get("rank_stats", {})
        if stats:
            means = ", ".join(f"{v:g}" for v in stats["mean"])
            table.add_row(
                "ranks", f"mean [{means}], max {stats['max']}, {stats['patterns']} rank pattern(s)"
            )
    table.add_row("table", f"{m['vocab_size']} x {m['hidden_size']}")
    table.add_row(
        "compression",
        f"{m['compression_ratio']:.3f}x "
        f"({m['embedding_params']:,} -> {m['compressed_params']:,} "
        "parameters)",
    )
    source = m.get("source_format")
    if source and m.get("compression_ratio_source") is not None:
        table.add_row(
            "vs source",
            f"{m['compression_ratio_source']:.3f}x against the model file's {source['name']} "
            f"({source['bytes'] / 1e6:.2f} MB)",
        )
    err = m["error"]["relative_reconstruction"]
    table.add_row(
        "rel. error", f"mean {err['mean']:.4f}, median {err['median']:.4f}, max {err['max']:.4f}"
    )
    table.add_row(
        "model params",
        f"{m['total_params_before']:,} -> {m['total_params']:,} (head {m['head_policy']})",
    )
    table.add_row("on disk", f"{m['size_bytes'] / 1e6:.2f} MB")
    took = "reused from the cache" if info.reused else f"{m['compress_time_s']:.2f} s"
    table.add_row("compress time", f"{took} (command {elapsed_s:.1f} s)")
    table.add_row("artifact", str(info.path))
    table.add_row("sha256", info.sha256)
    return table


def register(app: typer.Typer) -> None:
    """Add the ``compress`` command to ``app``."""
    app.command("compress")(compress)


def compress(
    variant: Annotated[
        str,
        typer.Option(
            "--variant",
            metavar="METHOD[:KEY=VALUE...]",
            help="The variant, e.g. tt:rank=8:shape=8x8x9, tt:eps=0.4, tt:ratio=2, svd:ratio=2, "
            "int:bits=4:group=64, int8, gguf:type=q4_0.",
        ),
    ],
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-m",
            help="Model: default (embedded SmolLM2), a .gguf file, a model directory or a "
            "Hugging Face id in the local cache.",
        ),
    ] = "default",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Artifact cache directory (default: $TSLM_CACHE/artifacts, TSLM_CACHE "
            "defaulting to ~/.cache/tslm-fleet).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Compress a model's embedding into an artifact.

    The artifact is cached by content: compressing the same model and variant again
    reuses it.
    """
    import time

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TimeElapsedColumn

    from tasks.artifacts import build_artifact
    from tasks.cache import ARTIFACTS, cache_path
    from tasks.compression import parse_variant
    from tasks.models import resolve_model

    spec = parse_variant(variant)
    if not spec.needs_artifact:
        raise ConfigError(
            "variant 'dense' is the unmodified model and has no artifact",
            hint="compress one of tt, svd, int, gguf",
        )
    ref = resolve_model(model)
    started = time.perf_counter()
    console = Console(stderr=True)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(f"loading {ref.name}", total=None)

        def progress(description: str, done: int, total: int) -> None:
            bar.update(task, description=description, completed=done, total=total)

        info = build_artifact(ref, spec, out or cache_path(ARTIFACTS), progress=progress)
    if as_json:
        typer.echo(json.dumps(info.manifest, indent=2, sort_keys=True))
        return
    Console().print(_summary(info, time.perf_counter() - started))
