"""Snapshot stores: where last-known-good key sets survive restarts and are shared by fleets."""

from ._file import FileStore
from ._memory import MemoryStore
from ._protocol import NoticeHandler, SharedStore, SnapshotStore
from ._redis import RedisStore

__all__ = ["FileStore", "MemoryStore", "NoticeHandler", "RedisStore", "SharedStore", "SnapshotStore"]
