"""Errors of the labgrid layer (boards booked through a labgrid coordinator).

TslmError
└── LabError               the coordinator cannot be reached, or refuses a request
    ├── PlaceUnknownError  the coordinator has no such place
    └── PlaceBusyError     the place is held by someone else
"""

from __future__ import annotations

from tasks.errors import TslmError


class LabError(TslmError):
    """The labgrid coordinator cannot be reached, or refuses a request."""


class PlaceUnknownError(LabError):
    """The coordinator has no place of that name."""


class PlaceBusyError(LabError):
    """The place is held by someone else (``holder``: labgrid's ``host/user``)."""

    def __init__(self, message: str, *, holder: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.holder = holder
