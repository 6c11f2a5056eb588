"""What one refresh of one provider does: discovery, a conditional fetch with retries, parsing.

Kept apart from the provider's state machine so the order of checks reads top to bottom and the
provider only decides *when* and *for whom* to refresh.
"""

from __future__ import annotations

import hashlib
import random
from typing import Final

import msgspec

from .._clock import Clock
from .._config import ProviderConfig
from .._errors import FetchError, InvalidJwksError, SecurityError
from .._http._fetch import Fetcher, FetchResult
from .._http._freshness import compute_freshness, conditional_headers, kept_for_revalidation, merge_not_modified
from .._http._policy import HopPolicy, check_url
from .._http._retry import with_retries
from .._issuers import discovery_accepts
from .._jose._jwks import TableCache
from .._jose._nesting import json_problem
from .._telemetry import log_skipped_keys
from ._published import Published

__all__ = ["Refresher", "parse_discovery"]

_DISCOVERY_PATH: Final = "/.well-known/openid-configuration"
_DISCOVERY_MAX_BYTES: Final = 256 * 1024


class _DiscoveryDocument(msgspec.Struct):
    issuer: str
    jwks_uri: str


def parse_discovery(body: bytes, *, url: str) -> _DiscoveryDocument:
    """The two members of an OpenID Provider Metadata document we use.

    Raises:
        InvalidJwksError: not JSON, nested too deep, or without string ``issuer`` and ``jwks_uri``.
    """
    problem = json_problem(body)  # members we skip are decoded (recursively) all the same
    if problem is not None:
        raise InvalidJwksError(f"{url}: discovery document {problem}", url=url)
    try:
        return msgspec.json.decode(body, type=_DiscoveryDocument)
    except msgspec.ValidationError as exc:
        raise InvalidJwksError(f"{url}: discovery document: {exc}", url=url) from exc
    except msgspec.DecodeError as exc:
        raise InvalidJwksError(f"{url}: discovery document is not JSON: {exc}", url=url) from exc


class _Discovered:
    __slots__ = ("expires_mono", "jwks_uri")

    def __init__(self, jwks_uri: str, expires_mono: float) -> None:
        self.jwks_uri = jwks_uri
        self.expires_mono = expires_mono


def _stored_headers(current: Published) -> tuple[tuple[str, str], ...]:
    """What the cache holds of the response a 304 answers: its caching lines and validators."""
    validators = (("etag", current.etag), ("last-modified", current.last_modified))
    return (*current.cache_headers, *((name, value) for name, value in validators if value is not None))


