"""Shared boards booked through a labgrid coordinator.

:mod:`orchestrator.lab.client` speaks to the coordinator through labgrid's own client
API; :mod:`orchestrator.lab.booking` holds a device's place for its part of a run.
"""
