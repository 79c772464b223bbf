"""A labgrid coordinator, through labgrid's own client API (``ClientSession`` over gRPC).

:class:`LabClient` keeps one ``ClientSession`` on an event loop of its own thread, so
that the session's place updates keep arriving while the controller's threads (one per
device) ask it, blocking, to acquire, look at and release places. labgrid names whoever
holds a place by ``host/user`` (``$LG_HOSTNAME``, ``$LG_USERNAME`` override them).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Coroutine
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from orchestrator.lab.errors import LabError, PlaceBusyError, PlaceUnknownError

#: environment variable naming the coordinator when the inventory does not
COORDINATOR_ENV = "LG_COORDINATOR"
#: labgrid's default coordinator port
DEFAULT_PORT = 20408
#: how long connecting to the coordinator may take
CONNECT_TIMEOUT_S = 15.0
#: how long one request to the coordinator may take
REQUEST_TIMEOUT_S = 30.0

_INSTALL_HINT = "install the extra: pip install 'tslm-fleet[labgrid]'"


@dataclass(frozen=True)
class PlaceInfo:
    """One place of the coordinator as the client sees it."""

    name: str
    holder: str | None
    comment: str
    tags: tuple[tuple[str, str], ...]


def coordinator_address(configured: str | None) -> str:
    """The coordinator of a device: its inventory value, else ``$LG_COORDINATOR``."""
    address = configured or os.environ.get(COORDINATOR_ENV)
    if not address:
        raise LabError(
            "a device names a labgrid place, and no coordinator is configured",
            hint=f"set defaults: {{labgrid: {{coordinator: HOST:PORT}}}} in the inventory, "
            f"or {COORDINATOR_ENV}",
        )
    return address


class LabClient:
    """One session with a labgrid coordinator; blocking methods, safe from any thread."""

    def __init__(self, address: str, *, connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        try:
            from labgrid.util.proxy import proxymanager
        except ImportError:
            raise LabError(
                f"a device names a labgrid place (coordinator {address}), and labgrid is "
                "not installed",
                hint=_INSTALL_HINT,
            ) from None
        _quiet_root_logger()
        self.address = address
        self._grpc_address = proxymanager.get_grpc_address(address, default_port=DEFAULT_PORT)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"labgrid {address}", daemon=True
        )
        self._thread.start()
        self._session: Any = None
        try:
            self._session = self._call(self._start(), connect_timeout_s, "connecting")
        except BaseException:
            self._stop_loop()
            raise
        self.identity = f"{self._session.gethostname()}/{self._session.getuser()}"

    # ------------------------------------------------------------------ plumbing
    async def _start(self) -> Any:
        from labgrid.remote.client import ClientSession

        session = ClientSession(self._grpc_address, self._loop)
        await session.start()
        return session

    def _call(self, coro: Coroutine[Any, Any, Any], timeout_s: float, doing: str) -> Any:
        from labgrid.remote.client import Error as ClientError

        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout_s)
        except FutureTimeout:
            future.cancel()
            raise self._unreachable(f"no answer in {timeout_s:g} s while {doing}") from None
        except ClientError as exc:
            raise self._unreachable(str(exc).removeprefix("Error: ")) from exc

    def _unreachable(self, detail: str) -> LabError:
        return LabError(
            f"labgrid coordinator {self.address} cannot be reached: {detail}",
            hint="start labgrid-coordinator there, or fix the inventory's "
            f"labgrid.coordinator (or {COORDINATOR_ENV})",
        )

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()

    def close(self) -> None:
        """End the session (idempotent)."""
        if self._session is not None:
            session, self._session = self._session, None
            try:
                self._call(_close(session), 5.0, "closing the session")
            except LabError:
                pass
        if not self._loop.is_closed():
            self._stop_loop()

    def __enter__(self) -> LabClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ places
    def places(self) -> list[PlaceInfo]:
        """Every place of the coordinator, by name."""

        async def read() -> list[PlaceInfo]:
            await self._session.sync_with_coordinator()
            return [
                PlaceInfo(
                    name=name,
                    holder=place.acquired or None,
                    comment=place.comment or "",
                    tags=tuple(sorted((str(k), str(v)) for k, v in place.tags.items())),
                )
                for name, place in sorted(self._session.places.items())
            ]

        return self._call(read(), REQUEST_TIMEOUT_S, "listing places")

    def holder(self, place: str, *, sync: bool = False) -> str | None:
        """Who holds ``place`` (labgrid's ``host/user``), None when it is free."""

        async def read() -> str | None:
            if sync:
                await self._session.sync_with_coordinator()
            found = self._session.places.get(place)
            if found is None:
                raise PlaceUnknownError(
                    f"labgrid coordinator {self.address} has no place {place!r} "
                    f"(places: {', '.join(sorted(self._session.places)) or 'none'})",
                    hint=f"create it with: labgrid-client -x {self.address} -p {place} create",
                )
            return found.acquired or None

        return self._call(read(), REQUEST_TIMEOUT_S, f"looking at place {place}")

    def acquire(self, place: str) -> None:
        """Acquire ``place`` for this user; :class:`PlaceBusyError` when someone holds it."""
        import grpc
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb2

        async def request() -> None:
            try:
                await self._session.stub.AcquirePlace(pb2.AcquirePlaceRequest(placename=place))
            except grpc.aio.AioRpcError as exc:
                await self._session.sync_with_coordinator()
                found = self._session.places.get(place)
                if exc.code() == grpc.StatusCode.FAILED_PRECONDITION and found is not None:
                    holder = found.acquired or "someone else"
                    raise PlaceBusyError(
                        f"place {place} is held by {holder}", holder=holder
                    ) from None
                raise LabError(
                    f"labgrid coordinator {self.address} refused to acquire place {place}: "
                    f"{exc.details()}"
                ) from None
            await self._session.sync_with_coordinator()

        self.holder(place)  # an unknown place is an error of its own
        self._call(request(), REQUEST_TIMEOUT_S, f"acquiring place {place}")

    def release(self, place: str) -> bool:
        """Release ``place`` if this user holds it (the coordinator checks, atomically);
        True when it was ours and is now free."""
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb2

        async def request() -> bool:
            import grpc

            mine = self._session.places.get(place)
            was_mine = mine is not None and mine.acquired == self.identity
            try:
                await self._session.stub.ReleasePlace(
                    pb2.ReleasePlaceRequest(placename=place, fromuser=self.identity)
                )
            except grpc.aio.AioRpcError as exc:
                raise LabError(
                    f"labgrid coordinator {self.address} refused to release place {place}: "
                    f"{exc.details()}"
                ) from None
            await self._session.sync_with_coordinator()
            return was_mine

        return self._call(request(), REQUEST_TIMEOUT_S, f"releasing place {place}")


def _quiet_root_logger() -> None:
    """labgrid's client logs connection trouble on the root logger, which (without a
    handler) prints it on stderr; the error raised here already says it."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.NullHandler())


async def _close(session: Any) -> None:
    await session.stop()
    await session.close()