class Refresher:
    """Fetches one provider's key set under its policy; holds only the discovery cache."""

    def __init__(
        self,
        config: ProviderConfig,
        policy: HopPolicy,
        fetcher: Fetcher,
        clock: Clock,
        rng: random.Random,
        tables: TableCache | None = None,
    ) -> None:
        self._config = config
        self._tables = tables or TableCache()
        self._policy = policy
        self._fetcher = fetcher
        self._clock = clock
        self._rng = rng
        self._discovered: _Discovered | None = None
        self._rules: str | None = None
        self.retries = 0  # cumulative retried attempts, for status and telemetry

    @property
    def tables(self) -> TableCache:
        """Where parsed key sets are shared (one per Registry)."""
        return self._tables

    @property
    def policy(self) -> HopPolicy:
        """The transport policy every hop of this provider is checked against."""
        return self._policy

    @property
    def rules(self) -> str:
        """A digest of every rule a fetched set is judged under: the transport (the registry's own
        and how it verifies TLS, or a client the caller brought), https, domains, pins, private
        networks, redirects, size and key limits.

        Snapshots carry it, so keys fetched under other rules (a pin since removed, a wider
        allowlist, a laxer client) are neither restored nor kept by a re-registration: none of
        those rules can be judged again from the stored document alone. Sets of names are sorted,
        so a reordered allowlist is the same rule.
        """
        if self._rules is None:
            cfg, policy = self._config, self._policy
            judged = (
                self._fetcher.transport_rules,
                policy.require_https,
                sorted(set(policy.allowed_domains)),
                policy.allow_private_networks,
                sorted(set(policy.pinned_spki)),
                cfg.max_redirects,
                cfg.max_response_bytes,
                cfg.max_keys,
            )
            self._rules = hashlib.sha256(msgspec.json.encode(judged)).hexdigest()[:32]
        return self._rules

    @property
    def jwks_url(self) -> str | None:
        """The JWKS URL in use: configured, or the last one discovery gave."""
        if self._config.jwks_url is not None:
            return self._config.jwks_url
        return self._discovered.jwks_uri if self._discovered is not None else None

    async def fetch(self, current: Published | None, *, conditional: bool, background: bool = False) -> Published:
        """Return a new Published (200), or ``current`` re-dated (304). Raises FetchError/SecurityError.

        ``background`` fetches (the scheduler's) use the fetcher's smaller pool of request slots.
        """
        with self._fetcher.telemetry.refresh_span(self, self._config, self._clock) as span:
            published = await self._fetch_set(current, conditional=conditional, background=background)
            if published.revalidated:
                span.outcome = "304"
            return published

    async def _fetch_set(self, current: Published | None, *, conditional: bool, background: bool) -> Published:
        url = await self._resolve_jwks_url(background)
        extra: dict[str, str] = {}
        if conditional and current is not None and current.url == url:
            extra = conditional_headers(current.etag, current.last_modified)
        result = await self._get(url, extra, self._config.max_response_bytes, background)
        cfg = self._config
        headers = result.headers
        if result.status == 304:
            if current is None or not extra:
                raise FetchError(f"GET {url}: 304 Not Modified to an unconditional request", url=url, status=304)
            # RFC 9111 §4.3.4: the 304 updates the stored response's headers; freshness is theirs
            headers = merge_not_modified(_stored_headers(current), headers)
        fresh = compute_freshness(headers, now=result.received_at, min_ttl=cfg.min_ttl, max_ttl=cfg.max_ttl)
        if result.status == 304:
            assert current is not None
            # the same keys; a malformed new validator does not erase a good stored one
            table, url = current.table, current.url
            etag, last_modified = fresh.etag or current.etag, fresh.last_modified or current.last_modified
        else:
            assert result.body is not None
            table = self._tables.parse(result.body, url=url, max_keys=cfg.max_keys)
            if table.skipped and (current is None or current.table is not table):
                log_skipped_keys(cfg, url, table.skipped)  # once per new set, not on every refetch of it
            etag, last_modified = fresh.etag, fresh.last_modified
        return Published(
            table=table,
            url=url,
            fetched_mono=self._clock.monotonic(),
            ttl=fresh.ttl,
            stale_while_error=cfg.stale_while_error,
            wall_fetched_at=result.received_at,
            etag=etag,
            last_modified=last_modified,
            no_store=fresh.no_store,
            revalidated=result.status == 304,
            cache_headers=kept_for_revalidation(headers),
        )

    async def _get(self, url: str, extra: dict[str, str], max_bytes: int, background: bool) -> FetchResult:
        cfg = self._config

        def on_retry(_attempt: int, _exc: BaseException) -> None:
            self.retries += 1

        async def attempt() -> FetchResult:
            return await self._fetcher.get(
                url,
                policy=self._policy,
                max_redirects=cfg.max_redirects,
                max_bytes=max_bytes,
                attempt_timeout=cfg.retry.attempt_timeout,
                headers=extra,
                background=background,
            )

        return await with_retries(
            attempt, policy=cfg.retry, clock=self._clock, rng=self._rng, url=url, on_retry=on_retry
        )

    async def _resolve_jwks_url(self, background: bool) -> str:
        """OIDC Discovery 1.0 §4.3: the configured issuer must equal the document's, byte for byte.

        One exception, for multi-tenant endpoints (Entra ID's ``common``, ``organizations`` and
        ``consumers``): their documents name a template, the configured issuer with that path
        segment replaced by ``{tenantid}`` and every other byte equal. Tokens are then checked
        against the template filled with their ``tid`` (see :mod:`._issuers`).
        """
        if self._config.jwks_url is not None:
            return self._config.jwks_url
        found = self._discovered
        if found is not None and self._clock.monotonic() < found.expires_mono:
            return found.jwks_uri
        issuer = self._config.issuer
        assert issuer is not None
        url = issuer.rstrip("/") + _DISCOVERY_PATH
        result = await self._get(url, {}, _DISCOVERY_MAX_BYTES, background)
        if result.status != 200 or result.body is None:
            raise FetchError(f"GET {url}: unexpected HTTP {result.status} for discovery", url=url, status=result.status)
        doc = parse_discovery(result.body, url=url)
        if not discovery_accepts(issuer, doc.issuer):
            raise SecurityError(
                f"{url}: discovery issuer {doc.issuer[:200]!r} does not match the configured issuer {issuer!r}",
                url=url,
            )
        check_url(doc.jwks_uri, self._policy)
        cfg = self._config
        fresh = compute_freshness(result.headers, now=result.received_at, min_ttl=cfg.min_ttl, max_ttl=cfg.max_ttl)
        self._discovered = _Discovered(doc.jwks_uri, self._clock.monotonic() + fresh.ttl)
        return doc.jwks_uri
