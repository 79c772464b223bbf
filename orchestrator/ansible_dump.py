"""Read an Ansible inventory with ansible-core's own loader and print it as JSON.

Run as ``python -m orchestrator.ansible_dump SOURCE`` in a child process of its own:
ansible-core keeps global state (its configuration, plugin loaders, display), which has
no place in a long-lived controller. The output is one JSON object::

    {"hosts": {NAME: {VARIABLE: VALUE, ...}, ...},   # ansible_* and tslm_* variables
     "groups": {NAME: [HOST, ...], ...}}              # every group but all/ungrouped

Variables are those Ansible would give the host (group_vars, host_vars, inheritance and
precedence as Ansible applies them), with Jinja templates rendered. A source that Ansible
cannot parse is an error: ``{"error": MESSAGE}`` with exit status 2.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Any

#: variable prefixes handed to the controller (the rest of the host's variables stay here)
PREFIXES = ("ansible_", "tslm_")
#: groups every Ansible inventory has implicitly
IMPLICIT_GROUPS = frozenset({"all", "ungrouped"})
EXIT_UNPARSED = 2


def _quiet_ansible(tmp: str) -> None:
    """Settings for ansible-core in this process: fail on unparsable sources, no colour,
    temporary files under ``tmp``, no configuration file from the working directory."""
    config = os.path.join(tmp, "ansible.cfg")
    with open(config, "w", encoding="utf-8") as empty:
        empty.write("[defaults]\n")
    os.environ.update(
        {
            "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
            "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "True",
            "ANSIBLE_LOCAL_TEMP": tmp,
            "ANSIBLE_HOME": tmp,
            "ANSIBLE_NOCOLOR": "True",
            "ANSIBLE_DEPRECATION_WARNINGS": "False",
            "ANSIBLE_CONFIG": config,
        }
    )


def _plain(value: Any) -> Any:
    """Ansible's tagged and unsafe values as plain JSON types."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if value is None:
        return None
    return str(value)


class HostVariableError(Exception):
    """A variable of a host that Ansible cannot render (an undefined name, bad Jinja)."""

    def __init__(self, host: str, variable: str, cause: Exception) -> None:
        super().__init__(f"host {host} variable {variable}: {' '.join(str(cause).split())}")


def dump(source: str) -> dict[str, Any]:
    """Hosts with their ansible_*/tslm_* variables, and groups, of one inventory source."""
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar
    from ansible.vars.manager import VariableManager

    loader = DataLoader()
    inventory = InventoryManager(loader=loader, sources=[source])
    variables = VariableManager(loader=loader, inventory=inventory)
    hosts: dict[str, dict[str, Any]] = {}
    for host in inventory.get_hosts():
        every = variables.get_vars(host=host, include_hostvars=False)
        templar = Templar(loader=loader, variables=every)
        chosen = {}
        for key, value in every.items():
            if key.startswith(PREFIXES):
                try:
                    chosen[key] = _plain(templar.template(value))
                except AnsibleError as exc:
                    raise HostVariableError(host.name, key, exc) from exc
        hosts[host.name] = chosen
    groups = {
        name: [h.name for h in group.get_hosts()]
        for name, group in inventory.groups.items()
        if name not in IMPLICIT_GROUPS
    }
    return {"hosts": hosts, "groups": groups}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(json.dumps({"error": "usage: python -m orchestrator.ansible_dump SOURCE"}))
        return EXIT_UNPARSED
    with tempfile.TemporaryDirectory(prefix="tslm-ansible-") as tmp:
        _quiet_ansible(tmp)
        from ansible.errors import AnsibleError

        try:
            result = dump(argv[0])
        except HostVariableError as exc:
            print(json.dumps({"error": str(exc)}))
            return EXIT_UNPARSED
        except AnsibleError as exc:
            print(json.dumps({"error": " ".join(str(exc).split())}))
            return EXIT_UNPARSED
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
