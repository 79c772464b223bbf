"""The agent bundle: ``agent`` + ``tasks`` in one zipapp that the device's Python runs.

``python3 tslm-agent-<sha12>.pyz COMMAND ...`` behaves like ``python -m agent`` in a
checkout. The archive is deterministic (sorted entries, fixed timestamps and modes), so
the same source always gives the same sha256; the controller uses it to skip pushing a
bundle the device already has, and the agent reports it in its ``hello`` event.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipapp
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tasks import __version__

#: the packages that travel to a device
PACKAGES: tuple[str, ...] = ("agent", "tasks")
#: package data shipped next to the modules (as declared in pyproject.toml)
DATA_SUFFIXES: frozenset[str] = frozenset({".py", ".txt", ".jsonl", ".json", ".ini", ".rules"})
INTERPRETER = "/usr/bin/env python3"
#: 1980-01-01, the earliest time a zip entry can hold
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
MAIN = b"""import sys

from agent.cli import main

sys.exit(main())
"""


@dataclass(frozen=True)
class Bundle:
    """A built agent bundle."""

    path: Path
    sha256: str
    version: str


def source_root() -> Path:
    """The directory holding the ``agent`` and ``tasks`` packages."""
    import agent

    return Path(agent.__file__).resolve().parent.parent


def bundle_files(root: Path | None = None) -> list[tuple[str, Path]]:
    """(archive name, source file) of everything the bundle holds, sorted by name."""
    root = root or source_root()
    files = []
    for package in PACKAGES:
        for path in (root / package).rglob("*"):
            rel = path.relative_to(root)
            if path.is_file() and path.suffix in DATA_SUFFIXES and "__pycache__" not in rel.parts:
                files.append((rel.as_posix(), path))
    return sorted(files)


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    info.create_system = 3  # unix, whatever the build machine
    return info


def archive_bytes(root: Path | None = None) -> bytes:
    """The bundle's content, byte for byte reproducible from the same sources."""
    body = io.BytesIO()
    with zipfile.ZipFile(body, "w") as zf:
        zf.writestr(_entry("__main__.py"), MAIN, compresslevel=9)
        for name, path in bundle_files(root):
            zf.writestr(_entry(name), path.read_bytes(), compresslevel=9)
    out = io.BytesIO()
    body.seek(0)
    zipapp.create_archive(body, out, interpreter=INTERPRETER)
    return out.getvalue()


def build_bundle(cache_dir: Path) -> Bundle:
    """Build (or reuse from ``cache_dir``) the bundle ``tslm-agent-<sha12>.pyz``."""
    data = archive_bytes()
    sha = hashlib.sha256(data).hexdigest()
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"tslm-agent-{sha[:12]}.pyz"
    if not (path.is_file() and path.read_bytes() == data):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.chmod(0o755)
        tmp.replace(path)
    return Bundle(path=path, sha256=sha, version=__version__)
