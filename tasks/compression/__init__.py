"""Compression of token-embedding tables: variant specs and the method registry.

``parse_variant("tt:rank=8:shape=8x8x9")`` validates a spec against :data:`METHODS`
(standard library only); :func:`get_method` imports a method's module on demand. Method
modules: ``dense``, ``tt`` (per-token tensor train, batched TT-SVD, with the tensorly
per-row loop as ``impl=tensorly``, quantised cores as ``cores=``), ``svd`` (whole-table low
rank), ``int`` (K-bit rows or groups; ``int8`` is ``int:bits=8``) and ``gguf`` (llama.cpp
block formats).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from tasks.compression.spec import (
    HEAD_POLICIES,
    METHODS,
    MethodInfo,
    VariantSpec,
    describe_methods,
    parse_variant,
)
from tasks.errors import ConfigError

if TYPE_CHECKING:
    from tasks.compression.base import MethodModule

__all__ = [
    "HEAD_POLICIES",
    "METHODS",
    "MethodInfo",
    "VariantSpec",
    "describe_methods",
    "get_method",
    "parse_variant",
]


def get_method(name: str) -> MethodModule:
    """The module implementing method ``name`` (imported on first use)."""
    try:
        info = METHODS[name]
    except KeyError:
        raise ConfigError(
            f"unknown compression method '{name}'", hint=f"valid methods: {', '.join(METHODS)}"
        ) from None
    return importlib.import_module(info.module)  # type: ignore[return-value]
