"""inventory.yaml: the boards of the lab and how to reach them.

The file has three sections::

    defaults: {user: pi, port: 22, identity_file: ~/.ssh/id_ed25519, ...}
    devices:
      pi4: {host: pi4.local, board: raspberrypi4, tags: [pi4, lab], meter: {kind: um25c}}
      local: {transport: local, meter: {kind: auto}}
    groups: {lab: [pi4]}

Every device field may override a value of ``defaults``. The file is validated with
pydantic; every problem is reported as ``FILE:LINE field.path: what is wrong``, with the
line taken from the YAML node tree (not guessed), and raised as one
:class:`~tasks.errors.InventoryError`. Validated devices are :class:`Device` records.

``identity_file`` and ``known_hosts`` are paths on the controller (``~`` expanded here);
``python`` (the agent's venv), ``base_python`` (the system Python that ``bootstrap`` makes
that venv with) and ``workdir`` are paths on the device, kept as written: the transport
expands a leading ``~/`` against the remote home directory. ``torch_index`` and
``torch_version`` say where and which torch ``bootstrap`` installs (see
:mod:`orchestrator.wheels`).
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from tasks.errors import InventoryError

#: board names accepted in ``board:``
KNOWN_BOARDS: tuple[str, ...] = ("raspberrypi4", "raspberrypi5", "generic", "local")
#: transports accepted in ``transport:``
KNOWN_TRANSPORTS: tuple[str, ...] = ("ssh", "local")
#: environment variable naming the inventory file when ``-i`` is not given
INVENTORY_ENV = "TSLM_INVENTORY"
DEFAULT_INVENTORY = Path("inventory.yaml")
#: meter used by a device whose inventory entry names none
DEFAULT_METER_KIND = "none"
#: selection keyword meaning every device
ALL = "all"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_INDEX_URL_RE = re.compile(r"^(https?|file)://[^\s]+$")
_NAME_RULE = (
    "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit, and not 'all'"
)


def known_meter_kinds() -> frozenset[str] | None:
    """Meter kinds the agent's registry knows, or None while no registry is importable.

    Read lazily from ``agent.meters.KNOWN_METER_KINDS`` (the registry is the single source
    of truth; the controller keeps no list of its own).
    """
    try:
        meters = importlib.import_module("agent.meters")
    except ImportError:
        return None
    kinds = getattr(meters, "KNOWN_METER_KINDS", None)
    if kinds is None:
        for attr in ("METERS", "METER_REGISTRY", "REGISTRY"):
            registry = getattr(meters, attr, None)
            if isinstance(registry, dict):
                kinds = registry.keys()
                break
    return None if kinds is None else frozenset(str(k) for k in kinds)


# --------------------------------------------------------------------------- schema


def _custom(kind: str, message: str) -> PydanticCustomError:
    # the message goes in as context so that braces in user values are never a template
    return PydanticCustomError(kind, "{message}", {"message": message})


class MeterModel(BaseModel):
    """``meter: {kind: ..., <driver options>}``; options are passed to the driver as is."""

    model_config = ConfigDict(extra="allow", strict=True)

    kind: str

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        known = known_meter_kinds()
        if known is not None and value not in known:
            raise _custom(
                "unknown_meter",
                f"unknown meter kind {value!r} (known: "
                f"{', '.join(sorted(known))}){_did_you_mean(value, known)}",
            )
        return value


class LabgridModel(BaseModel):
    """``labgrid: {place: NAME, coordinator: HOST:PORT}``: the labgrid place that books the
    board, and the coordinator that holds it (else ``$LG_COORDINATOR``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    place: str | None = None
    coordinator: str | None = None

    @field_validator("place", "coordinator")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or "\x00" in value or value.startswith("-")):
            raise _custom("blank", "must be a non-empty string not starting with '-'")
        return value


