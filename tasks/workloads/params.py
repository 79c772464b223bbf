"""Typed task parameters: declaration, validation and description.

Each task declares its parameters as a frozen dataclass whose fields are made with
:func:`param` (a default, a one-line help and an optional minimum). :func:`parse_params`
turns the raw mapping of a job spec or of CLI ``key=value`` pairs into that dataclass,
accepting the string spellings a command line produces (``"32"``, ``"true"``, ``"none"``);
:func:`describe_params` lists the fields for ``tslm-fleet tasks``.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tasks.errors import TaskError

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NONE = {"none", "null", "auto", ""}


@dataclass(frozen=True)
class ParamInfo:
    """One task parameter as ``tslm-fleet tasks`` shows it."""

    name: str
    type_name: str
    default: Any
    help: str


@dataclass(frozen=True)
class TaskInfo:
    """A registered task: its CLI name, one-line description and parameters."""

    name: str
    description: str
    parameters: tuple[ParamInfo, ...]


#: where a quality task may run (its ``on`` parameter): on every selected board, or once
#: per variant on the controller
PLACEMENTS = ("device", "controller")


def check_placement(on: str) -> None:
    """Reject an ``on`` value other than :data:`PLACEMENTS`."""
    if on not in PLACEMENTS:
        raise TaskError(
            f"parameter 'on' is {on!r}", hint=f"allowed values: {', '.join(PLACEMENTS)}"
        )


def param(default: Any, help: str, *, minimum: float | None = None) -> Any:
    """A dataclass field with the metadata :func:`parse_params` and ``tasks`` use."""
    return dataclasses.field(default=default, metadata={"help": help, "minimum": minimum})


def _allowed(annotation: Any) -> tuple[tuple[type, ...], bool]:
    """(concrete types, whether None is allowed) of a field's type hint."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = typing.get_args(annotation)
        return tuple(a for a in args if a is not type(None)), type(None) in args
    return (annotation,), False


def _type_name(annotation: Any) -> str:
    concrete, optional = _allowed(annotation)
    name = "|".join(t.__name__ for t in concrete)
    return f"{name}|None" if optional else name


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    concrete, optional = _allowed(annotation)
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in _NONE):
        if optional:
            return None
        raise TaskError(f"{where}: a value is required (expected {_type_name(annotation)})")
    for kind in concrete:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
                return value.strip().lower() in _TRUE
        elif kind is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, str):
                try:
                    return int(value.strip())
                except ValueError:
                    pass
        elif kind is float:
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, str):
                try:
                    return float(value.strip())
                except ValueError:
                    pass
        elif kind is str and isinstance(value, str):
            return value
    raise TaskError(f"{where}: expected {_type_name(annotation)}, got {value!r}")


def parse_params(cls: type, raw: Mapping[str, Any] | None, task: str) -> Any:
    """Validate ``raw`` into an instance of the params dataclass ``cls`` of ``task``.

    Raises :class:`TaskError` naming the bad key and listing the valid ones.
    """
    raw = {} if raw is None else raw
    if not isinstance(raw, Mapping):
        raise TaskError(
            f"task {task}: parameters must be a mapping of name to value, got {type(raw).__name__}"
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    valid = ", ".join(fields)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            guess = f" (did you mean {close[0]!r}?)" if close else ""
            raise TaskError(
                f"task {task}: unknown parameter {key!r}{guess}",
                hint=f"valid parameters of {task}: {valid}",
            )
        where = f"task {task}: parameter {key!r}"
        coerced = _coerce(value, hints[key], where)
        minimum = fields[key].metadata.get("minimum")
        if minimum is not None and coerced is not None and coerced < minimum:
            raise TaskError(f"{where}: must be >= {minimum:g}, got {coerced!r}")
        values[key] = coerced
    try:
        return cls(**values)
    except TaskError as exc:  # cross-field checks in the dataclass's __post_init__
        raise TaskError(f"task {task}: {exc.message}", hint=exc.hint) from exc


def describe_params(cls: type) -> tuple[ParamInfo, ...]:
    """The parameters of a params dataclass, in declaration order."""
    hints = typing.get_type_hints(cls)
    return tuple(
        ParamInfo(
            name=f.name,
            type_name=_type_name(hints[f.name]),
            default=f.default,
            help=f.metadata.get("help", ""),
        )
        for f in dataclasses.fields(cls)
    )
