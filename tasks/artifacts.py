"""Compressed-embedding artifacts: build (controller), verify and load (device), apply.

An artifact is a directory::

    <model>-<variant slug>-<key>/
        manifest.json       what was compressed, how, how well, and the sha256 of every file
        cores.safetensors   the compressed tensors (never pickle)

``key`` derives from the model's sha256, the canonical variant and the format version, so
the same request finds the same directory and is not recomputed. The artifact's identity
is the sha256 of ``manifest.json``'s bytes; loading verifies it (when the caller knows
it) and the sha256 of every listed file.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks import __version__
from tasks.cache import MODELS, cache_path
from tasks.compression import VariantSpec, get_method
from tasks.errors import ArtifactError, CompressionError, ConfigError
from tasks.hashing import sha256_file
from tasks.models import ModelRef

if TYPE_CHECKING:
    import torch

    from tasks.compression.base import Progress

FORMAT = "tslm-embedding-artifact"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TENSORS = "cores.safetensors"
HEAD_TIED_WARNING = (
    "head=tied: the LM head uses the reconstructed table; quality falls far "
    "more than with the input embedding alone"
)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class ArtifactInfo:
    """A built artifact on the controller: its directory, manifest and identity."""

    path: Path
    manifest: dict[str, Any]
    #: sha256 of manifest.json's bytes: the identity the agent verifies
    sha256: str
    #: True when the cache already held it
    reused: bool = False

    def files(self) -> list[Path]:
        """Every file of the artifact (manifest first), as the controller pushes them."""
        return [self.path / MANIFEST, *(self.path / name for name in self.manifest["files"])]


@dataclass(frozen=True)
class Artifact:
    """A verified artifact loaded for use: manifest plus its tensors."""

    path: Path
    manifest: dict[str, Any]
    sha256: str
    tensors: dict[str, torch.Tensor] = field(repr=False)

    @property
    def method(self) -> str:
        return self.manifest["method"]

    @property
    def head_policy(self) -> str:
        return self.manifest["head_policy"]


def artifact_key(model_ref: ModelRef, variant: VariantSpec) -> str:
    """Content key of a request: model sha256 + canonical variant + format version."""
    text = f"{FORMAT}\n{FORMAT_VERSION}\n{model_ref.sha256}\n{variant.canonical}\n"
    return hashlib.sha256(text.encode()).hexdigest()


def artifact_dirname(model_ref: ModelRef, variant: VariantSpec) -> str:
    """Directory name of a request inside the cache (readable, unique by content)."""
    model = re.sub(r"[^A-Za-z0-9._-]", "-", model_ref.name)[:48].strip(".-") or "model"
    return f"{model}-{variant.slug[:80]}-{artifact_key(model_ref, variant)[:16]}"


def _model_params(total: int, emb: int, after: int, tied: bool) -> dict[str, int | None]:
    """Whole-model parameters after compression under each head policy."""
    return {
        # the head keeps a dense copy of the original table
        "keep-dense": total - emb + after + (emb if tied else 0),
        # the head reuses the reconstructed table (only for a tied base model)
        "tied": total - emb + after if tied else None,
    }


def _error_stats(errors: torch.Tensor) -> dict[str, float]:
    import torch

    e = errors.to(torch.float64)
    return {
        "mean": float(e.mean()),
        "median": float(e.median()),
        "p95": float(torch.quantile(e, 0.95)),
        "max": float(e.max()),
        "rms": float((e * e).mean().sqrt()),
    }


def build_artifact(
    model_ref: ModelRef,
    variant: VariantSpec,
    cache_dir: Path,
    *,
    progress: Progress | None = None,
    model: Any = None,
    tokenizer: Any = None,
) -> ArtifactInfo | None:
    """Compress ``model_ref``'s input embedding as ``variant`` says, cached by content.

    Returns None for the identity variant ``dense`` (no artifact). An existing, intact
    artifact for the same model sha256 and canonical variant is returned without
    recomputing (``reused=True``); a damaged one is rebuilt. ``model`` (and ``tokenizer``,
    used by variants that count tokens of the calibration text) may pass what is already
    loaded to skip loading it again.
    """
    if not variant.needs_artifact:
        return None
    cache_dir = Path(cache_dir)
    target = cache_dir / artifact_dirname(model_ref, variant)
    cached = _cached(target)
    if cached is not None:
        return cached
    import torch

    from tasks.compression.base import relative_row_errors
    from tasks.compression.source import source_format
    from tasks.models import count_params, head_is_tied

    model, table, extra = _compression_inputs(model_ref, variant, cache_dir, model, tokenizer)
    tied = head_is_tied(model)
    if variant.head == "tied" and not tied:
        raise CompressionError(
            f"variant '{variant.canonical}': head=tied, but {model_ref.name} "
            "does not tie its LM head to the input embedding",
            hint="leave head at keep-dense for this model",
        )
    method = get_method(variant.method)
    started = time.perf_counter()
    with torch.inference_mode():
        result = method.compress(table, variant, progress=progress, **extra)
    compressed_at = time.perf_counter()
    # measured on what the device will load, through the device's own code path
    rebuilt = _build_embedding(
        method, result.tensors, result.method, torch.float32, variant.canonical
    )
    errors = relative_row_errors(table, rebuilt.materialize())
    rows, dim = (int(n) for n in table.shape)
    source = source_format(model_ref, (rows, dim), getattr(model, "config", None))
    manifest = _description(
        model_ref,
        variant,
        model,
        result,
        errors,
        source,
        count_params(model),
        tied,
        (rows, dim),
        compressed_at - started,
    )
    return _write_artifact(cache_dir, target, result.tensors, manifest)


def _description(
    model_ref: ModelRef,
    variant: VariantSpec,
    model: Any,
    result: Any,
    errors: Any,
    source: Any,
    total: int,
    tied: bool,
    shape: tuple[int, int],
    elapsed: float,
) -> dict[str, Any]:
    """The manifest's account of the model, the variant, its sizes and its errors."""
    rows, dim = shape
    by_policy = _model_params(total, rows * dim, result.params, tied)
    return {
        "model": model_ref.name,
        "model_kind": model_ref.kind,
        "model_sha256": model_ref.sha256,
        "model_revision": model_ref.revision,
        "model_architecture": getattr(model.config, "model_type", None),
        "variant": variant.canonical,
        "method": variant.method,
        "params": result.method,
        "head_policy": variant.head,
        "base_head_tied": tied,
        "vocab_size": rows,
        "hidden_size": dim,
        "embedding_params": rows * dim,
        "compressed_params": result.params,
        # the papers' convention: float32 table over stored parameters (bytes / 4)
        "compression_ratio": rows * dim / result.params,
        # what a device user gains over the file they start from
        "compression_ratio_source": source.bytes / (4 * result.params),
        "source_format": source.as_dict(rows * dim),
        "embedding_bytes_fp32": rows * dim * 4,
        "payload_bytes": result.payload_bytes,
        "total_params_before": total,
        "total_params": by_policy[variant.head],
        "total_params_by_head_policy": by_policy,
        "reconstruction_error": float(errors.mean()),
        "reconstruction_error_max": float(errors.max()),
        "error": {
            "relative_reconstruction": _error_stats(errors),
            "decomposition_mean": float(result.row_errors.mean()),
        },
        "compress_time_s": round(elapsed, 4),
    }


