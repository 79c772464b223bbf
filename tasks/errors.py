"""The exception tree of tslm-fleet.

Every error a user can cause is a :class:`TslmError`. Each one says what was wrong,
where (file:line:field, device name, job id) and, through ``hint``, what to do.
Third-party exceptions are caught at the boundary and re-raised as one of these,
chained with ``from exc``.

    TslmError
    ├── ConfigError            invalid user input (CLI values, variant specs, experiment files)
    │   ├── InventoryError     inventory.yaml cannot be read or is invalid
    │   └── JobSpecError       a job spec is invalid or asks for a path outside the work dir
    ├── ModelError             a model cannot be found or loaded
    ├── ArtifactError          an artifact is missing, corrupted (hash mismatch) or unsupported
    ├── CompressionError       a compression method cannot satisfy its parameters
    ├── TaskError              unknown workload or a workload that failed
    ├── MeterError             a power meter cannot be opened or read
    │   ├── MeterTimeout       the meter did not answer in time
    │   └── MeterProtocolError the meter answered with bytes that do not decode
    ├── AgentError             a job failed on the device (remote errors are re-raised as this)
    │   ├── ProtocolError      an event or message the other side does not understand
    │   └── JobBusyError       another job holds the device's job lock
    ├── TransportError         SSH or local transport failure (orchestrator.transport.errors)
    │   └── ...
    ├── LabError               labgrid coordinator unreachable or refusing (orchestrator.lab.errors)
    │   └── ...
    └── DatabaseError          the results database cannot be opened, migrated or queried
        └── ...                (db.errors)

Errors live with the package that raises them: this module holds the root and the
errors of the lowest layer (``tasks``, and ``agent``, which runs beside it on the
devices); the controller's transport errors are in :mod:`orchestrator.transport.errors`,
the database's in :mod:`db.errors`.
"""

from __future__ import annotations


class TslmError(Exception):
    """Root of all tslm-fleet errors.

    ``message`` says what went wrong and where; ``hint`` (optional) says what to do.
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(TslmError):
    """Invalid user input: CLI values, variant specs, experiment files."""


class InventoryError(ConfigError):
    """inventory.yaml cannot be read or is invalid."""


class JobSpecError(ConfigError):
    """A job spec is invalid, or asks for a path outside the agent's work directory."""


class ModelError(TslmError):
    """A model cannot be found or loaded."""


class ArtifactError(TslmError):
    """An artifact is missing, corrupted or of an unsupported format."""


class CompressionError(TslmError):
    """A compression method cannot satisfy its parameters."""


class TaskError(TslmError):
    """Unknown workload, bad workload parameters, or a workload that failed."""


class MeterError(TslmError):
    """A power meter cannot be opened or read."""


class MeterTimeout(MeterError):
    """The meter did not answer in time."""


class MeterProtocolError(MeterError):
    """The meter answered with bytes that do not decode."""


class AgentError(TslmError):
    """A job failed on the device; remote errors are re-raised as this."""


class ProtocolError(AgentError):
    """An event or message that the other side does not understand."""


class JobBusyError(AgentError):
    """Another job holds the device's job lock."""
