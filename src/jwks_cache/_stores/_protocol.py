"""What the Registry needs from persistence: a local snapshot store, and a shared one for fleets."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

import anyio
import anyio.abc

from .._models import Snapshot

__all__ = ["ClosesOnExit", "NoticeHandler", "SharedStore", "SnapshotStore"]

#: Called by :meth:`SharedStore.listen` with ``(tenant, provider)`` for every change notice.
NoticeHandler = Callable[[str, str], Awaitable[None]]


@runtime_checkable
class SnapshotStore(Protocol):
    """Where last-known-good key sets survive a restart.

    A store is an async context manager: the owner (the Registry) enters it before its task group and
    leaves it after, in the same task, because a client such as coredis 6 anchors its connection
    tasks to the task that opened it. Every method is async, a cancellation point and cancel-safe:
    an interrupted ``save`` leaves the old snapshot or the new one, never a torn one.

    Bad data is never an exception: ``load`` returns ``None`` for a snapshot that is absent, corrupt,
    from a newer format or failing its MAC, and logs a :class:`~jwks_cache.StoreError` at WARNING on
    the ``jwks_cache`` logger. I/O failures (disk, Redis outage) raise ``StoreError``.
    """

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None: ...

    async def load(self, tenant: str, provider: str) -> Snapshot | None:
        """The stored snapshot, or ``None`` when there is no usable one."""
        ...

    async def save(self, snapshot: Snapshot) -> None:
        """Replace the provider's snapshot; raises ``StoreError`` on I/O failure."""
        ...

    async def delete(self, tenant: str, provider: str) -> None:
        """Forget the provider's snapshot; absent is not an error."""
        ...

    async def load_all(self) -> list[Snapshot]:
        """Every usable snapshot, for a warm start of many providers at once."""
        ...

    async def aclose(self) -> None:
        """Release what the store opened itself; idempotent. Must run in the task that entered it."""
        ...


@runtime_checkable
class SharedStore(SnapshotStore, Protocol):
    """A store a whole fleet shares, so the fleet fetches each JWKS about once per period.

    ``shared`` says whether the owner should use the fleet primitives at all; a store may implement
    them and still be configured for local use only.

    Optionally, ``async def lease_age(tenant, provider, *, purpose="refresh") -> float | None``: the
    seconds since the current holder took the lease (``None``: nobody holds it, or it cannot be
    dated). It is not part of the protocol, so stores written before it still qualify; without it,
    an instance waiting on another's unknown-kid or ``refresh()`` fetch cannot tell whether that
    fetch landed already and waits (bounded) for a set as new as its own lookup instead.
    """

    shared: bool

    async def acquire_lease(self, tenant: str, provider: str, ttl: float, *, purpose: str = "refresh") -> str | None:
        """Try to become the one instance refreshing this provider for ``ttl`` seconds.

        Returns:
            An opaque token when the lease is now ours, ``None`` when another instance holds it.
        """
        ...

    async def release_lease(self, tenant: str, provider: str, token: str, *, purpose: str = "refresh") -> None:
        """Give the lease back early; a no-op unless ``token`` still owns it (it may have expired)."""
        ...

    async def publish(self, snapshot: Snapshot) -> None:
        """Save the snapshot, then tell every listener that the provider has a new one."""
        ...

    async def listen(
        self,
        on_notice: NoticeHandler,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Call ``on_notice(tenant, provider)`` for every notice until cancelled.

        A loop for the owner's task group (stores never spawn tasks). It survives outages of the
        backing service by reconnecting with bounded backoff and never raises for them; errors raised
        by ``on_notice`` propagate. ``task_status.started()`` fires once subscribed, or once the first
        attempt failed, so the owner's startup never waits on an outage.
        """
        ...


class ClosesOnExit:
    """``async with store:`` for the stores: entering opens nothing, leaving calls ``aclose()``."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        raise NotImplementedError