def _cached(target: Path) -> ArtifactInfo | None:
    """The intact artifact already at ``target``; a damaged one is removed."""
    if not (target / MANIFEST).is_file():
        return None
    try:
        found = load_artifact(target, with_tensors=False)
        return ArtifactInfo(target, found.manifest, found.sha256, reused=True)
    except ArtifactError:
        shutil.rmtree(target, ignore_errors=True)
        return None


def _compression_inputs(
    model_ref: ModelRef, variant: VariantSpec, cache_dir: Path, model: Any, tokenizer: Any
) -> tuple[Any, Any, dict[str, Any]]:
    """(the model, its float32 input table, what the method needs besides: token
    counts of the calibration text, the model's own token importance, layer 0's gain)."""
    import torch

    from tasks.models import embedding_table, load_model

    needs_tokenizer = (variant.needs_calibration or variant.needs_importance) and tokenizer is None
    if model is None or needs_tokenizer:
        loaded, loaded_tokenizer = load_model(
            model_ref,
            cache_dir=cache_path(MODELS, root=Path(cache_dir).parent),
            with_tokenizer=needs_tokenizer,
        )
        model = loaded if model is None else model
        tokenizer = tokenizer if tokenizer is not None else loaded_tokenizer
    table = embedding_table(model).to(torch.float32)
    extra: dict[str, Any] = {}
    if variant.needs_calibration:
        from tasks.compression.calibration import token_counts

        extra["token_counts"] = token_counts(tokenizer, int(table.shape[0]))
    if variant.needs_importance:
        from tasks.compression.calibration import model_importance

        # scored before any change to the model: the dense model's own probabilities
        extra["importance"] = model_importance(model, tokenizer, int(table.shape[0]))
    if variant.needs_layer0_gain:
        from tasks.models import layer0_gain

        extra["layer0_gain"] = layer0_gain(model)
    return model, table, extra


