"""The source model's stored format of the embedding: GGUF tensor types, safetensors dtypes."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from tasks.compression.source import source_format
from tasks.models import ModelRef, resolve_model


def test_the_default_gguf_stores_the_embedding_as_q8_0() -> None:
    found = source_format(resolve_model("default"), (49152, 576))
    assert found.name == "Q8_0"
    # blocks of 32 values: a float16 scale and 32 int8 codes
    assert found.bytes == 49152 * 576 // 32 * 34
    assert found.as_dict(49152 * 576)["bits_per_weight"] == 8.5


def _safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> None:
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        size = shape[0] * shape[1] * {"F16": 2, "F32": 4, "BF16": 2}[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))


def test_a_directory_reads_the_dtype_of_the_table_shaped_tensor(tmp_path) -> None:
    _safetensors(
        tmp_path / "model.safetensors",
        {"lm.norm": ("F32", [1, 8]), "model.embed_tokens.weight": ("BF16", [100, 8])},
    )
    ref = ModelRef(name="m", kind="dir", path=tmp_path, sha256="0" * 64)
    found = source_format(ref, (100, 8))
    assert (found.name, found.bytes) == ("BF16", 1600)
    assert "embed_tokens" in found.origin


def test_without_files_the_config_dtype_decides(tmp_path) -> None:
    class Config:
        torch_dtype = "float16"

    ref = ModelRef(name="m", kind="hub", path=None, sha256="0" * 64)
    assert source_format(ref, (10, 4), Config()).bytes == 80
    assert source_format(ref, (10, 4)).name == "float32"
