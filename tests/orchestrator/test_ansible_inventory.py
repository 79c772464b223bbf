"""Ansible inventories read by ansible-core wherever inventory.yaml is taken.

``ansible_lab/`` is a real inventory directory (hosts.yml, group_vars/, host_vars/);
``ansible_lab.ini`` a single INI file.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.ansible_inventory import is_ansible_source, open_inventory
from orchestrator.inventory import load_inventory
from orchestrator.selection import select_devices
from tasks.errors import InventoryError

pytest.importorskip("ansible")

HERE = Path(__file__).parent
LAB = HERE / "ansible_lab"
INI = HERE / "ansible_lab.ini"


@pytest.fixture(scope="module")
def lab_inventory():
    return open_inventory(LAB)


@pytest.fixture
def lab_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(LAB, tmp_path / "lab"))


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_hosts_become_devices_with_their_variables(lab_inventory) -> None:
    inv = lab_inventory
    assert list(inv.devices) == ["pi4-01", "pi4-02", "pi5-01", "workstation"]
    pi4 = inv["pi4-02"]
    assert (pi4.host, pi4.user, pi4.port) == ("192.0.2.42", "pi", 2222)
    assert pi4.identity_file == Path("~/.ssh/lab_ed25519").expanduser()
    # the system Python bootstrap makes the venv with, not the agent's venv
    assert pi4.base_python == "/usr/bin/python3.11"
    assert pi4.python == "~/.tslm/venv/bin/python3"
    assert pi4.board == "raspberrypi4"
    # host_vars over group_vars, with the Jinja template rendered by Ansible
    assert pi4.meter.to_dict() == {"kind": "um34c", "port": "/dev/rfcomm2"}
    assert (pi4.lab_place, pi4.lab_coordinator) == ("pi4-02", "127.0.0.1:20408")
    assert inv["pi4-01"].meter.to_dict() == {"kind": "um25c", "port": "/dev/rfcomm0"}
    assert inv["pi4-01"].port == 22 and inv["pi4-01"].lab_place is None
    pi5 = inv["pi5-01"]
    assert (pi5.board, pi5.tags, pi5.python) == (
        "raspberrypi5",
        ("fast",),
        "~/venvs/tslm/bin/python3",
    )
    assert inv["workstation"].transport == "local"
    assert "host pi4-02" in pi4.source


def test_groups_select_devices(lab_inventory) -> None:
    inv = lab_inventory
    assert inv.groups["pi4"] == ("pi4-01", "pi4-02")
    assert set(inv.groups["boards"]) == {"pi4-01", "pi4-02", "pi5-01"}
    assert "all" not in inv.groups and "ungrouped" not in inv.groups
    assert [d.name for d in select_devices(inv, "pi5,controller")] == ["pi5-01", "workstation"]
    assert [d.name for d in select_devices(inv, "boards")] == ["pi4-01", "pi4-02", "pi5-01"]


def test_ini_file(tmp_path: Path) -> None:
    assert is_ansible_source(INI)
    inv = open_inventory(INI)
    assert inv["pi4-01"].board == "raspberrypi4" and inv["pi4-01"].user == "pi"
    assert inv["pi4-02"].port == 2222
    assert inv.groups == {"pi4": ("pi4-01", "pi4-02"), "lab": ("pi4-01", "pi4-02")}


def test_native_inventory_is_still_native(tmp_path: Path) -> None:
    native = tmp_path / "inventory.yaml"
    native.write_text("devices:\n  local: {transport: local}\n")
    assert not is_ansible_source(native)
    assert list(open_inventory(native).devices) == ["local"]


def test_import_writes_the_native_form(tmp_path: Path, lab_inventory) -> None:
    done = cli("inventory", "import", "ansible", str(LAB), "-o", "inventory.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "wrote inventory.yaml: 4 devices, 4 groups" in done.stdout
    native = load_inventory(tmp_path / "inventory.yaml")
    for name, device in lab_inventory.devices.items():
        assert native[name].__dict__ | {"source": ""} == device.__dict__ | {"source": ""}
    assert native.groups == lab_inventory.groups
    again = cli("inventory", "import", "ansible", str(LAB), "-o", "inventory.yaml", cwd=tmp_path)
    assert again.returncode == 2 and "exists already" in again.stderr
    # and every command takes the Ansible inventory itself
    check = cli("inventory", "check", "-i", str(LAB), cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert "group boards: pi4-01, pi4-02, pi5-01" in check.stdout


def test_unknown_tslm_variable_names_host_and_variable(lab_copy: Path) -> None:
    (lab_copy / "host_vars" / "pi5-01.yml").write_text("tslm_metre: {kind: um25c}\n")
    with pytest.raises(InventoryError) as info:
        open_inventory(lab_copy)
    assert "host pi5-01 variable tslm_metre: unknown tslm variable" in info.value.message
    assert "did you mean 'tslm_meter'" in info.value.message


def test_host_without_address_is_named(lab_copy: Path) -> None:
    hosts = lab_copy / "hosts.yml"
    hosts.write_text(hosts.read_text().replace("ansible_host: 192.0.2.51", "{}"))
    with pytest.raises(InventoryError, match="host pi5-01 has no address: set ansible_host"):
        open_inventory(lab_copy)


def test_bad_values_name_host_and_variable(lab_copy: Path) -> None:
    (lab_copy / "host_vars" / "pi5-01.yml").write_text(
        "tslm_meter: {kind: um99}\nansible_port: 70000\n"
    )
    with pytest.raises(InventoryError) as info:
        open_inventory(lab_copy)
    message = info.value.message
    assert "host pi5-01 variable tslm_meter.kind: unknown meter kind 'um99'" in message
    assert "host pi5-01 variable ansible_port: port 70000 is not in 1-65535" in message


def test_unparsable_inventory_is_a_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "hosts.ini"
    broken.write_text("[pi4\npi4-01 ansible_host=192.0.2.41\n")
    done = cli("inventory", "check", "-i", str(broken), cwd=tmp_path)
    assert done.returncode == 2
    assert f"{broken}: not a valid Ansible inventory" in done.stderr
    assert "Traceback" not in done.stderr


def test_older_spellings_and_interpreter_discovery(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts.ini"
    hosts.write_text(
        "[old]\n"
        "pi3 ansible_ssh_host=192.0.2.3 ansible_ssh_user=pi ansible_ssh_port=2200 "
        "ansible_private_key_file=/keys/pi3 ansible_python_interpreter=auto_silent\n"
        "pi3b ansible_host=192.0.2.4 ansible_ssh_host=192.0.2.99\n"
    )
    inv = open_inventory(hosts)
    pi3 = inv["pi3"]
    assert (pi3.host, pi3.user, pi3.port) == ("192.0.2.3", "pi", 2200)
    assert pi3.identity_file == Path("/keys/pi3")
    assert pi3.base_python == "python3"  # Ansible's discovery is not a path: the default
    assert inv["pi3b"].host == "192.0.2.4"  # the current name wins over the older one


def test_a_template_that_cannot_render_names_host_and_variable(lab_copy: Path) -> None:
    (lab_copy / "host_vars" / "pi5-01.yml").write_text("tslm_workdir: '{{ no_such_var }}/w'\n")
    with pytest.raises(InventoryError) as info:
        open_inventory(lab_copy)
    assert "host pi5-01 variable tslm_workdir:" in info.value.message
    assert "no_such_var" in info.value.message
