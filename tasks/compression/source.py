"""The stored format of a model's token embedding, the base of the "vs source" ratio.

A ratio against float32 (the papers' convention) overstates what a device user gains when
the model already ships quantised: SmolLM2's GGUF stores the embedding as Q8_0 (8.5 bits
per value). :func:`source_format` reads the format and byte count from the model files:
the GGUF tensor ``token_embd.weight``, or a safetensors tensor of the table's shape; else
the dtype the config declares.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.models import ModelRef

_GGUF_EMBEDDING = "token_embd.weight"
_SAFETENSORS_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I8": 1, "U8": 1, "F8_E4M3": 1}
_TORCH_BYTES = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}


@dataclass(frozen=True)
class SourceFormat:
    """How the source model stores the embedding table."""

    #: "Q8_0", "F16", "float32", ...
    name: str
    #: bytes of the table in that format
    bytes: int
    #: where the format was read from
    origin: str

    def as_dict(self, values: int) -> dict[str, Any]:
        return {
            "name": self.name,
            "bytes": self.bytes,
            "bits_per_weight": round(self.bytes * 8 / values, 4) if values else None,
            "origin": self.origin,
        }


def _from_gguf(path: Path, values: int) -> SourceFormat | None:
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    for tensor in reader.tensors:
        if tensor.name == _GGUF_EMBEDDING and int(tensor.n_elements) == values:
            return SourceFormat(tensor.tensor_type.name, int(tensor.n_bytes), f"gguf {path.name}")
    return None


def _safetensors_header(path: Path) -> dict[str, Any]:
    with path.open("rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        return json.loads(handle.read(size))


def _from_safetensors(directory: Path, shape: tuple[int, int]) -> SourceFormat | None:
    for file in sorted(directory.rglob("*.safetensors")):
        try:
            header = _safetensors_header(file)
        except (OSError, ValueError, struct.error):
            continue
        for name, entry in header.items():
            if not isinstance(entry, dict) or tuple(entry.get("shape", ())) != shape:
                continue
            width = _SAFETENSORS_BYTES.get(str(entry.get("dtype")))
            if width is not None:
                return SourceFormat(
                    str(entry["dtype"]), shape[0] * shape[1] * width, f"{file.name}:{name}"
                )
    return None


def source_format(ref: ModelRef, shape: tuple[int, int], config: Any = None) -> SourceFormat:
    """The stored format of the ``shape`` embedding table of model ``ref``."""
    values = shape[0] * shape[1]
    found = None
    if ref.path is not None and ref.kind == "gguf":
        found = _from_gguf(ref.path, values)
    elif ref.path is not None and ref.path.is_dir():
        found = _from_safetensors(ref.path, shape)
    if found is not None:
        return found
    declared = str(getattr(config, "torch_dtype", None) or "float32").replace("torch.", "")
    width = _TORCH_BYTES.get(declared, 4)
    return SourceFormat(
        declared if declared in _TORCH_BYTES else "float32", values * width, "config"
    )
