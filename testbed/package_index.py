"""A local package index on loopback, holding stand-in wheels built by the tests.

:class:`PackageIndexServer` serves PEP 503 "simple" indexes over HTTP on 127.0.0.1, one
per folder under its root (``ROOT/NAME/*.whl`` is served as ``/NAME/simple/``), and records
every file it hands out, so a test can say which index served which wheel.

:func:`build_standin_indexes` fills two of them for aarch64 and x86_64:

- ``torch-cpu``, like PyTorch's CPU-only index: ``torch 2.13.0+cpu`` and its dependencies;
- ``pypi``, like PyPI: ``torch 2.13.0`` whose requirements are those of the real
  ``torch-2.13.0-cp311-cp311-manylinux_2_28_aarch64.whl`` on PyPI (``cuda-toolkit``,
  ``cuda-bindings``, ``nvidia-*``, ``triton``), stand-ins of all of those, torch's
  dependencies, and the packages a device needs besides torch.

Wheels are made by hand (a zip with METADATA, WHEEL and RECORD): no build backend, no
network. Each holds one module whose ``STANDIN`` names the distribution and version.
"""

from __future__ import annotations

import base64
import hashlib
import html
import threading
import urllib.parse
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from packaging.utils import canonicalize_name, parse_wheel_filename

ARCHES = ("aarch64", "x86_64")

#: torch's own requirements (those of the CPU build; the PyPI build adds the CUDA ones)
TORCH_BASE_REQUIRES = (
    "filelock",
    "typing-extensions>=4.10.0",
    "sympy>=1.13.3",
    "networkx>=2.5.1",
    "jinja2",
    "fsspec>=0.8.5",
)
#: the CUDA requirements of PyPI's torch 2.13.0 for Linux (read from the METADATA of
#: torch-2.13.0-cp311-cp311-manylinux_2_28_aarch64.whl as PyPI serves it)
CUDA_EXTRAS = (
    "cublas",
    "cudart",
    "cufft",
    "cufile",
    "cupti",
    "curand",
    "cusolver",
    "cusparse",
    "nvjitlink",
    "nvrtc",
    "nvtx",
)
TORCH_CUDA_REQUIRES = (
    f'cuda-toolkit[{",".join(CUDA_EXTRAS)}]==13.0.3; platform_system == "Linux"',
    'cuda-bindings<14,>=13.0.3; platform_system == "Linux" and python_version < "3.15"',
    'nvidia-cudnn-cu13==9.20.0.48; platform_system == "Linux"',
    'nvidia-cusparselt-cu13==0.8.1; platform_system == "Linux"',
    'nvidia-nccl-cu13==2.29.7; platform_system == "Linux"',
    'nvidia-nvshmem-cu13==3.4.5; platform_system == "Linux"',
    'triton==3.7.1; platform_system == "Linux" and python_version < "3.15"',
)
#: what the tests install on a device: torch pinned as the device extra pins it, plus
#: packages of each kind (a platform wheel, an abi3 wheel, a pure-Python wheel)
DEVICE_REQUIREMENTS = ("torch==2.13.0", "numpy>=1.26", "safetensors>=0.4", "pyserial>=3.5")


