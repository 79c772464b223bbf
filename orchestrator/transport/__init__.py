"""Transports: how the controller runs commands and moves files on a device.

``open_transport(device)`` picks the implementation registered for the device's
``transport`` (``ssh`` or ``local``); both implement :class:`~orchestrator.transport.base.Transport`.
"""

from orchestrator.transport.base import (
    TRANSPORTS,
    CommandResult,
    Transport,
    open_transport,
)

__all__ = ["TRANSPORTS", "CommandResult", "Transport", "open_transport"]