class _DeviceFields(BaseModel):
    """Fields a device may set and ``defaults`` may provide."""

    model_config = ConfigDict(extra="forbid", strict=True)

    transport: Literal["ssh", "local"] | None = None
    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    known_hosts: str | None = None
    python: str | None = None
    base_python: str | None = None
    workdir: str | None = None
    board: str | None = None
    meter: MeterModel | None = None
    connect_timeout_s: float | int | None = None
    torch_index: str | None = None
    torch_version: str | None = None
    labgrid: LabgridModel | None = None

    @field_validator("port")
    @classmethod
    def _port_range(cls, value: int | None) -> int | None:
        if value is not None and not 0 < value < 65536:
            raise _custom("bad_port", f"port {value} is not in 1-65535")
        return value

    @field_validator("board")
    @classmethod
    def _known_board(cls, value: str | None) -> str | None:
        if value is not None and value not in KNOWN_BOARDS:
            raise _custom(
                "unknown_board",
                f"unknown board {value!r} (known: "
                f"{', '.join(KNOWN_BOARDS)}){_did_you_mean(value, KNOWN_BOARDS)}",
            )
        return value

    @field_validator("user", "identity_file", "known_hosts", "python", "base_python", "workdir")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or "\x00" in value):
            raise _custom("blank", "must be a non-empty string")
        return value

    @field_validator("torch_index")
    @classmethod
    def _index_url(cls, value: str | None) -> str | None:
        if value is not None and not _INDEX_URL_RE.match(value):
            raise _custom(
                "bad_index",
                f"torch_index {value!r} is not a package index URL (http://, https:// or "
                "file://, e.g. https://download.pytorch.org/whl/cpu)",
            )
        return value

    @field_validator("torch_version")
    @classmethod
    def _version(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                Version(value)
            except InvalidVersion:
                raise _custom(
                    "bad_version", f"torch_version {value!r} is not a version such as 2.13.0"
                ) from None
        return value


class DefaultsModel(_DeviceFields):
    """The ``defaults`` section."""


class DeviceModel(_DeviceFields):
    """One entry of ``devices``."""

    host: str | None = None
    tags: list[str] = []


class InventoryModel(BaseModel):
    """The whole file."""

    model_config = ConfigDict(extra="forbid", strict=True)

    defaults: DefaultsModel = DefaultsModel()
    devices: dict[str, DeviceModel]
    groups: dict[str, list[str]] = {}


#: where an error at a field path was written, as the prefix of its message
Locator = Callable[[tuple], str]


def _yaml_locator(filename: str, lines: dict[tuple, int]) -> Locator:
    """``FILE:LINE field.path`` from the YAML node tree."""

    def locate(loc: tuple) -> str:
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        return f"{filename}:{_line_of(lines, loc)} {dotted}"

    return locate


def _semantic_errors(model: InventoryModel, locate: Locator) -> list[str]:
    """Checks across fields: names, the reserved word ``all``, group members, hosts."""
    errors: list[str] = []

    def add(loc: tuple, message: str) -> None:
        errors.append(f"{locate(loc)}: {message}")

    if not model.devices:
        add(("devices",), "at least one device is required")
    for name, entry in model.devices.items():
        if not _NAME_RE.match(name) or name == ALL:
            add(("devices", name), f"device name {name!r} {_NAME_RULE}")
        for index, tag in enumerate(entry.tags):
            if not _NAME_RE.match(tag) or tag == ALL:
                add(("devices", name, "tags", index), f"tag {tag!r} {_NAME_RULE}")
        transport = entry.transport or model.defaults.transport or "ssh"
        if transport == "ssh" and not entry.host:
            add(
                ("devices", name),
                "an ssh device needs a `host:` (or `transport: local` for the controller itself)",
            )
        lab = _merged_labgrid(model.defaults, entry)
        if entry.labgrid is not None and lab is not None and not lab.place:
            add(("devices", name, "labgrid"), "labgrid needs a `place:` to book")
    for group, members in model.groups.items():
        if not _NAME_RE.match(group) or group == ALL:
            add(("groups", group), f"group name {group!r} {_NAME_RULE}")
        for index, member in enumerate(members):
            if member not in model.devices:
                add(
                    ("groups", group, index),
                    f"unknown device {member!r} (devices: {', '.join(model.devices)})"
                    + _did_you_mean(member, model.devices),
                )
    return errors


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class MeterConfig:
    """A device's meter: ``kind`` plus the driver options written next to it."""

    kind: str
    settings: tuple[tuple[str, Any], ...] = ()

    def options(self) -> dict[str, Any]:
        """Driver options (everything but ``kind``)."""
        return dict(self.settings)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.options()}


@dataclass(frozen=True)
class Device:
    """One validated device of the inventory, with defaults applied."""

    name: str
    transport: str
    host: str | None
    user: str | None
    port: int
    identity_file: Path | None
    known_hosts: Path
    #: device-side path of the Python that runs the agent (``~/`` relative to the home)
    python: str
    #: device-side work directory of the agent (``~/`` relative to the home)
    workdir: str
    board: str
    tags: tuple[str, ...] = ()
    meter: MeterConfig = field(default_factory=lambda: MeterConfig(DEFAULT_METER_KIND))
    connect_timeout_s: float = 10.0
    #: the device's system Python, which ``bootstrap`` makes the venv of ``python`` with
    base_python: str = "python3"
    #: index that torch is installed from (None: PyTorch's CPU-only index for the device's CPU)
    torch_index: str | None = None
    #: torch version to install (None: the pin of tslm-fleet's ``device`` extra)
    torch_version: str | None = None
    #: labgrid place that books the board for a run (None: the board is not shared)
    lab_place: str | None = None
    #: labgrid coordinator holding ``lab_place`` (None: ``$LG_COORDINATOR``)
    lab_coordinator: str | None = None
    #: where the entry was written, for messages: ``inventory.yaml:14``
    source: str = ""

    @property
    def address(self) -> str:
        """``user@host:port`` for display (``local`` for the local transport)."""
        if self.transport == "local":
            return "local"
        user = f"{self.user}@" if self.user else ""
        return f"{user}{self.host}:{self.port}"