def _write_artifact(
    cache_dir: Path, target: Path, tensors: dict[str, Any], described: dict[str, Any]
) -> ArtifactInfo:
    """Write tensors and manifest to a temporary folder, then move it into place whole."""
    import torch
    from safetensors.torch import save_file

    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=cache_dir))
    try:
        save_file(tensors, str(tmp / TENSORS), metadata={"format": FORMAT})
        files = {
            TENSORS: {"sha256": sha256_file(tmp / TENSORS), "bytes": (tmp / TENSORS).stat().st_size}
        }
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "tool_version": __version__,
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **described,
            "files": files,
            "size_bytes": sum(f["bytes"] for f in files.values()),
            "compute": {
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "machine": platform.machine(),
            },
        }
        (tmp / MANIFEST).write_bytes(_manifest_bytes(manifest))
        try:
            os.replace(tmp, target)
        except OSError:  # a concurrent build finished first: keep that one
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    found = load_artifact(target, with_tensors=False)
    return ArtifactInfo(target, found.manifest, found.sha256)


def _manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


def load_artifact(
    path: str | Path, expected_sha256: str | None = None, *, with_tensors: bool = True
) -> Artifact:
    """Verify and load an artifact directory (no code from it is executed: no pickle).

    Raises :class:`ArtifactError` when the manifest's sha256 differs from
    ``expected_sha256``, a listed file is missing or altered, or the format is unknown.
    """
    root = Path(path)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise ArtifactError(
            f"{root}: no {MANIFEST}; not an artifact directory",
            hint="build it with tslm-fleet compress, or push it again",
        )
    raw = manifest_path.read_bytes()
    sha = hashlib.sha256(raw).hexdigest()
    if expected_sha256 is not None and sha != expected_sha256:
        raise ArtifactError(
            f"{manifest_path}: sha256 {sha} does not match the expected {expected_sha256}",
            hint="the artifact is corrupted or a different one; push it again",
        )
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        raise ArtifactError(f"{manifest_path}: not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{manifest_path}: not a {FORMAT} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{manifest_path}: format version {manifest.get('format_version')} is not "
            f"supported (this tool reads {FORMAT_VERSION})",
            hint="rebuild the artifact with this version of tslm-fleet",
        )
    from tasks.compression import METHODS

    if manifest.get("method") not in METHODS or not isinstance(manifest.get("params"), dict):
        raise ArtifactError(
            f"{manifest_path}: unknown method {manifest.get('method')!r} or no method parameters",
            hint="rebuild it with this tslm-fleet",
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or TENSORS not in files:
        raise ArtifactError(f"{manifest_path}: no file list with {TENSORS}")
    for name, entry in files.items():
        if not isinstance(name, str) or not _SAFE_NAME.match(name):
            raise ArtifactError(f"{manifest_path}: file name {name!r} is not allowed")
        file = root / name
        if not file.is_file():
            raise ArtifactError(f"{root}: {name} is missing", hint="push the artifact again")
        actual = sha256_file(file)
        if not isinstance(entry, dict) or actual != entry.get("sha256"):
            raise ArtifactError(
                f"{file}: sha256 {actual} does not match the manifest",
                hint="the file is corrupted or was altered; push it again",
            )
    tensors: dict[str, Any] = {}
    if with_tensors:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(root / TENSORS))
        except (SafetensorError, OSError) as exc:
            raise ArtifactError(f"{root / TENSORS}: cannot be read ({exc})") from exc
    return Artifact(root, manifest, sha, tensors)


