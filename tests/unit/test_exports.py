"""The public names, pinned: adding or dropping one is a visible decision (trio's ``test_exports``)."""

from __future__ import annotations

import importlib

import pytest

PUBLIC = {
    "jwks_cache": [
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
    ],
    "jwks_cache.asgi": ["create_app"],
    "jwks_cache.redis": ["RedisStore"],
    "jwks_cache.bearer": [
        "REFUSALS",
        "STATE_KEY",
        "Challenge",
        "Connection",
        "MalformedAuthorizationError",
        "Refused",
        "Selector",
        "bearer_token",
        "challenge_for",
        "check_grants",
        "header",
        "open_registry",
        "path_param",
        "select",
        "verify_authorization",
    ],
    "jwks_cache.config_file": ["ProvidersFile", "load_providers"],
    "jwks_cache.fastapi": [
        "STATE_KEY",
        "BearerToken",
        "header",
        "lifespan",
        "open_registry",
        "path_param",
        "registry_of",
    ],
    "jwks_cache.litestar": [
        "PROVIDER_OPT",
        "TENANT_OPT",
        "JwksAuth",
        "JwksAuthenticationMiddleware",
        "header",
        "path_param",
        "requires_roles",
        "requires_scopes",
    ],
    "jwks_cache.quart": ["JwksCache", "current_claims", "require_token"],
    "jwks_cache.starlette": [
        "STATE_KEY",
        "BearerAuthenticationError",
        "BearerBackend",
        "TokenUser",
        "header",
        "lifespan",
        "on_auth_error",
        "open_registry",
        "path_param",
        "registry_of",
        "verify_request",
    ],
    "jwks_cache.sync": ["SyncRegistry", "TokenGuard"],
    "jwks_cache.testing": [
        "SUPPORTED_ALGORITHMS",
        "KeyRing",
        "LocalIdentityProvider",
        "RecordedRequest",
        "VirtualClock",
    ],
}


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_module_exports_exactly_its_names(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__all__ == PUBLIC[name]
    for member in module.__all__:
        assert getattr(module, member) is not None, f"{name}.{member}"
