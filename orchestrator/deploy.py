"""Push files to a device's work directory: skip what it has, verify what was sent.

Every file travels as a :class:`PushItem` (local file, path relative to the device's work
directory, expected sha256). :func:`deploy_files` hashes all targets on the device in one
round trip, uploads only the missing or different ones (temporary name, then rename),
hashes them again and fails with :class:`~tasks.errors.ArtifactError` when a file arrived
corrupted twice in a row. :class:`RemoteLayout` names where things live on the device.
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.protocol import safe_relative_path
from orchestrator.transport.base import Transport
from tasks.errors import ArtifactError, ConfigError, JobSpecError
from tasks.hashing import tree_listing

#: ``progress(remote_relpath, bytes_done, bytes_total)``
DeployProgress = Callable[[str, int, int], None]
#: uploads of one file before a hash mismatch is reported as corruption
UPLOAD_ATTEMPTS = 2


@dataclass(frozen=True)
class PushItem:
    """A local file and where it goes, relative to the device's work directory."""

    local: Path
    remote: str
    sha256: str


@dataclass(frozen=True)
class DeployReport:
    """What :func:`deploy_files` did on one device."""

    device: str
    pushed: tuple[str, ...]
    skipped: tuple[str, ...]
    bytes_sent: int
    duration_s: float


class RemoteLayout:
    """Where the controller puts things in a device's work directory (relative paths).

    The agent resolves the paths of a job spec relative to its ``--workdir``, so every
    name here is relative; :meth:`absolute` joins one with the work directory.
    """

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir

    @staticmethod
    def bundle_path(sha256: str) -> str:
        """The agent bundle, named by its content hash (as ``orchestrator.bundle`` names it)."""
        return f"bundles/tslm-agent-{sha256[:12]}.pyz"

    @staticmethod
    def model_dir(sha256: str) -> str:
        """A model's files, named by their tree hash."""
        return f"models/{sha256[:16]}"

    @staticmethod
    def artifact_dir(name: str) -> str:
        """A compressed-embedding artifact (``name`` is its content-named directory)."""
        return f"artifacts/{_component(name, 'artifact name')}"

    @staticmethod
    def job_dir(job_id: str) -> str:
        """A job's spec, journal and outputs."""
        return f"jobs/{_component(job_id, 'job id')}"

    wheelhouse_dir = "wheelhouse"

    def absolute(self, relative: str) -> str:
        """``relative`` joined with the work directory."""
        return posixpath.join(self.workdir, safe_relative_path(relative, "remote path"))


def _component(value: str, what: str) -> str:
    if not value or "/" in value or value in (".", "..") or "\x00" in value:
        raise ConfigError(f"{what} {value!r} must be a single path component")
    return value


def items_for_directory(local_dir: Path, remote_dir: str) -> list[PushItem]:
    """One :class:`PushItem` per regular file below ``local_dir`` (directories go file by file)."""
    return [
        PushItem(local=Path(local_dir) / rel, remote=posixpath.join(remote_dir, rel), sha256=sha)
        for rel, sha in tree_listing(local_dir)
    ]


def deploy_files(
    transport: Transport,
    items: Sequence[PushItem],
    *,
    workdir: str | None = None,
    progress: DeployProgress | None = None,
) -> DeployReport:
    """Make the device's work directory hold ``items``; returns what was pushed and skipped.

    ``workdir`` defaults to the device's resolved work directory. Remote paths must be
    relative and stay inside it (``..`` is refused).
    """
    started = time.monotonic()
    base = transport.resolve(workdir) if workdir else transport.workdir()
    targets: dict[str, PushItem] = {}
    for item in items:
        try:
            rel = safe_relative_path(item.remote, f"{transport.device.name}: remote path")
        except JobSpecError as exc:
            raise ConfigError(exc.message) from None
        if not Path(item.local).is_file():
            raise ArtifactError(
                f"{item.local}: not a file (push directories with items_for_directory)"
            )
        targets[posixpath.join(base, rel)] = item
    have = transport.sha256_many(list(targets)) if targets else {}
    pushed: list[str] = []
    skipped: list[str] = []
    sent = 0
    for remote, item in targets.items():
        if have.get(remote) == item.sha256:
            skipped.append(item.remote)
            continue
        sent += _push_verified(transport, item, remote, progress)
        pushed.append(item.remote)
    return DeployReport(
        device=transport.device.name,
        pushed=tuple(pushed),
        skipped=tuple(skipped),
        bytes_sent=sent,
        duration_s=time.monotonic() - started,
    )


def _push_verified(
    transport: Transport, item: PushItem, remote: str, progress: DeployProgress | None
) -> int:
    callback = None
    if progress is not None:

        def callback(done: int, total: int) -> None:
            progress(item.remote, done, total)

    sent = 0
    got: str | None = None
    for _ in range(UPLOAD_ATTEMPTS):
        transport.put(Path(item.local), remote, progress=callback)
        sent += Path(item.local).stat().st_size
        got = transport.sha256(remote)
        if got == item.sha256:
            return sent
    raise ArtifactError(
        f"{transport.device.name}: {item.remote} arrived with sha256 {got} instead of "
        f"{item.sha256} ({UPLOAD_ATTEMPTS} uploads)",
        hint=f"the local file {item.local} may have changed while deploying, or the device's "
        "storage is failing; check its free disk space and SD card",
    )


def deploy_bundle(
    transport: Transport, cache_dir: Path, *, progress: DeployProgress | None = None
) -> tuple[str, DeployReport]:
    """Build (or reuse) the agent bundle and push it; returns its path relative to workdir."""
    from orchestrator.bundle import build_bundle  # written alongside; imported when used

    bundle: Any = build_bundle(cache_dir)
    rel = RemoteLayout.bundle_path(bundle.sha256)
    report = deploy_files(
        transport, [PushItem(Path(bundle.path), rel, bundle.sha256)], progress=progress
    )
    return rel, report


def agent_argv(python: str, workdir: str, bundle_rel: str, *args: str) -> list[str]:
    """``PYTHON BUNDLE.pyz --workdir WORKDIR ARGS...`` for the device, as an argument list.

    ``workdir`` is the device's resolved work directory, ``bundle_rel`` the bundle's path
    relative to it (see :meth:`RemoteLayout.bundle_path`).
    """
    layout = RemoteLayout(workdir)
    return [python, layout.absolute(bundle_rel), "--workdir", workdir, *args]
