"""The tslm-fleet controller: CLI, inventory, SSH transport, deploy, scheduling,
live dashboard and reports."""

from tasks import __version__

__all__ = ["__version__"]
