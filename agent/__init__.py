"""The tslm-fleet device agent: runs jobs, samples power meters, writes the journal.

Travels to the devices (as a zipapp, together with ``tasks``); it must import nothing
from ``orchestrator`` or ``db`` and nothing beyond torch, transformers, safetensors,
numpy and the meter libraries.
"""

from tasks import __version__

__all__ = ["__version__"]
