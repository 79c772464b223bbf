"""Byte-level emulators of the power meters, shared by unit tests, fleet tests and benchmarks.

Each speaks the real protocol of ``shared/reference/power-meters.md``: the drivers under
test are the real drivers. ``python -m tests.emulators.um`` runs a UM meter on a
pseudo-terminal for another process.
"""