def _build_embedding(
    method: Any, tensors: dict[str, Any], params: dict[str, Any], dtype: Any, where: object
) -> Any:
    """The method's module for stored tensors; a tensor or parameter it lacks is named."""
    try:
        return method.build_embedding(tensors, params, dtype=dtype)
    except KeyError as exc:
        raise ArtifactError(
            f"{where}: cores.safetensors tensor or manifest parameter {exc} is missing"
        ) from exc


def _untie(model: Any) -> None:
    """Stop transformers from re-tying the head to the (replaced) input embedding."""
    configs = [model.config]
    text = getattr(model.config, "get_text_config", None)
    if callable(text):
        configs.append(text())
    for config in configs:
        if hasattr(config, "tie_word_embeddings"):
            config.tie_word_embeddings = False
    if isinstance(getattr(model, "all_tied_weights_keys", None), dict):
        model.all_tied_weights_keys = {}


def apply_artifact(
    model: Any, artifact: Artifact, mode: str = "on-the-fly", *, head_kernel: str | None = None
) -> Any:
    """Replace ``model``'s input embedding by the artifact's and apply its head policy.

    ``mode``: ``on-the-fly`` (only the compressed data resident) or ``materialized``
    (dense table rebuilt once). Head policy ``keep-dense`` leaves the LM head on the
    original dense weights; ``tied`` points it at the reconstructed table (with a warning).
    On the fly, a format that can serve as a head (``head_kernels()``: fp16, bf16, int8,
    mixed) computes the logits from the compressed table itself, through the kernel
    measured fastest on this machine (``head_kernel`` forces one by name), so the table
    is resident once; other formats give the head a dense rebuilt table.
    """
    import torch
    from torch import nn

    from tasks.compression.embedding import MODES, in_mode
    from tasks.models import head_is_tied

    if mode not in MODES:
        raise ConfigError(f"embedding mode {mode!r} is not one of {'/'.join(MODES)}")
    if not artifact.tensors:
        raise ArtifactError(f"{artifact.path}: loaded without its tensors")
    current = model.get_input_embeddings()
    weight = getattr(current, "weight", None)
    if weight is None:
        raise ArtifactError(
            "the model's input embedding is already replaced",
            hint="load the model again before applying another artifact",
        )
    shape = (artifact.manifest["vocab_size"], artifact.manifest["hidden_size"])
    rows, dim = (int(s) for s in weight.shape)
    if (rows, dim) != shape:
        raise ArtifactError(
            f"{artifact.path}: built for an embedding of {shape[0]} x {shape[1]}, the model "
            f"has {rows} x {dim}",
            hint=f"the artifact belongs to {artifact.manifest['model']}",
        )
    tied = head_is_tied(model)
    policy = artifact.head_policy
    if policy == "tied" and not tied:
        raise ArtifactError(
            f"{artifact.path}: head policy 'tied' needs a model whose head is "
            "tied to its input embedding"
        )
    method = get_method(artifact.method)
    with torch.no_grad():
        module = in_mode(
            _build_embedding(
                method, artifact.tensors, artifact.manifest["params"], weight.dtype, artifact.path
            ),
            mode,
        )
    if mode == "materialized":
        module.weight.data = module.weight.data.to(weight.dtype)
    _untie(model)
    model.set_input_embeddings(module)
    head = model.get_output_embeddings()
    if policy == "tied":
        warnings.warn(HEAD_TIED_WARNING, UserWarning, stacklevel=2)
        if mode == "materialized":
            head.weight = module.weight
        elif callable(getattr(module, "head_kernels", None)):
            from tasks.compression.head import CompressedHead

            compressed = CompressedHead(module, only=head_kernel)
            adopt = getattr(module, "adopt", None)
            if callable(adopt):
                adopt(compressed.kernel_name)
            model.set_output_embeddings(compressed)
        else:
            with torch.no_grad():
                head.weight = nn.Parameter(
                    module.materialize().to(weight.dtype), requires_grad=False
                )
    return model
