"""Errors of the transports: reaching a device, its host key, its commands.

    TslmError                  (tasks.errors)
    └── TransportError         SSH or local transport failure
        ├── ConnectError       the device cannot be reached
        ├── HostKeyError       unknown or changed host key
        └── RemoteCommandError a remote command exited non-zero

Library exceptions (paramiko, OSError) are caught at the transport boundary and
re-raised as one of these, chained with ``from exc``.
"""

from __future__ import annotations

from tasks.errors import TslmError


class TransportError(TslmError):
    """SSH or local transport failure."""


class ConnectError(TransportError):
    """The device cannot be reached."""


class HostKeyError(TransportError):
    """The device's host key is unknown or has changed."""


class RemoteCommandError(TransportError):
    """A remote command exited with a non-zero status."""

    def __init__(
        self,
        message: str,
        *,
        exit_code: int | None = None,
        stderr: str = "",
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = exit_code
        self.stderr = stderr
