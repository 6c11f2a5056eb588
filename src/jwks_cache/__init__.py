"""jwks-cache: identity providers' signing keys, cached, fresh and safe for async services.

Everything public is re-exported here; the modules behind it are private.
"""

from ._clock import Clock, SystemClock
from ._config import ProviderConfig, RetryPolicy
from ._errors import (
    ConfigError,
    FetchError,
    InsufficientScopeError,
    InvalidJwksError,
    JwksCacheError,
    KeyNotFoundError,
    NotRegisteredError,
    RegistryClosedError,
    ResponseTooLargeError,
    SecurityError,
    StoreError,
    TokenError,
    TokenReason,
)
from ._jose._access import require_roles, require_scopes, roles_of, scopes_of
from ._models import KeyInfo, ProviderState, ProviderStatus, RuntimeStats, ServedJwks, Snapshot, StoreStatus
from ._runtime._registry import Registry
from ._stores import FileStore, MemoryStore, SharedStore, SnapshotStore
from ._version import __version__

__all__ = [
    "Clock",
    "ConfigError",
    "FetchError",
    "FileStore",
    "InsufficientScopeError",
    "InvalidJwksError",
    "JwksCacheError",
    "KeyInfo",
    "KeyNotFoundError",
    "MemoryStore",
    "NotRegisteredError",
    "ProviderConfig",
    "ProviderState",
    "ProviderStatus",
    "Registry",
    "RegistryClosedError",
    "ResponseTooLargeError",
    "RetryPolicy",
    "RuntimeStats",
    "SecurityError",
    "ServedJwks",
    "SharedStore",
    "Snapshot",
    "SnapshotStore",
    "StoreError",
    "StoreStatus",
    "SystemClock",
    "TokenError",
    "TokenReason",
    "__version__",
    "require_roles",
    "require_scopes",
    "roles_of",
    "scopes_of",
]
