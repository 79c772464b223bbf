"""Skipping a test for a missing prerequisite, or failing it where none may be missing.

Locally a machine without sshd, root or PostgreSQL skips the fleet, fault, security and
PostgreSQL tests, saying what is missing. CI (``.ci/run``) sets ``TSLM_STRICT_SKIPS=1``:
the same tests then fail with that reason, so a green CI run cannot hide skipped tests.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

STRICT_ENV = "TSLM_STRICT_SKIPS"


def strict() -> bool:
    return os.environ.get(STRICT_ENV, "").strip() not in ("", "0")


def missing(reason: str) -> NoReturn:
    """Skip the calling test for ``reason``, or fail it when skips are strict."""
    if strict():
        pytest.fail(f"prerequisite missing ({STRICT_ENV}=1 forbids skipping): {reason}")
    pytest.skip(reason)
