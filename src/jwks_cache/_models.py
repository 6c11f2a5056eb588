"""Data the library hands out or stores: provider state, status snapshots and persisted snapshots."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import msgspec

__all__ = [
    "SNAPSHOT_VERSION",
    "KeyInfo",
    "ProviderState",
    "ProviderStatus",
    "RuntimeStats",
    "ServedJwks",
    "Snapshot",
    "StoreStatus",
]

#: Bumped when a Snapshot field changes meaning; new optional fields do not bump it.
SNAPSHOT_VERSION = 1


class ProviderState(enum.StrEnum):
    """Where a provider stands; computed on demand from its fields, never stored twice.

    ``EMPTY``: registered, nothing fetched yet. ``LOADING``: first fetch in flight. ``READY``: fresh keys.
    ``REFRESHING``: fresh or stale keys being served while a refresh is in flight. ``STALE``: past expiry,
    still inside ``stale_while_error`` because refreshes fail. ``FAILED``: no usable keys (first fetch
    failed, or the stale window ran out): lookups fail closed.
    """

    EMPTY = "empty"
    LOADING = "loading"
    READY = "ready"
    REFRESHING = "refreshing"
    STALE = "stale"
    FAILED = "failed"


class ProviderStatus(msgspec.Struct, frozen=True, kw_only=True):
    """A point-in-time view of one provider, for dashboards, health checks and the control plane."""

    tenant: str
    provider: str
    state: ProviderState
    jwks_url: str | None
    key_ids: tuple[str, ...]
    last_refresh: datetime | None
    next_refresh: datetime | None
    expires_at: datetime | None
    error_count: int
    last_error: str | None
    hits: int
    misses: int
    stale_serves: int
    refreshes: int
    refresh_errors: int
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    #: refreshes answered 304 Not Modified (counted in ``refreshes`` too)
    revalidations: int = 0
    #: the class of ``last_error``, always one of jwks-cache's own (``"InvalidJwksError"``,
    #: ``"SecurityError"``, ``"FetchError"``, ...): what an alert can match without parsing messages
    last_error_type: str | None = None


class KeyInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One JWK of a fetched document, served or skipped: what ``jwks-cache inspect`` lists.

    Only descriptive members, never key material: a skipped key may be a private one.
    """

    #: the key's position in the document's ``keys`` array
    index: int
    kid: str | None
    kty: str | None
    alg: str | None
    #: RSA modulus bits (``"2048 bits"``), or the curve of an EC or OKP key
    size: str | None
    use: str | None
    served: bool
    #: why the key is skipped (a hygiene rule's reason); None when served
    reason: str | None


class ServedJwks(msgspec.Struct, frozen=True, kw_only=True):
    """A provider's key set as the registry serves it, with its freshness: for JWKS endpoints and dashboards.

    Obtained from :meth:`Registry.served_jwks`, which follows a re-registration to the
    registration in place, exactly as lookups do.
    """

    tenant: str
    provider: str
    #: where the set was fetched (after discovery)
    jwks_url: str
    #: the served keys as a JWK Set of public members only (a copy the caller may change)
    jwks: dict[str, Any]
    #: every key of the fetched document, served or skipped, in document order
    keys: tuple[KeyInfo, ...]
    fetched_at: datetime
    expires_at: datetime
    #: the lifetime in seconds, after clamping to the registration's ``[min_ttl, max_ttl]``
    ttl: float
    #: seconds the set stays fresh on the registry's clock; 0 or less while served from the stale window
    fresh_for: float
    #: the response said ``no-store``: never persisted
    no_store: bool
    etag: str | None
    last_modified: str | None


class StoreStatus(msgspec.Struct, frozen=True, kw_only=True):
    """The registry's snapshot store as its calls find it (``Registry.store_status()``).

    ``degraded`` from the first failed store call until the registry's probe, every few seconds
    (1 s, doubling to 5 s), finds the whole store answering again (for a Redis cluster, every
    master). A degraded store never fails a lookup: the registry serves what it holds
    and fetches from the identity providers itself.
    """

    degraded: bool
    #: failed store calls since the registry opened (loads, saves, leases, publishes, probes)
    errors: int
    #: the latest failure, kept after recovery for the record
    last_error: str | None
    #: when the current degradation began; None while the store works
    degraded_since: datetime | None


class RuntimeStats(msgspec.Struct, frozen=True, kw_only=True):
    """The registry's own machinery at one moment (``Registry.runtime_stats()``), for dashboards and tests.

    Counts across every provider: how much of the upstream request budget
    (``Registry(max_concurrent_fetches=...)``) is in use, and how much of it background refreshes
    hold. Background refreshes take at most ``background_slots``, so a caller's cold lookup
    always finds a slot of its own however many refreshes are due or slow.
    """

    #: upstream requests the registry sends at once (``max_concurrent_fetches``)
    fetch_slots: int
    #: the share of those background refreshes may take, half: also the bound of ``background_refreshes``
    background_slots: int
    #: request slots taken now, by callers' fetches and background refreshes alike
    fetches_in_flight: int
    #: background slots taken now (a refresh still queued for a request slot holds one already)
    background_fetches_in_flight: int
    #: background refreshes started and not yet landed, retries' backoff sleeps included
    background_refreshes: int
    #: the scheduler's pending wake-ups, superseded ones not yet swept included (at most twice the
    #: registrations: re-registering does not pile them up)
    scheduled_wakeups: int


class Snapshot(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A persisted key set: the raw body plus what is needed to trust and revalidate it.

    Unknown fields are ignored and new ones get defaults, so mixed releases can share one store.
    Times are wall-clock epoch seconds (UTC), the only scale that survives a restart. Not tracked
    by the garbage collector (``gc=False``: only strings, bytes and numbers inside), so restoring
    ten thousand of them adds nothing to its passes.
    """

    tenant: str
    provider: str
    jwks_url: str
    body: bytes
    etag: str | None = None
    last_modified: str | None = None
    fetched_at: float = 0.0
    expires_at: float = 0.0
    version: int = SNAPSHOT_VERSION
    #: the registration's OIDC issuer when its keys were fetched: an issuer registration finds its
    #: JWKS URL only by discovery, so the URL alone cannot tell whose keys a snapshot holds
    issuer: str | None = None
    #: a digest of the rules the set was fetched under (``https``, domains, pins, redirects, size and
    #: key limits); a snapshot is restored only under the same rules. Snapshots written by hand may
    #: leave it unset: they are then restored for any registration of their name, issuer and URL
    rules: str | None = None
    #: the response's Cache-Control and Expires lines (lowercased names): a restored set revalidated
    #: by a 304 that omits them keeps them, as a set fetched by this process would (RFC 9111 §4.3.4).
    #: Absent in older snapshots; such a set then takes the lifetime the 304 alone gives
    cache_headers: tuple[tuple[str, str], ...] = ()