@dataclass(frozen=True)
class Inventory:
    """The validated inventory: devices in file order, tags and groups."""

    path: Path
    devices: dict[str, Device]
    groups: dict[str, tuple[str, ...]]

    @property
    def tags(self) -> dict[str, tuple[str, ...]]:
        """Tag -> names of the devices carrying it, in file order."""
        found: dict[str, list[str]] = {}
        for device in self.devices.values():
            for tag in device.tags:
                found.setdefault(tag, []).append(device.name)
        return {tag: tuple(names) for tag, names in found.items()}

    def __getitem__(self, name: str) -> Device:
        return self.devices[name]


# --------------------------------------------------------------------------- loading


def resolve_inventory_path(value: str | os.PathLike[str] | None = None) -> Path:
    """The inventory file to use: ``-i`` value, else ``$TSLM_INVENTORY``, else ./inventory.yaml."""
    if value:
        return Path(value)
    env = os.environ.get(INVENTORY_ENV)
    return Path(env) if env else DEFAULT_INVENTORY


def load_inventory(path: str | os.PathLike[str] | None = None) -> Inventory:
    """Read and validate an inventory file; every problem raises :class:`InventoryError`."""
    file = resolve_inventory_path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InventoryError(
            f"{file}: inventory file not found",
            hint=f"create it (see the example inventory.yaml of tslm-fleet), pass -i FILE or "
            f"set {INVENTORY_ENV}",
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError(f"{file}: cannot read the inventory: {exc}") from exc
    return parse_inventory(text, str(file), path=file)


def parse_inventory(
    text: str, filename: str = "inventory.yaml", *, path: Path | None = None
) -> Inventory:
    """Validate inventory YAML text; ``filename`` is used in messages."""
    data, lines = _load_yaml(text, filename)
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise InventoryError(
            f"{filename}:1: the inventory must be a mapping with a 'devices' section, got {kind}",
            hint="see the example inventory.yaml of tslm-fleet",
        )
    try:
        model = InventoryModel.model_validate(data)
    except ValidationError as exc:
        _raise_all(_format_errors(exc, _yaml_locator(filename, lines)))
    except RecursionError:
        raise InventoryError(
            f"{filename}: the inventory is nested too deeply", hint=_FIX_HINT
        ) from None
    locate = _yaml_locator(filename, lines)
    errors = _semantic_errors(model, locate)
    if errors:
        _raise_all(errors)
    return _build(
        model,
        lambda name: f"{filename}:{_line_of(lines, ('devices', name))}",
        path or Path(filename),
    )


def inventory_from_data(
    data: dict[str, Any], *, path: Path, locate: Locator, source_of: Callable[[str], str]
) -> Inventory:
    """Validate an inventory given as data (converted from another format, such as an
    Ansible inventory); ``locate`` names where a field path came from in error messages,
    ``source_of`` a device's origin."""
    try:
        model = InventoryModel.model_validate(data)
    except ValidationError as exc:
        _raise_all(_format_errors(exc, locate))
    errors = _semantic_errors(model, locate)
    if errors:
        _raise_all(errors)
    return _build(model, source_of, path)


_FIX_HINT = "fix the inventory and check it with `tslm-fleet inventory check -i FILE`"


def _raise_all(errors: list[str]) -> None:
    raise InventoryError("\n".join(errors), hint=_FIX_HINT)


def _merged_labgrid(defaults: DefaultsModel, entry: DeviceModel) -> LabgridModel | None:
    """The device's ``labgrid`` over that of ``defaults``, field by field."""
    if entry.labgrid is None and defaults.labgrid is None:
        return None
    base = defaults.labgrid.model_dump() if defaults.labgrid else {}
    own = entry.labgrid.model_dump(exclude_none=True) if entry.labgrid else {}
    return LabgridModel.model_validate({**base, **own})


def _build(model: InventoryModel, source_of: Callable[[str], str], path: Path) -> Inventory:
    defaults = model.defaults
    devices: dict[str, Device] = {}
    for name, entry in model.devices.items():

        def pick(attr: str, fallback: Any, entry: DeviceModel = entry) -> Any:
            value = getattr(entry, attr)
            if value is None:
                value = getattr(defaults, attr)
            return fallback if value is None else value

        transport = pick("transport", "ssh")
        where = source_of(name)
        lab = _merged_labgrid(defaults, entry)
        meter = pick("meter", None)
        meter_cfg = (
            MeterConfig(DEFAULT_METER_KIND)
            if meter is None
            else MeterConfig(meter.kind, tuple(sorted((meter.model_extra or {}).items())))
        )
        identity = pick("identity_file", None)
        # the local device runs the agent with the controller's own Python unless told
        python = entry.python or (
            sys.executable if transport == "local" else pick("python", "~/.tslm/venv/bin/python3")
        )
        devices[name] = Device(
            name=name,
            transport=transport,
            host=entry.host,
            user=pick("user", None),
            port=pick("port", 22),
            identity_file=None if identity is None else Path(identity).expanduser(),
            known_hosts=Path(pick("known_hosts", "~/.ssh/known_hosts")).expanduser(),
            python=python,
            workdir=pick("workdir", "~/.tslm"),
            board=pick("board", "local" if transport == "local" else "generic"),
            tags=tuple(dict.fromkeys(entry.tags)),
            meter=meter_cfg,
            connect_timeout_s=float(pick("connect_timeout_s", 10.0)),
            base_python=pick("base_python", "python3"),
            torch_index=pick("torch_index", None),
            torch_version=pick("torch_version", None),
            lab_place=lab.place if lab is not None else None,
            lab_coordinator=lab.coordinator if lab is not None else None,
            source=where,
        )
    groups = {g: tuple(dict.fromkeys(members)) for g, members in model.groups.items()}
    return Inventory(path=path, devices=devices, groups=groups)


# --------------------------------------------------------------------------- YAML + lines


def _load_yaml(text: str, filename: str) -> tuple[Any, dict[tuple, int]]:
    """Parse YAML (safe loader) and map every field path to the line it is written on."""
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            data = None if node is None else loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise InventoryError(f"{filename}{line}: invalid YAML: {problem}", hint=_FIX_HINT) from None
    except (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise InventoryError(f"{filename}: invalid YAML: {exc}", hint=_FIX_HINT) from None
    lines: dict[tuple, int] = {}
    if node is not None:
        _map_lines(node, (), lines, filename, depth=0)
    return data, lines


def _map_lines(
    node: yaml.Node, path: tuple, lines: dict[tuple, int], filename: str, depth: int
) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if depth > 50:
        return
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            key = key_node.value
            if key in seen and key != "<<":
                dotted = ".".join(str(p) for p in (*path, key))
                raise InventoryError(
                    f"{filename}:{key_node.start_mark.line + 1} {dotted}: "
                    "duplicate key (the earlier value would be ignored)",
                    hint=_FIX_HINT,
                )
            seen.add(key)
            lines[(*path, key)] = key_node.start_mark.line + 1
            _map_lines(value_node, (*path, key), lines, filename, depth + 1)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*path, index)] = item.start_mark.line + 1
            _map_lines(item, (*path, index), lines, filename, depth + 1)


