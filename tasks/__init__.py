"""Pure compute for tslm-fleet: tensor-train compression, compressed embeddings,
artifacts, model loading and workloads.

This package travels to the devices together with ``agent``. Importing it must stay
cheap: heavy libraries (torch, transformers, tensorly) are imported inside the
modules that need them, never here.
"""

#: the version of tslm-fleet (the one place it is written; pyproject.toml reads it)
__version__ = "0.1.0"
