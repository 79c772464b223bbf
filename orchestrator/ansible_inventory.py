"""Ansible inventories as tslm-fleet inventories.

Wherever ``inventory.yaml`` is taken, an Ansible inventory may stand instead: a YAML or
INI file, or a directory (with ``group_vars/`` and ``host_vars/``). ansible-core's own
loader reads it, in a child process (:mod:`orchestrator.ansible_dump`), and each host
becomes a device:

=============================== =====================================================
Ansible variable                device field
=============================== =====================================================
``ansible_host``                ``host`` (required for an ssh host)
``ansible_user``                ``user``
``ansible_port``                ``port``
``ansible_ssh_private_key_file`` ``identity_file``
``ansible_python_interpreter``  ``base_python`` (the system Python ``bootstrap`` uses;
                                ``auto*`` keeps the default ``python3``)
``ansible_connection: local``   ``transport: local``
``tslm_FIELD``                  ``FIELD`` (``tslm_meter``, ``tslm_python``, ...)
=============================== =====================================================

The older ``ansible_ssh_host``, ``ansible_ssh_user``, ``ansible_ssh_port`` and
``ansible_private_key_file`` stand in when the names above are not set. Ansible groups
(but ``all`` and ``ungrouped``) become ``--devices`` groups. Errors name
the host and the variable. :func:`open_inventory` picks the format of a path.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from orchestrator.inventory import (
    DeviceModel,
    Inventory,
    _did_you_mean,
    inventory_from_data,
    load_inventory,
    resolve_inventory_path,
)
from tasks.errors import InventoryError

#: Ansible connection variables and the device fields they fill
ANSIBLE_FIELDS: dict[str, str] = {
    "ansible_host": "host",
    "ansible_user": "user",
    "ansible_port": "port",
    "ansible_ssh_private_key_file": "identity_file",
    "ansible_python_interpreter": "base_python",
}
#: older spellings Ansible still accepts, used when the variable above is not set
ANSIBLE_ALIASES: dict[str, str] = {
    "ansible_ssh_host": "ansible_host",
    "ansible_ssh_user": "ansible_user",
    "ansible_ssh_port": "ansible_port",
    "ansible_private_key_file": "ansible_ssh_private_key_file",
}
#: device fields that only Ansible's own variables set (no tslm_ twin)
_FROM_ANSIBLE_ONLY = frozenset({*ANSIBLE_FIELDS.values(), "transport"})
#: ``tslm_*`` variables and the device fields they fill
TSLM_FIELDS: dict[str, str] = {
    f"tslm_{name}": name for name in DeviceModel.model_fields if name not in _FROM_ANSIBLE_ONLY
}
#: ansible_connection values and the transport they mean
CONNECTIONS = {"ssh": "ssh", "paramiko": "ssh", "smart": "ssh", "local": "local"}
#: top-level keys of a native inventory.yaml
_NATIVE_KEYS = frozenset({"devices", "defaults", "groups"})
#: how long reading an Ansible inventory may take
LOAD_TIMEOUT_S = 120

_INSTALL_HINT = "install the extra: pip install 'tslm-fleet[ansible]'"


def is_ansible_source(path: Path) -> bool:
    """True for a directory, an INI file, or YAML whose top level is not the native form."""
    if path.is_dir():
        return True
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return False  # the native loader reports it
    except yaml.YAMLError:
        return True  # INI (or broken YAML, which Ansible then reports)
    if isinstance(data, dict):
        if "all" in data and "devices" not in data:
            return True  # Ansible's YAML form, whatever its groups are called
        return not (_NATIVE_KEYS & set(data)) and bool(data)
    return isinstance(data, str)  # a one-word INI file parses as a YAML string


def open_inventory(value: str | os.PathLike[str] | None = None) -> Inventory:
    """The inventory at ``value`` (``-i``, ``$TSLM_INVENTORY``, ./inventory.yaml), native
    or Ansible."""
    path = resolve_inventory_path(value)
    if path.exists() and is_ansible_source(path):
        return load_ansible_inventory(path)
    return load_inventory(path)


def read_ansible(path: Path) -> dict[str, Any]:
    """Hosts and groups of an Ansible inventory, read by ansible-core in a child process."""
    if importlib.util.find_spec("ansible") is None:  # found, not imported: it stays out
        raise InventoryError(
            f"{path}: is an Ansible inventory, and ansible-core is not installed",
            hint=_INSTALL_HINT,
        )
    try:
        done = subprocess.run(
            [sys.executable, "-m", "orchestrator.ansible_dump", str(path)],
            capture_output=True,
            text=True,
            timeout=LOAD_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise InventoryError(
            f"{path}: ansible-core did not read the inventory in {LOAD_TIMEOUT_S} s"
        ) from None
    lines = done.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else None
    except ValueError:
        result = None
    if not isinstance(result, dict):
        detail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise InventoryError(f"{path}: ansible-core could not read the inventory: {detail}")
    if "error" in result:
        raise InventoryError(
            f"{path}: not a valid Ansible inventory: {result['error']}",
            hint="check it with `ansible-inventory -i PATH --list`",
        )
    return result


def convert(path: Path, dumped: dict[str, Any]) -> dict[str, Any]:
    """The native inventory data (``devices``, ``groups``) of a dumped Ansible inventory;
    an unknown ``tslm_*`` variable or a host without an address is an error naming it."""
    errors: list[str] = []
    devices: dict[str, dict[str, Any]] = {}
    for host, variables in dumped["hosts"].items():
        devices[host] = _device_of(path, host, variables, errors)
    if errors:
        raise InventoryError("\n".join(errors), hint=_FIX_HINT)
    groups = {g: list(members) for g, members in dumped["groups"].items() if members}
    return {"devices": devices, "groups": groups}


_FIX_HINT = "fix the Ansible inventory and check it with `tslm-fleet inventory check -i PATH`"


def _device_of(path: Path, host: str, variables: dict[str, Any], errors: list[str]) -> dict:
    entry: dict[str, Any] = {}
    connection = variables.get("ansible_connection", "ssh")
    if connection not in CONNECTIONS:
        errors.append(
            f"{path}: host {host} variable ansible_connection: {connection!r} is not "
            f"supported (known: {', '.join(CONNECTIONS)})"
        )
    elif CONNECTIONS[connection] == "local":
        entry["transport"] = "local"
    variables = dict(variables)
    for alias, name in ANSIBLE_ALIASES.items():
        if alias in variables and name not in variables:
            variables[name] = variables[alias]
    interpreter = str(variables.get("ansible_python_interpreter", ""))
    if interpreter.startswith("auto"):  # Ansible's discovery: the device default stays
        variables.pop("ansible_python_interpreter")
    for variable, value in sorted(variables.items()):
        if variable in ANSIBLE_FIELDS:
            field = ANSIBLE_FIELDS[variable]
            if field == "port" and isinstance(value, str) and value.strip().isdigit():
                value = int(value)  # INI files and templates give strings
            entry[field] = value
        elif variable.startswith("tslm_"):
            if variable not in TSLM_FIELDS:
                errors.append(
                    f"{path}: host {host} variable {variable}: unknown tslm variable"
                    f"{_did_you_mean(variable, TSLM_FIELDS)} (known: {', '.join(TSLM_FIELDS)})"
                )
                continue
            entry[TSLM_FIELDS[variable]] = value
    if entry.get("transport") != "local" and not entry.get("host"):
        errors.append(
            f"{path}: host {host} has no address: set ansible_host (or "
            "ansible_connection: local for the controller itself)"
        )
    order = ["host", *DeviceModel.model_fields]
    return {key: entry[key] for key in sorted(entry, key=order.index)}


def _variable_of(field: str) -> str:
    for variable, name in ANSIBLE_FIELDS.items():
        if name == field:
            return variable
    return "ansible_connection" if field == "transport" else f"tslm_{field}"


def _locator(path: Path) -> Callable[[tuple], str]:
    def locate(loc: tuple) -> str:
        if len(loc) >= 3 and loc[0] == "devices":
            rest = "".join(f".{p}" for p in loc[3:])
            return f"{path}: host {loc[1]} variable {_variable_of(str(loc[2]))}{rest}"
        if len(loc) >= 2 and loc[0] in ("devices", "groups"):
            kind = "host" if loc[0] == "devices" else "group"
            return f"{path}: {kind} {loc[1]}"
        return f"{path}: {'.'.join(str(p) for p in loc) or '(top level)'}"

    return locate


def load_ansible_inventory(path: Path) -> Inventory:
    """Read and validate an Ansible inventory (file or directory) as an :class:`Inventory`."""
    return _load(path)[1]


def _load(path: Path) -> tuple[dict[str, Any], Inventory]:
    data = convert(path, read_ansible(path))
    if not data["devices"]:
        raise InventoryError(f"{path}: the Ansible inventory has no hosts", hint=_FIX_HINT)
    inventory = inventory_from_data(
        data,
        path=path,
        locate=_locator(path),
        source_of=lambda name: f"{path}: host {name}",
    )
    return data, inventory


def native_yaml(path: Path) -> str:
    """The native inventory.yaml text of an Ansible inventory (validated first)."""
    data, _ = _load(path)  # every error before anything is written
    header = f"# converted from the Ansible inventory {path} by `tslm-fleet inventory import`\n"
    return header + yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
