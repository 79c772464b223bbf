"""The controller's cache: where artifacts, de-quantised models and agent bundles live.

The root is ``$TSLM_CACHE``, else ``$XDG_CACHE_HOME/tslm-fleet``, else
``~/.cache/tslm-fleet``. Below it, each named by content: ``artifacts/`` (compressed
embeddings), ``models/`` (de-quantised GGUF copies) and ``bundles/`` (agent zipapps).
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "TSLM_CACHE"
#: the parts of the cache
ARTIFACTS = "artifacts"
MODELS = "models"
BUNDLES = "bundles"


def cache_path(part: str | None = None, *, root: Path | None = None) -> Path:
    """The cache root, or its ``part`` (:data:`ARTIFACTS`, :data:`MODELS`, :data:`BUNDLES`).

    ``root`` replaces the default root (``--cache-dir``, a test's folder).
    """
    if root is None:
        env = os.environ.get(CACHE_ENV)
        if env:
            root = Path(env).expanduser()
        else:
            xdg = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
            root = Path(xdg) / "tslm-fleet"
    return Path(root) / part if part else Path(root)
