"""The immutable unit a provider swaps atomically: one key set plus its freshness bookkeeping."""

from __future__ import annotations

from .._http._fetch import Headers
from .._jose._jwks import KeyTable

__all__ = ["Published"]


class Published:
    """One usable key set, never mutated: readers take a reference and need no lock.

    Monotonic fields (``expires_mono``, ``stale_until_mono``, ``fetched_mono``) drive decisions; the wall-clock
    ones exist for status, HTTP validators and snapshots, the only things that outlive the process.
    """

    __slots__ = (
        "body",
        "cache_headers",
        "etag",
        "expires_mono",
        "fetched_mono",
        "last_modified",
        "no_store",
        "revalidated",
        "stale_until_mono",
        "table",
        "ttl",
        "url",
        "wall_expires_at",
        "wall_fetched_at",
    )

    def __init__(
        self,
        *,
        table: KeyTable,
        url: str,
        fetched_mono: float,
        ttl: float,
        stale_while_error: float,
        wall_fetched_at: float,
        etag: str | None,
        last_modified: str | None,
        no_store: bool,
        revalidated: bool = False,
        cache_headers: Headers = (),
    ) -> None:
        self.table = table
        self.body = table.body  # the table's own bytes: one copy per distinct document
        self.url = url
        self.fetched_mono = fetched_mono
        self.ttl = ttl
        self.expires_mono = fetched_mono + ttl
        self.stale_until_mono = self.expires_mono + stale_while_error
        self.wall_fetched_at = wall_fetched_at
        self.wall_expires_at = wall_fetched_at + ttl
        self.etag = etag
        self.last_modified = last_modified
        self.no_store = no_store
        self.revalidated = revalidated  # re-dated by a 304, not fetched anew
        # the response's Cache-Control and Expires lines, which a 304 that omits them leaves in force
        self.cache_headers = cache_headers
