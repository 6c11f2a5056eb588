"""MemoryStore: snapshots in a dict, for tests and for handing keys between registries in one process."""

from __future__ import annotations

import anyio.lowlevel

from .._models import Snapshot
from . import _codec
from ._protocol import ClosesOnExit

__all__ = ["MemoryStore"]


class MemoryStore(ClosesOnExit):
    """A :class:`SnapshotStore` that lives as long as the object.

    Snapshots go through the same codec (and HMAC, with ``hmac_key``) as the persistent stores, so a
    test against it exercises the real format, and callers never share mutable state with the store.
    One instance can be passed to several registries in turn to simulate a restart.
    """

    def __init__(self, *, hmac_key: bytes | None = None) -> None:
        """Create an empty store.

        Args:
            hmac_key: when set (at least 16 bytes), snapshots are signed and unsigned or altered
                entries are ignored.

        Raises:
            ConfigError: ``hmac_key`` is not bytes or is too short.
        """
        self._hmac_key = _codec.check_hmac_key(hmac_key)
        self._data: dict[tuple[str, str], bytes] = {}

    def __repr__(self) -> str:
        return f"MemoryStore({len(self._data)} snapshots)"

    async def load(self, tenant: str, provider: str) -> Snapshot | None:
        """The provider's snapshot, or ``None`` if absent or unusable (logged)."""
        await anyio.lowlevel.checkpoint()
        _codec.check_names(tenant, provider)
        data = self._data.get((tenant, provider))
        if data is None:
            return None
        return _codec.decode_or_none(
            data, self._hmac_key, source=f"memory:{tenant}/{provider}", expect=(tenant, provider)
        )

    async def save(self, snapshot: Snapshot) -> None:
        """Store ``snapshot``, replacing the provider's previous one."""
        await anyio.lowlevel.checkpoint()
        self._data[(snapshot.tenant, snapshot.provider)] = _codec.encode(snapshot, self._hmac_key)

    async def delete(self, tenant: str, provider: str) -> None:
        """Forget the provider's snapshot, if any."""
        await anyio.lowlevel.checkpoint()
        self._data.pop((tenant, provider), None)

    async def load_all(self) -> list[Snapshot]:
        """Every usable snapshot, in insertion order."""
        await anyio.lowlevel.checkpoint()
        loaded = (
            _codec.decode_or_none(data, self._hmac_key, source=f"memory:{t}/{p}", expect=(t, p))
            for (t, p), data in list(self._data.items())
        )
        return [snapshot for snapshot in loaded if snapshot is not None]

    async def aclose(self) -> None:
        """Nothing to release; the snapshots stay, so the store can be reused after a restart."""
        await anyio.lowlevel.checkpoint()

    def _raw(self) -> dict[tuple[str, str], bytes]:
        """The stored bytes, for tests that corrupt or inspect them."""
        return self._data