def _line_of(lines: dict[tuple, int], loc: tuple) -> int:
    """Line of the longest prefix of ``loc`` that exists in the file."""
    keys = tuple(str(p) if not isinstance(p, int) else p for p in loc)
    for end in range(len(keys), -1, -1):
        if keys[:end] in lines:
            return lines[keys[:end]]
    return 1


def _format_errors(exc: ValidationError, locate: Locator) -> list[str]:
    messages = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if p not in ("[key]",))
        # strip pydantic's internal step names (function-after[...], union members)
        loc = tuple(p for p in loc if not (isinstance(p, str) and "[" in p and "]" in p))
        messages.append(f"{locate(loc)}: {_explain(err, loc)}")
    return list(dict.fromkeys(messages))


_FIELDS_BY_SECTION = {
    (): InventoryModel.model_fields,
    ("defaults",): DefaultsModel.model_fields,
    ("devices", "*"): DeviceModel.model_fields,
}


def _explain(err: dict[str, Any], loc: tuple) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        parent = loc[:-1]
        if len(parent) == 2 and parent[0] == "devices":
            parent = ("devices", "*")
        fields = (
            LabgridModel.model_fields
            if parent and parent[-1] == "labgrid"
            else _FIELDS_BY_SECTION.get(parent, {})
        )
        return (
            f"unknown field {loc[-1]!r}"
            + _did_you_mean(str(loc[-1]), fields)
            + (f" (known: {', '.join(fields)})" if fields else "")
        )
    if kind == "missing":
        return "required field is missing"
    if kind == "literal_error" and loc and loc[-1] == "transport":
        return f"unknown transport {err.get('input')!r} (known: {', '.join(KNOWN_TRANSPORTS)})"
    return str(err["msg"])


def _did_you_mean(value: str, choices: Any) -> str:
    close = difflib.get_close_matches(value, [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
