"""Session-wide fixtures shared by every test package."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testbed import postgres, prerequisites


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a throwaway PostgreSQL server for the whole session (skips when none can
    be started here: no server binaries, or not root; fails under TSLM_STRICT_SKIPS=1)."""
    reason = postgres.unavailable_reason()
    if reason:
        prerequisites.missing(reason)
    with postgres.throwaway_cluster() as cluster:
        yield cluster.url