def build_wheel(
    folder: Path,
    name: str,
    version: str,
    tag: str = "py3-none-any",
    *,
    requires: Sequence[str] = (),
    extras: dict[str, Sequence[str]] | None = None,
    module: str | None = None,
) -> Path:
    """A minimal wheel: one module (``STANDIN``), METADATA with its requirements, RECORD."""
    dist = f"{canonicalize_name(name).replace('-', '_')}-{version}"
    module = module or canonicalize_name(name).replace("-", "_")
    metadata = [f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"]
    metadata += [f"Requires-Dist: {req}\n" for req in requires]
    for extra, reqs in (extras or {}).items():
        metadata.append(f"Provides-Extra: {extra}\n")
        metadata += [f'Requires-Dist: {req}; extra == "{extra}"\n' for req in reqs]
    pure = tag.endswith("-none-any")
    files = {
        f"{module}/__init__.py": f'STANDIN = "{name} {version} {tag}"\n',
        f"{dist}.dist-info/METADATA": "".join(metadata),
        f"{dist}.dist-info/WHEEL": f"Wheel-Version: 1.0\nGenerator: tslm-tests\n"
        f"Root-Is-Purelib: {'true' if pure else 'false'}\nTag: {tag}\n",
    }
    record = "".join(
        f"{path},{_record_hash(text)},{len(text.encode())}\n" for path, text in files.items()
    )
    path = Path(folder) / f"{dist}-{tag}.whl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in files.items():
            archive.writestr(member, text)
        archive.writestr(f"{dist}.dist-info/RECORD", record + f"{dist}.dist-info/RECORD,,\n")
    return path


def _record_hash(text: str) -> str:
    digest = hashlib.sha256(text.encode()).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _torch_dependencies(folder: Path, arch: str) -> None:
    build_wheel(folder, "filelock", "3.20.0")
    build_wheel(folder, "typing_extensions", "4.15.0")
    build_wheel(folder, "sympy", "1.14.0", requires=["mpmath<1.4,>=1.1.0"])
    build_wheel(folder, "mpmath", "1.3.0")
    build_wheel(folder, "networkx", "3.5")
    build_wheel(folder, "jinja2", "3.1.6", requires=["MarkupSafe>=2.0"])
    build_wheel(
        folder, "MarkupSafe", "3.0.3", f"cp311-cp311-manylinux_2_17_{arch}.manylinux2014_{arch}"
    )
    build_wheel(folder, "fsspec", "2025.9.0")


def _cuda_packages(folder: Path, arch: str) -> None:
    linux = f"py3-none-manylinux_2_28_{arch}"
    build_wheel(
        folder,
        "cuda-toolkit",
        "13.0.3",
        "py2.py3-none-any",
        extras={extra: [f"nvidia-{extra}==13.0.0"] for extra in CUDA_EXTRAS},
    )
    for extra in CUDA_EXTRAS:
        build_wheel(folder, f"nvidia-{extra}", "13.0.0", linux)
    build_wheel(folder, "cuda-bindings", "13.0.3", f"cp311-cp311-manylinux_2_28_{arch}")
    for name, version in (
        ("nvidia-cudnn-cu13", "9.20.0.48"),
        ("nvidia-cusparselt-cu13", "0.8.1"),
        ("nvidia-nccl-cu13", "2.29.7"),
        ("nvidia-nvshmem-cu13", "3.4.5"),
    ):
        build_wheel(folder, name, version, linux)
    build_wheel(folder, "triton", "3.7.1", f"cp311-cp311-manylinux_2_28_{arch}")


def build_standin_indexes(root: Path, arches: Sequence[str] = ARCHES) -> Path:
    """Fill ``root/torch-cpu`` and ``root/pypi`` with stand-in wheels; returns ``root``."""
    cpu, pypi = Path(root) / "torch-cpu", Path(root) / "pypi"
    for arch in arches:
        platform = f"cp311-cp311-manylinux_2_28_{arch}"
        build_wheel(cpu, "torch", "2.13.0+cpu", platform, requires=TORCH_BASE_REQUIRES)
        _torch_dependencies(cpu, arch)
        build_wheel(
            pypi,
            "torch",
            "2.13.0",
            platform,
            requires=[*TORCH_BASE_REQUIRES, *TORCH_CUDA_REQUIRES],
        )
        _torch_dependencies(pypi, arch)
        _cuda_packages(pypi, arch)
        build_wheel(
            pypi, "numpy", "2.3.4", f"cp311-cp311-manylinux_2_27_{arch}.manylinux_2_28_{arch}"
        )
        build_wheel(
            pypi, "safetensors", "0.6.2", f"cp38-abi3-manylinux_2_17_{arch}.manylinux2014_{arch}"
        )
    build_wheel(pypi, "pyserial", "3.5", "py2.py3-none-any", module="serial")
    return Path(root)


# --------------------------------------------------------------------------- the server


@dataclass
class Served:
    """Requests the server answered: ``(index name, file name)`` of every wheel sent."""

    wheels: list[tuple[str, str]] = field(default_factory=list)
    pages: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def mark(self) -> int:
        """A point in the record: give it to :meth:`wheels_from` as ``since``."""
        with self.lock:
            return len(self.wheels)

    def wheels_from(self, index: str, since: int = 0) -> list[str]:
        """Wheel files that ``index`` sent (after the point ``since``), sorted."""
        with self.lock:
            return sorted(name for source, name in self.wheels[since:] if source == index)


class PackageIndexServer:
    """PEP 503 simple indexes on ``http://127.0.0.1:PORT/NAME/simple/`` for ``ROOT/NAME/``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.served = Served()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, index: str) -> str:
        """The index URL to give pip (``--index-url``)."""
        return f"http://127.0.0.1:{self.port}/{index}/simple"

    def __enter__(self) -> PackageIndexServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop answering (idempotent): the indexes are gone, as on a machine offline."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = [urllib.parse.unquote(p) for p in self.path.split("?")[0].split("/") if p]
                body = server._answer(parts)
                if body is None:
                    self.send_error(404)
                    return
                data, kind = body
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def _answer(self, parts: list[str]) -> tuple[bytes, str] | None:
        if not parts or "/" in "".join(parts) or ".." in parts:
            return None
        folder = self.root / parts[0]
        if not folder.is_dir():
            return None
        if len(parts) == 3 and parts[1] == "files":
            path = folder / parts[2]
            if not path.is_file():
                return None
            with self.served.lock:
                self.served.wheels.append((parts[0], parts[2]))
            return path.read_bytes(), "application/octet-stream"
        if parts[1:2] == ["simple"] and len(parts) <= 3:
            project = canonicalize_name(parts[2]) if len(parts) == 3 else None
            with self.served.lock:
                self.served.pages.append((parts[0], project or ""))
            return self._page(folder, project), "text/html"
        return None

    def _page(self, folder: Path, project: str | None) -> bytes:
        wheels = {}
        for path in sorted(folder.glob("*.whl")):
            wheels.setdefault(str(parse_wheel_filename(path.name)[0]), []).append(path)
        if project is None:
            links = [f'<a href="{name}/">{name}</a>' for name in sorted(wheels)]
        else:
            links = [
                f'<a href="../../files/{urllib.parse.quote(p.name)}#sha256='
                f'{hashlib.sha256(p.read_bytes()).hexdigest()}">{html.escape(p.name)}</a>'
                for p in wheels.get(project, [])
            ]
        text = "<!DOCTYPE html><html><body>\n" + "<br/>\n".join(links) + "\n</body></html>\n"
        return text.encode()


def served_indexes(root: Path) -> Iterator[PackageIndexServer]:
    """Build the stand-in indexes under ``root`` and serve them (a fixture body)."""
    build_standin_indexes(root)
    with PackageIndexServer(root) as server:
        yield server


def isolated_pip_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment in which pip reads no configuration: no pip.conf, no PIP_* variables.

    The indexes a test's pip sees are then exactly those on its command line.
    """
    import os

    env = {k: v for k, v in (base if base is not None else os.environ).items()}
    env = {k: v for k, v in env.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_CACHE_DIR="1")
    return env
