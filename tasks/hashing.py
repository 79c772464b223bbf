"""Content identities shared by the controller and the agent.

* a file: the sha256 of its bytes;
* a directory: the sha256 of its listing in ``sha256sum`` format (``<sha256>  <relpath>``
  lines sorted by relative POSIX path, each ending in a newline), so that any change of
  a file's content or name changes the identity. An artifact directory is identified by
  the sha256 of its ``manifest.json`` instead, which lists the sha256 of every other file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def tree_listing(root: str | Path) -> list[tuple[str, str]]:
    """(relative POSIX path, sha256) of every regular file below ``root``, sorted by path."""
    base = Path(root)
    return sorted(
        (p.relative_to(base).as_posix(), sha256_file(p)) for p in base.rglob("*") if p.is_file()
    )


def sha256_tree(root: str | Path) -> str:
    """Identity of a directory: sha256 of its ``sha256sum``-style listing."""
    text = "".join(f"{sha}  {rel}\n" for rel, sha in tree_listing(root))
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_path(path: str | Path) -> str:
    """sha256 of a file, or the tree identity of a directory."""
    p = Path(path)
    return sha256_tree(p) if p.is_dir() else sha256_file(p)
