"""Power-meter drivers, registered by the ``kind`` string of inventory.yaml.

:data:`METERS` maps each kind to ``"module:attribute"``; the module is imported only
when a meter of that kind is created, so importing this package pulls in neither
pyserial nor pyusb (the controller imports it for :data:`KNOWN_METER_KINDS`).
The attribute is a :class:`~agent.meters.base.Meter` subclass or a factory function
with keyword-only options (``auto``).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.meters.base import Meter, Sample
from tasks.errors import ConfigError, MeterError

#: kind -> "module:attribute" (a Meter class or a factory returning a Meter)
METERS: dict[str, str] = {
    "um24c": "agent.meters.rdtech:UM24C",
    "um25c": "agent.meters.rdtech:UM25C",
    "um34c": "agent.meters.rdtech:UM34C",
    "fnb48": "agent.meters.fnirsi:FNB48",
    "fnb58": "agent.meters.fnirsi:FNB58",
    "c1": "agent.meters.fnirsi:C1",
    "hwmon": "agent.meters.hwmon:HwmonMeter",
    "pi5-pmic": "agent.meters.pmic:Pi5PmicMeter",
    "rapl": "agent.meters.rapl:RaplMeter",
    "none": "agent.meters.none:NoMeter",
    "auto": "agent.meters.none:auto_meter",
}

#: every kind inventory.yaml may name, for validators that must not import drivers
KNOWN_METER_KINDS: tuple[str, ...] = tuple(METERS)

#: constructor arguments that tests and tools pass in code, never from inventory.yaml
_CODE_ONLY_OPTIONS = frozenset({"endpoints"})

#: where meter options that name a file system root or an executable may point by
#: default: the system's own locations. The inventory's ``defaults: {meter_roots: [...]}``
#: adds folders (how tests and emulators point elsewhere).
SYSTEM_ROOTS: dict[str, tuple[str, ...]] = {
    # a sysfs-style tree: the meter reads <root>/sys/...
    "root": ("/",),
    # an executable the meter runs
    "executable": ("/usr/bin", "/usr/local/bin", "/bin", "/opt/vc/bin", "/usr/sbin"),
    # a path read below the sysfs root (relative), or an absolute one under /sys
    "below_root": ("/sys",),
}

__all__ = [
    "KNOWN_METER_KINDS",
    "METERS",
    "Meter",
    "Sample",
    "check_meter_options",
    "create_meter",
    "meter_factory",
]


def meter_factory(kind: str) -> Callable[..., Meter]:
    """Import and return the class (or factory) registered for ``kind``.

    Unknown kinds raise :class:`ConfigError` with the closest names and the full list.
    """
    target = METERS.get(kind)
    if target is None:
        close = difflib.get_close_matches(kind, METERS, n=3)
        guess = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigError(
            f"unknown meter kind {kind!r}{guess}",
            hint=f"known meter kinds: {', '.join(METERS)}",
        )
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise MeterError(
            f"meter kind {kind!r} needs a library that is not installed: {exc}",
            hint="install the device extra: pip install 'tslm-fleet[device]' "
            "(pyserial for the UM series, pyusb for FNIRSI)",
        ) from exc
    return getattr(module, attribute)


def meter_options(kind: str) -> dict[str, inspect.Parameter]:
    """The user-facing options of ``kind`` (keyword parameters of its constructor)."""
    factory = meter_factory(kind)
    signature = inspect.signature(factory)
    return {
        name: param
        for name, param in signature.parameters.items()
        if name != "self"
        and name not in _CODE_ONLY_OPTIONS
        and param.kind in (param.KEYWORD_ONLY, param.POSITIONAL_OR_KEYWORD)
    }


def _did_you_mean(name: str, choices: Any) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _accepts(value: Any, annotation: Any) -> bool:
    """Whether a value as written in YAML or JSON can stand for an option of this type."""
    args = set(typing.get_args(annotation)) or {annotation}
    if value is None:
        return type(None) in args
    if isinstance(value, str):
        return True  # converted (and checked) by _coerce
    if isinstance(value, bool):
        return bool in args
    if isinstance(value, int):
        return bool(args & {int, float})
    if isinstance(value, float):
        return float in args
    return False


def _outside(value: str, allowed: tuple[str, ...], exact: bool) -> bool:
    """Whether ``value`` (normalised, no symlinks followed) lies outside every allowed root."""
    path = os.path.normpath(value)
    for root in allowed:
        root = os.path.normpath(root)
        if path == root or (not exact and path.startswith(root.rstrip("/") + "/")):
            return False
    return True


def _path_problem(
    kind: str, name: str, role: str, value: Any, extra_roots: tuple[str, ...]
) -> str | None:
    if not isinstance(value, str | Path):
        return None  # the type check reports it
    text = str(value)
    if role == "below_root" and not os.path.isabs(text):
        if os.path.normpath(text).split(os.sep)[0] == "..":
            return f"meter {kind!r} option {name!r}: {text!r} leaves the sysfs root"
        return None
    if not os.path.isabs(text):
        return f"meter {kind!r} option {name!r}: {text!r} must be an absolute path"
    system = SYSTEM_ROOTS[role]
    # the system root "/" is allowed as itself only, never as a prefix of everything
    if _outside(text, system, exact=role == "root") and _outside(text, extra_roots, False):
        listed = ", ".join([*system, *extra_roots])
        return (
            f"meter {kind!r} option {name!r}: {text!r} is outside the allowed locations "
            f"({listed}); add its folder to `defaults: {{meter_roots: [...]}}` in the inventory"
        )
    return None


def check_meter_options(
    kind: str, options: dict[str, Any], extra_roots: tuple[str, ...] | None = ()
) -> dict[str, str]:
    """The problems of a meter's options, as ``{option: message}`` (empty when none).

    The same rules hold for inventory.yaml (checked on the controller when it is loaded)
    and for a job spec (checked by the agent): every key must be an option of the kind,
    required options must be there, and every value must fit the option's type. An
    unknown kind is reported under ``kind``. Options that name a root or an executable
    (a meter's ``path_options``) must lie under :data:`SYSTEM_ROOTS` or ``extra_roots``;
    ``extra_roots=None`` leaves them unchecked (a meter built in code, or by the person at
    the board with ``meter read``).
    """
    if kind not in METERS:
        return {"kind": f"unknown meter kind {kind!r}{_did_you_mean(kind, METERS)}"}
    factory = meter_factory(kind)
    known = meter_options(kind)
    try:
        hints = typing.get_type_hints(factory.__init__ if inspect.isclass(factory) else factory)
    except Exception:  # unresolvable annotations: types are not checked
        hints = {}
    accepted = ", ".join(known) or "none"
    problems: dict[str, str] = {}
    for name, value in options.items():
        if name not in known:
            problems[name] = (
                f"meter {kind!r} has no option {name!r}{_did_you_mean(name, known)} "
                f"(accepted: {accepted})"
            )
            continue
        annotation = hints.get(name)
        if annotation is not None and not _accepts(value, annotation):
            problems[name] = (
                f"meter {kind!r} option {name!r}: {value!r} is not a valid {_type_name(annotation)}"
            )
        elif annotation is not None and isinstance(value, str):
            try:
                _coerce(kind, name, value, annotation)
            except ConfigError as exc:
                problems[name] = exc.message
    for name, param in known.items():
        if param.default is inspect.Parameter.empty and name not in options:
            problems[name] = f"meter {kind!r} needs the option {name!r} (accepted: {accepted})"
    path_options = getattr(factory, "path_options", {}) if extra_roots is not None else {}
    for name, role in path_options.items():
        if name in options and name not in problems:
            problem = _path_problem(kind, name, role, options[name], extra_roots)
            if problem:
                problems[name] = problem
    one_of = getattr(factory, "required_one_of", ())
    if one_of and not any(options.get(name) is not None for name in one_of):
        problems[one_of[0]] = f"meter {kind!r} needs one of the options {', '.join(one_of)}"
    return problems


def _type_name(annotation: Any) -> str:
    args = [a for a in (typing.get_args(annotation) or (annotation,)) if a is not type(None)]
    return " or ".join(sorted(getattr(a, "__name__", str(a)) for a in args))


def _coerce(kind: str, name: str, value: Any, annotation: Any) -> Any:
    """Convert a string option (from the CLI or a loosely typed file) to its declared type."""
    if not isinstance(value, str):
        return value
    args = set(typing.get_args(annotation)) or {annotation}
    args.discard(type(None))
    try:
        if bool in args:
            lowered = value.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if int in args:
            return int(value, 0)
        if float in args:
            return float(value)
        if Path in args:
            return Path(value)
    except ValueError as exc:
        wanted = " or ".join(sorted(getattr(a, "__name__", str(a)) for a in args))
        raise ConfigError(
            f"meter {kind!r}: option {name}={value!r} is not a valid {wanted}"
        ) from exc
    return value


def create_meter(kind: str, **options: Any) -> Meter:
    """Build the meter ``kind`` with ``options`` (as in inventory.yaml); does not open it.

    Unknown kinds and unknown options raise :class:`ConfigError` naming them;
    string values are converted to the option's declared type.
    """
    factory = meter_factory(kind)
    known = meter_options(kind)
    try:
        hints = typing.get_type_hints(factory.__init__ if inspect.isclass(factory) else factory)
    except Exception:  # unresolvable annotations: pass values through unconverted
        hints = {}
    problems = check_meter_options(
        kind, {k: v for k, v in options.items() if k not in _CODE_ONLY_OPTIONS}, None
    )
    if problems:
        raise ConfigError(
            "; ".join(problems.values()), hint=f"options of {kind!r}: {', '.join(known) or 'none'}"
        )
    converted: dict[str, Any] = {}
    for name, value in options.items():
        if name in _CODE_ONLY_OPTIONS:
            converted[name] = value
        else:
            converted[name] = _coerce(kind, name, value, hints.get(name, str))
    try:
        return factory(**converted)
    except TypeError as exc:
        raise ConfigError(f"meter {kind!r}: {exc}") from exc
