"""The Registry: the nursery every provider loop and fetch lives in, and the public lookup surface."""

from __future__ import annotations

import contextlib
import enum
import math
import random
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import anyio
import anyio.lowlevel
import httpx
import msgspec
from anyio.abc import TaskGroup

from .._clock import Clock, SystemClock, move_on_at
from .._config import ProviderConfig
from .._errors import ConfigError, JwksCacheError, KeyNotFoundError, NotRegisteredError, RegistryClosedError, TokenError
from .._http._fetch import DEFAULT_CONCURRENT_FETCHES, MAX_CONCURRENT_FETCHES, Fetcher
from .._http._policy import HopPolicy, check_url, host_allowed
from .._http._transport import guarded_client
from .._jose._jwks import Key, KeySet, TableCache
from .._jose._jws import HeaderCache, parse_jws
from .._models import ProviderStatus, RuntimeStats, ServedJwks, Snapshot, StoreStatus
from .._stores import SnapshotStore
from .._telemetry import MeterProvider, Telemetry, TracerProvider
from ._boundary import run_once, run_supervised
from ._fleet import Fleet, fleet_store
from ._persistence import Persistence
from ._provider import Provider, ProviderHost
from ._published import Published
from ._refresh import Refresher
from ._scheduler import Scheduler
from ._status import provider_status, served_jwks
from ._verify import (
    REPLACED_ROUNDS,
    check_token,
    first_signer,
    issuer_argument,
    on_current,
    settle_signer,
    warm_candidates,
)

__all__ = ["Registry"]


_EXIT_FLUSH_TIMEOUT: Final = 5.0
_ACCEPTED_URLS_CAP: Final = 10_000


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


class Registry(anyio.AsyncContextManagerMixin):
    """Keeps the key sets of many tenants' identity providers fresh inside one task group.

    Use it as ``async with Registry() as reg:``; leaving the block cancels every refresh loop and
    fetch, and no task outlives it. Lookups on warm keys are a dict read and a clock comparison.

    Args:
        require_https: floor for every registration (a registration may not lower it).
        allowed_domains: floor: when non-empty, every registration's hosts must fall inside it.
        allow_private_networks: allow hosts resolving to loopback/private/link-local addresses
            (tests, in-cluster identity providers). Off by default against SSRF.
        default_refresh_early: replaces ``refresh_early`` of registrations that left it at its default.
        default_stale_while_error: likewise for ``stale_while_error``.
        http_client: an ``httpx.AsyncClient`` you own (proxies); redirects are still followed by the
            library hop by hop. Without one the registry makes and closes its own.
        store: a SnapshotStore for warm restarts (see the persistence docs).
        clock: a Clock; tests pass ``jwks_cache.testing.VirtualClock``.
        ssl_context: for the registry's own client: a private CA, or a client certificate. Without
            it the client trusts certifi's bundle, or what ``SSL_CERT_FILE``/``SSL_CERT_DIR`` name
            when set (an unusable one is a ConfigError on entering the registry). Prefer
            it to ``http_client`` whenever a proxy is not needed: the registry's own transport
            checks every DNS answer and the connected address (and pins) before a request is
            sent, which a client you bring can only have checked after its response.
        max_concurrent_fetches: upstream requests sent at once, across providers (2 to 1024).
            Background refreshes use half of them at most, so a caller's cold lookup never queues
            behind refreshes; with thousands of tenants, more slots shorten how long healthy
            tenants' refreshes wait while many identity providers stall.
    """

    def __init__(
        self,
        *,
        require_https: bool = True,
        allowed_domains: Sequence[str] = (),
        allow_private_networks: bool = False,
        default_refresh_early: float | None = None,
        default_stale_while_error: float | None = None,
        http_client: httpx.AsyncClient | None = None,
        store: SnapshotStore | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        meter_provider: MeterProvider | None = None,
        tracer_provider: TracerProvider | None = None,
        max_concurrent_fetches: int = DEFAULT_CONCURRENT_FETCHES,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        _check_arguments(
            require_https=require_https,
            allowed_domains=allowed_domains,
            allow_private_networks=allow_private_networks,
            default_refresh_early=default_refresh_early,
            default_stale_while_error=default_stale_while_error,
            http_client=http_client,
            store=store,
            clock=clock,
            rng=rng,
            ssl_context=ssl_context,
        )
        if ssl_context is not None and http_client is not None:
            raise ConfigError("ssl_context: give it to your http_client; the registry makes a client only without one")
        if type(max_concurrent_fetches) is not int or not 2 <= max_concurrent_fetches <= MAX_CONCURRENT_FETCHES:
            raise ConfigError(
                f"max_concurrent_fetches: must be an integer from 2 to {MAX_CONCURRENT_FETCHES}"
                f" (got {max_concurrent_fetches!r})"
            )
        self._max_fetches = max_concurrent_fetches
        self._require_https = require_https
        self._allowed_domains = tuple(allowed_domains)
        self._allow_private = allow_private_networks
        self._default_refresh_early = default_refresh_early
        self._default_stale = default_stale_while_error
        self._http_client = http_client
        self._ssl_context = ssl_context
        self._store = store
        self._clock: Clock = clock or SystemClock()
        self._monotonic = self._clock.monotonic  # bound once: read on every warm lookup
        self._rng = rng or random.Random()
        self._state = _State.UNOPENED
        self._providers: dict[tuple[str, str], Provider] = {}
        # the same providers by tenant, then provider: the warm path indexes twice instead of
        # building and hashing a (tenant, provider) tuple on every call
        self._tenants: dict[str, dict[str, Provider]] = {}
        self._tg: TaskGroup | None = None
        self._fetcher: Fetcher | None = None
        self._telemetry = Telemetry(meter_provider=meter_provider, tracer_provider=tracer_provider)
        self._persistence: Persistence | None = None
        self._fleet: Fleet | None = None  # fleet mode: a SharedStore configured as shared
        # background refreshes get half of the request slots, so callers' cold lookups never queue
        self._scheduler = Scheduler(self._clock, max_flights=max_concurrent_fetches // 2)
        self._provider_host: ProviderHost | None = None
        self._accepted_urls: set[tuple[str, HopPolicy]] = set()
        self._tables = TableCache()  # identical key sets share one parsed table
        self._header_cache: HeaderCache = {}  # vetted JWS headers by their base64url text
        self._restored: dict[tuple[str, str], Snapshot] = {}
        self._restore_missed = False  # the entry restore failed: run it once the store is back

    # -- lifecycle ---------------------------------------------------------------------------------

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncIterator[Registry]:
        if self._state is not _State.UNOPENED:
            raise RegistryClosedError("a Registry can be entered once; make a new one")
        self._state = _State.OPEN
        own_client = self._http_client is None
        client = self._http_client or guarded_client(verify=self._ssl_context, max_connections=self._max_fetches)
        self._fetcher = fetcher = Fetcher(
            client, self._clock, telemetry=self._telemetry, max_concurrency=self._max_fetches
        )
        self._telemetry.attach(self._providers.values, self._clock)
        attach = getattr(self._clock, "attach_io_probe", None)
        if attach is not None:
            attach(fetcher.busy)
        try:
            async with _unwrap_single(), self._store_context(), anyio.create_task_group() as tg:
                self._tg = tg
                await self._start_supervised("scheduler", self._scheduler.run)
                await self._start_persistence()
                self._provider_host = self._make_host()  # only now: whether the store is shared is known
                try:
                    yield self
                finally:
                    self._scheduler.stop()
                    self._state = _State.CLOSED
                    tg.cancel_scope.cancel()
                    if self._persistence is not None:
                        with anyio.move_on_after(_EXIT_FLUSH_TIMEOUT, shield=True):
                            await self._persistence.flush()
        finally:
            self._telemetry.detach()
            self._providers.clear()
            self._tenants.clear()
            self._tg = None
            detach = getattr(self._clock, "detach_io_probe", None)
            if detach is not None:
                detach(fetcher.busy)
            if own_client:
                with anyio.CancelScope(shield=True):
                    await client.aclose()

    @asynccontextmanager
    async def _store_context(self) -> AsyncIterator[None]:
        """Enter the store outside the task group and leave it after: coredis anchors tasks to its opener."""
        if self._store is None:
            yield
            return
        async with self._store:
            yield

    async def _start_persistence(self) -> None:
        """Restore, then start the persister, the store prober and (fleet mode) the listener.

        Bounded however the store fails: the restore's calls and the listener's first subscription
        each take at most the store's own timeout, and a failure leaves the registry running on
        its own (the store shows as degraded until it answers again).
        """
        if self._store is None:
            return
        self._persistence = persistence = Persistence(self._store, self._clock)
        restored = await persistence.load_all()
        self._restored, self._restore_missed = restored or {}, restored is None
        await self._start_supervised("persister", persistence.run, on_failure=persistence.record_failure)
        await self._start_supervised(
            "store prober", persistence.watch, self._on_store_recovery, on_failure=persistence.record_failure
        )
        shared = fleet_store(self._store)
        if shared is not None:
            self._fleet = fleet = Fleet(persistence, shared, self._clock, self._registered)
            await self._start_supervised(
                "fleet listener", shared.listen, fleet.on_notice, on_failure=persistence.record_failure
            )

    async def _start_supervised(
        self,
        job_name: str,
        job: Callable[..., Awaitable[Any]],
        *args: Any,
        on_failure: Callable[[JwksCacheError], None] = lambda _error: None,
    ) -> None:
        """Start one of the registry's own loops behind the failure boundary (see ``_boundary``).

        A persistence loop's failure shows in :meth:`store_status` (its ``on_failure``); the
        scheduler's only in the log, as it keeps no state but the heap, which a restart keeps.
        """
        assert self._tg is not None
        name = f"jwks-cache {job_name}"
        await self._tg.start(run_supervised, name, self._clock, on_failure, job, *args, name=name)

    async def _on_store_recovery(self) -> None:
        """The store answers again: catch up on the snapshots the failed entry restore could not read."""
        if not self._restore_missed or self._persistence is None or self._state is not _State.OPEN:
            return
        snapshots = await self._persistence.load_all()
        if snapshots is not None:
            self._restore_missed = False
            self._adopt_stored(snapshots, self._persistence)

    def _registered(self, tenant: str, provider: str) -> Provider | None:
        return self._providers.get((tenant, provider))

    def _on_publish(self, provider: Provider, published: Published) -> None:
        if self._persistence is not None and self._fleet is None:  # a fleet shares its sets as it fetches
            self._persistence.mark_dirty(provider, published)

    async def persist(self) -> None:
        """Save every provider's current set now (the registry also saves after each fetch and on exit)."""
        self._check_open()
        if self._persistence is None:
            await anyio.lowlevel.checkpoint()
            return
        for provider in list(self._providers.values()):
            if provider.published is not None:
                self._persistence.mark_dirty(provider, provider.published)
        await self._persistence.flush()  # through the same queue as the persister: no older-over-newer

    async def restore(self) -> None:
        """Load stored sets for registered providers; never replaces a newer in-memory set."""
        self._check_open()
        if self._persistence is None:
            await anyio.lowlevel.checkpoint()
            return
        snapshots = await self._persistence.load_all()
        self._adopt_stored(snapshots or {}, self._persistence)

    def _adopt_stored(self, snapshots: dict[tuple[str, str], Snapshot], persistence: Persistence) -> None:
        for key, snapshot in snapshots.items():
            found = self._providers.get(key)
            if found is not None:
                published = persistence.published_from(found, snapshot)
                if published is not None:
                    found.adopt(published)

    def _make_host(self) -> ProviderHost:
        """The providers' shared context, made once the store (and whether it is shared) is known."""
        return ProviderHost(
            clock=self._clock,
            rng=self._rng,
            spawn=self._spawn_flight,
            scheduler=self._scheduler,
            gone_error=self._gone_error,
            on_publish=self._on_publish,
            fleet=self._fleet,
        )

    def _spawn_flight(
        self, func: Callable[..., Awaitable[Any]], *args: Any, name: str, on_failure: Callable[[JwksCacheError], None]
    ) -> None:
        """Start a fetch in the registry's group, behind the failure boundary (a failure is
        ``on_failure``'s, that provider's, alone); during shutdown that is RegistryClosedError."""
        tg = self._check_open()
        tg.start_soon(run_once, name, on_failure, func, *args, name=name)

    def _closed_error(self) -> JwksCacheError:
        return RegistryClosedError("the Registry is closed")

    def _check_open(self) -> TaskGroup:
        if self._state is not _State.OPEN or self._tg is None:
            raise RegistryClosedError("the Registry is not open; use it inside `async with Registry(...) as reg:`")
        return self._tg

    # -- registrations -------------------------------------------------------------------------------

    async def register(self, config: ProviderConfig) -> None:
        """Add or replace a registration; validates it and starts its refresh loop. No network I/O.

        Re-registering cancels the old loop and keeps the cached keys when the JWKS URL, issuer and
        transport rules are unchanged, cut to the new ``max_ttl`` and stale window.

        Raises:
            ConfigError: the registration violates a registry floor (https, allowed domains).
        """
        self._check_open()
        config = self._apply_defaults(config)
        provider = await self._prepare(config, self._policy_for(config))
        await anyio.lowlevel.checkpoint()
        self._install(provider)

    async def register_many(self, configs: Iterable[ProviderConfig]) -> None:
        """Register a batch (a service's start-up): like ``register`` for each, in order.

        Every registration is judged before any is installed, so a ConfigError leaves the registry
        as it was. The batch has one scheduling point, not one per registration: with ``register``
        in a loop, every call lets the first fetches of those before it run, and a start-up with
        10,000 providers would take as long as 10,000 fetches instead of about half a second. The
        first fetches start once the batch is in.

        Raises:
            ConfigError: a registration violates a registry floor; the message names its tenant,
                provider and field.
        """
        self._check_open()
        checked: list[tuple[ProviderConfig, HopPolicy]] = []
        for given in configs:
            config = self._apply_defaults(given)
            try:
                checked.append((config, self._policy_for(config)))
            except ConfigError as exc:
                raise ConfigError(f"{config.tenant}/{config.provider}: {exc}") from None
        for config, policy in checked:
            self._install(await self._prepare(config, policy))
        await anyio.lowlevel.checkpoint()

    async def _prepare(self, config: ProviderConfig, policy: HopPolicy) -> Provider:
        """A provider for ``config``, holding the keys it may keep or restore; not yet installed."""
        assert self._fetcher is not None
        refresher = Refresher(config, policy, self._fetcher, self._clock, self._rng, self._tables)
        old = self._providers.get(config.key)
        kept = _kept_set(old, config, refresher) if old is not None else None
        assert self._provider_host is not None  # made before the registry opens
        provider = Provider(config, refresher, self._provider_host, published=kept)
        if kept is None and self._persistence is not None:
            await self._restore_one(provider, self._persistence)
        return provider

    def _install(self, provider: Provider) -> None:
        config = provider.config
        replaced = self._providers.get(config.key)  # re-read: another register() may have run meanwhile
        self._providers[config.key] = provider
        self._tenants.setdefault(config.tenant, {})[config.provider] = provider
        if replaced is not None:
            self._close(replaced)
        self._scheduler.schedule(provider)  # the first fetch starts from the scheduler, not from here

    def _close(self, provider: Provider) -> None:
        provider.close()
        if self._fleet is not None:
            self._fleet.forget(provider)  # a lease it kept lapses in the store

    async def _restore_one(self, provider: Provider, persistence: Persistence) -> None:
        """Before the first lookup: a stored set (from the entry restore, else the store) if still usable."""
        snapshot = self._restored.pop(provider.config.key, None)
        if snapshot is None and persistence.degraded:
            return  # one store timeout per registration would stall a start-up; the prober catches up
        published = (
            persistence.published_from(provider, snapshot) if snapshot is not None else await persistence.load(provider)
        )
        if published is not None:
            provider.adopt(published)

    async def unregister(self, tenant: str, provider: str) -> bool:
        """Stop a provider's loop, drop its keys and delete its stored snapshot; False if it was not registered.

        Once it returns, nothing of the provider reaches the store any more: a fetch landing
        meanwhile is discarded, and a save already under way is let finish before the delete.
        """
        self._check_open()
        old = self._providers.pop((tenant, provider), None)
        by_provider = self._tenants.get(tenant)
        if by_provider is not None:
            by_provider.pop(provider, None)
            if not by_provider:
                del self._tenants[tenant]
        if old is None:
            await anyio.lowlevel.checkpoint()
            return False
        self._close(old)  # first: a fetch landing from now on is not kept, so it cannot be saved
        if self._persistence is not None:  # an off-boarded tenant's keys must not come back on restore
            # shielded: a caller that gives up (a control-plane client hanging up) must not leave the
            # snapshot behind; bounded as the exit flush is, against a store that hangs
            with anyio.move_on_after(_EXIT_FLUSH_TIMEOUT, shield=True):
                await self._persistence.delete(tenant, provider)
        await anyio.lowlevel.checkpoint()
        return True

    def _apply_defaults(self, config: ProviderConfig) -> ProviderConfig:
        changes: dict[str, float] = {}
        if self._default_refresh_early is not None and config.refresh_early == 30.0:
            changes["refresh_early"] = self._default_refresh_early
        if self._default_stale is not None and config.stale_while_error == 60.0:
            changes["stale_while_error"] = self._default_stale
        return msgspec.structs.replace(config, **changes) if changes else config

    def _policy_for(self, config: ProviderConfig) -> HopPolicy:
        if self._require_https and not config.require_https:
            raise ConfigError("require_https: the Registry requires https for every registration")
        floor = self._allowed_domains
        if floor:
            for domain in config.allowed_domains:
                if not host_allowed(domain, floor):
                    raise ConfigError(f"allowed_domains: {domain!r} is outside the Registry's allowed_domains")
        policy = HopPolicy(
            require_https=config.require_https,
            allowed_domains=config.allowed_domains or floor,
            allow_private_networks=self._allow_private,
            pinned_spki=config.pinned_spki,
        )
        for field in ("jwks_url", "issuer"):
            url = getattr(config, field)
            if url is not None and (url, policy) not in self._accepted_urls:
                try:
                    check_url(url, policy)
                    httpx.URL(url).host  # noqa: B018 - hosts httpx cannot decode are refused now, not mid-fetch
                except JwksCacheError as exc:
                    raise ConfigError(f"{field}: {exc}") from exc
                except (httpx.InvalidURL, ValueError) as exc:
                    raise ConfigError(f"{field}: not a URL httpx can send ({exc})") from exc
                if len(self._accepted_urls) >= _ACCEPTED_URLS_CAP:
                    self._accepted_urls.clear()
                self._accepted_urls.add((url, policy))  # tenants of one IdP share a URL: judge it once
        return policy

    # -- lookups -------------------------------------------------------------------------------------

    def _provider(self, tenant: str, provider: str) -> Provider:
        try:
            return self._tenants[tenant][provider]
        except KeyError:
            raise self._gone_error(tenant, provider) from None

    def _successor(self, found: Provider) -> Provider | None:
        """The provider that replaced ``found`` (closed by a re-registration), if any."""
        current = self._providers.get(found.config.key) if self._state is _State.OPEN else None
        return current if current is not None and current is not found else None

    def _gone_error(self, tenant: str, provider: str) -> JwksCacheError:
        if self._state is not _State.OPEN:
            return self._closed_error()
        return NotRegisteredError(f"no provider registered as {tenant}/{provider}")

    def get_key_nowait(self, tenant: str, provider: str, kid: str, *, alg: str | None = None) -> Key:
        """The synchronous fast path: a cached key or ``KeyNotFoundError``; never I/O, never waits."""
        # written out here and in get_key on purpose: a shared helper is one more call per lookup,
        # which is a measurable share of a ~300 ns warm path (benchmarks/lookup.py)
        try:
            found = self._tenants[tenant][provider]
        except KeyError:
            raise self._gone_error(tenant, provider) from None
        if alg is None and self._monotonic() < found.warm_until_mono:
            jwk = found.made.get(kid)
            if jwk is not None:  # a key not yet made (or absent) takes the slow path
                found.counts.hits += 1
                return jwk
        return found.lookup_nowait(kid, alg)

    async def get_key(self, tenant: str, provider: str, kid: str, *, alg: str | None = None) -> Key:
        """The public key ``kid`` of a provider, fetching or refreshing (single-flight) when needed.

        Warm keys are answered without a lock, I/O or a scheduling point.

        Raises:
            KeyNotFoundError: the set lacks the kid (after at most one throttled refresh).
            FetchError: no usable key set could be had.
            NotRegisteredError: no provider is registered under these names.
            RegistryClosedError: the registry is not open.
        """
        try:
            found = self._tenants[tenant][provider]
        except KeyError:
            raise self._gone_error(tenant, provider) from None
        if alg is None and self._monotonic() < found.warm_until_mono:
            jwk = found.made.get(kid)
            if jwk is not None:  # a key not yet made (or absent) takes the slow path
                found.counts.hits += 1
                return jwk
        try:  # no wrapper on the first try: every frame here is resumed for each of a stampede's waiters
            return await found.get_key(kid, alg)
        except NotRegisteredError:
            successor = self._successor(found)
            if successor is None:
                raise
        # the first try was ours: the successors get the rest of on_current's tries
        return await on_current(successor, self._successor, Provider.get_key, kid, alg, tries=REPLACED_ROUNDS)

    async def verify(
        self,
        token: str | bytes,
        *,
        tenant: str,
        provider: str,
        audience: str | Sequence[str] | None = None,
        issuer: str | Sequence[str] | None = None,
        leeway: float = 0.0,
    ) -> dict[str, Any]:
        """Verify a compact JWS/JWT against the provider's keys and return its claims.

        The algorithm must be in the provider's allowlist (asymmetric only) and fit the key's type
        and curve, so alg confusion is impossible. ``audience`` defaults to the registration's; a
        token carrying ``aud`` is refused when no audience is expected (RFC 7519 §4.1.3).
        ``issuer`` (one or several, ``{tenantid}`` templates allowed) replaces the registration's
        issuers: its ``issuer``, that issuer's tenant template for a multi-tenant endpoint, and
        ``accepted_issuers``. The registration's ``allowed_tenant_ids``, ``required_claims`` and
        ``claim_values`` always apply, and a key published with its own ``issuer`` verifies only
        that issuer's tokens. A bad signature under a known kid triggers one throttled refresh and
        one retry.

        Raises:
            TokenError: the token failed (``.reason`` says why; never the claims).
            KeyNotFoundError: its kid is not in the set, after the unknown-kid rules.
            FetchError: no usable key set.
        """
        if not (math.isfinite(leeway) and leeway >= 0):
            raise ConfigError(f"leeway must be a finite number >= 0 (got {leeway!r})")
        expected_iss = issuer_argument(issuer) if issuer is not None else None
        found = self._provider(tenant, provider)
        parsed = parse_jws(token, header_cache=self._header_cache)
        # the warm path awaits nothing (as get_key's): a fresh set's keys, tried in this frame
        candidates = warm_candidates(found, parsed, self._monotonic())
        signer = first_signer(parsed, candidates) if candidates else None
        if signer is None:  # no fresh set, an unknown kid, or a key replaced under its kid
            tried = found if candidates else None
            found, settled = await on_current(found, self._successor, settle_signer, parsed, tried)
            signer = settled
        return check_token(
            parsed,
            signer,
            found.config,
            now=self._clock.time(),
            leeway=leeway,
            audience=audience,
            issuer=expected_iss,
        )

    def verify_nowait(
        self,
        token: str | bytes,
        *,
        tenant: str,
        provider: str,
        audience: str | Sequence[str] | None = None,
        issuer: str | Sequence[str] | None = None,
        leeway: float = 0.0,
    ) -> dict[str, Any]:
        """:meth:`verify` from the fresh cached keys only: no I/O, no wait, no scheduling point.

        For synchronous code, and for paths that must not yield: ``jwks_cache.sync`` answers its
        callers' threads with it, and crosses into the registry's loop only when it cannot. Every
        answer it gives is the one :meth:`verify` would give. Where ``verify`` would first fetch or
        refresh (no fresh set, a kid the set lacks, a bad signature under a known kid while the
        provider may still refresh for it), it raises :class:`KeyNotFoundError`: ask ``verify``.

        Raises:
            TokenError: the token failed, as ``verify`` would say.
            KeyNotFoundError: an answer needs a fetch or a refresh.
            NotRegisteredError: no such registration (RegistryClosedError outside the block).
        """
        if not (math.isfinite(leeway) and leeway >= 0):
            raise ConfigError(f"leeway must be a finite number >= 0 (got {leeway!r})")
        expected_iss = issuer_argument(issuer) if issuer is not None else None
        found = self._provider(tenant, provider)
        parsed = parse_jws(token, header_cache=self._header_cache)
        candidates = warm_candidates(found, parsed, self._monotonic())
        if not candidates:
            raise KeyNotFoundError(f"{tenant}/{provider}: no fresh cached key fits this token; verify() would fetch")
        signer = first_signer(parsed, candidates)
        if signer is None:
            if parsed.kid is None or not found.may_refresh_for_kid(self._monotonic()):
                raise TokenError("signature verification failed", reason="bad_signature")
            raise KeyNotFoundError(f"{tenant}/{provider}: the signature fails; verify() would refresh once first")
        return check_token(
            parsed,
            signer,
            found.config,
            now=self._clock.time(),
            leeway=leeway,
            audience=audience,
            issuer=expected_iss,
        )

    async def resolve(self, tenant: str, provider: str) -> KeySet:
        """The provider's current usable key set as a joserfc ``KeySet`` (public members only)."""
        table = await on_current(self._provider(tenant, provider), self._successor, Provider.table)
        return table.key_set()

    @property
    def require_https(self) -> bool:
        """The registry's https floor (``Registry(require_https=...)``): no registration may lower it."""
        return self._require_https

    @property
    def store(self) -> SnapshotStore | None:
        """The snapshot store the registry was given, if any."""
        return self._store

    async def served_jwks(self, tenant: str, provider: str) -> ServedJwks:
        """The key set ``resolve()`` would serve, as a JWK Set of public members, with its freshness and every key's fate.

        For a JWKS endpoint of your own, a dashboard or ``jwks-cache inspect``: fresh or stale keys
        are answered at once, an empty provider fetches (single-flight), and a re-registration in
        the meantime is followed to the registration in place.

        Raises:
            FetchError, SecurityError: no usable key set could be had.
            NotRegisteredError: no provider is registered under these names.
            RegistryClosedError: the registry is not open.
        """
        found, published = await on_current(self._provider(tenant, provider), self._successor, _served_by)
        return served_jwks(found, published, self._clock)

    def registration(self, tenant: str, provider: str) -> ProviderConfig:
        """The registration in force, as the registry holds it (registry defaults applied).

        Raises:
            NotRegisteredError: no provider is registered under these names.
            RegistryClosedError: the registry is not open.
        """
        return self._provider(tenant, provider).config

    def is_registered(self, tenant: str, provider: str) -> bool:
        """Whether a provider is registered as ``tenant/provider`` now (False once the registry is closed)."""
        return self._state is _State.OPEN and (tenant, provider) in self._providers

    def seconds_until_refresh(self, tenant: str, provider: str) -> float:
        """Seconds until the provider's next refresh on the registry's clock; 0 or less: due now.

        What a ``Retry-After`` for a provider without usable keys should say.

        Raises:
            NotRegisteredError: no provider is registered under these names.
            RegistryClosedError: the registry is not open.
        """
        return self._provider(tenant, provider).next_refresh_mono - self._clock.monotonic()

    async def refresh(self, tenant: str, provider: str) -> None:
        """Refresh now (conditional), or join the refresh in progress; raises its error."""
        await on_current(self._provider(tenant, provider), self._successor, Provider.refresh)

    def request_refresh(self, tenant: str, provider: str) -> None:
        """Start a conditional refresh in the registry's task group, or leave the one in flight; returns at once.

        For admin tooling that must not hold a request open for a retry deadline; the outcome shows
        in :meth:`status`.

        Raises:
            NotRegisteredError: no provider is registered under these names.
            RegistryClosedError: the registry is not open.
        """
        # joins the one in flight, if any; in fleet mode a new one asks for a set as new as the call
        self._provider(tenant, provider).start_flight(conditional=True, since=self._clock.time())

    async def warm(self, *, max_wait: float = 10.0) -> list[ProviderStatus]:
        """Wait, at most ``max_wait`` seconds (on the registry's clock), until every registered provider has usable keys.

        For a service's start-up: serve only once the keys are in (restored from the store or
        fetched now), so the first requests never wait on an identity provider, and never wait
        forever for one that is down. Providers without keys are fetched as a cold lookup would
        (single-flight, sharing a refresh already in flight); a provider's failure is not raised.

        Returns:
            The status of each provider still without usable keys: empty when all are warm.
        """
        self._check_open()
        if not (math.isfinite(max_wait) and max_wait >= 0):
            raise ConfigError(f"max_wait must be a finite number >= 0 (got {max_wait!r})")
        with move_on_at(self._clock, self._clock.monotonic() + max_wait):
            async with anyio.create_task_group() as tg:
                for found in list(self._providers.values()):
                    if not self._usable(found):
                        tg.start_soon(_warm_one, found)
        return [provider_status(p, self._clock) for p in self._providers.values() if not self._usable(p)]

    def _usable(self, found: Provider) -> bool:
        pub = found.published
        return pub is not None and self._monotonic() < pub.stale_until_mono

    def status(self, tenant: str, provider: str) -> ProviderStatus:
        return provider_status(self._provider(tenant, provider), self._clock)

    def statuses(self) -> list[ProviderStatus]:
        self._check_open()
        return [provider_status(p, self._clock) for p in self._providers.values()]

    def store_status(self) -> StoreStatus | None:
        """How the snapshot store is doing (``degraded`` while its calls fail); None without a store.

        A degraded store never fails a lookup; see the persistence docs for what the registry does.
        """
        self._check_open()
        return self._persistence.status() if self._persistence is not None else None

    def runtime_stats(self) -> RuntimeStats:
        """The request slots and background refreshes of the whole registry, read at once.

        For a dashboard beside ``statuses()``: a ``background_refreshes`` at its bound
        ``background_slots`` for long means refreshes are queueing behind slow identity providers.
        """
        self._check_open()
        assert self._fetcher is not None  # made on entry, before the registry is open
        slots = self._fetcher.slots()
        return RuntimeStats(
            fetch_slots=slots.total,
            background_slots=slots.background,
            fetches_in_flight=slots.taken,
            background_fetches_in_flight=slots.background_taken,
            background_refreshes=self._scheduler.flights,
            scheduled_wakeups=self._scheduler.entries,
        )


async def _served_by(found: Provider) -> tuple[Provider, Published]:
    return found, await found.served()


def _kept_set(old: Provider, config: ProviderConfig, refresher: Refresher) -> Published | None:
    """The set a re-registration keeps: only one fetched from the same source under the same rules,
    re-dated to the new registration's freshness bounds (a tighter ``max_ttl`` or stale window
    applies now, not after a refresh the old, longer lifetime put off)."""
    published, before = old.published, old.config
    if published is None or (before.jwks_url, before.issuer) != (config.jwks_url, config.issuer):
        return None
    if old.refresher.rules != refresher.rules:
        return None  # fetched under other rules (https, domains, pins, limits): fetch again
    ttl = min(published.ttl, config.max_ttl)
    if ttl == published.ttl and config.stale_while_error == before.stale_while_error:
        return published
    return Published(
        table=published.table,
        url=published.url,
        fetched_mono=published.fetched_mono,
        ttl=ttl,
        stale_while_error=config.stale_while_error,
        wall_fetched_at=published.wall_fetched_at,
        etag=published.etag,
        last_modified=published.last_modified,
        no_store=published.no_store,
        revalidated=published.revalidated,
        cache_headers=published.cache_headers,  # what a later 304 without Cache-Control keeps
    )


async def _warm_one(found: Provider) -> None:
    with contextlib.suppress(JwksCacheError):  # shows in its status; warm() reports who stayed cold
        await found.table()


def _check_arguments(**arguments: object) -> None:
    """Refuse a mistyped constructor argument now, by name, not as an AttributeError inside a refresh.

    Type annotations bind no caller at run time; a registry is built once, so checking costs nothing.
    """
    for name, value in arguments.items():
        accepts, expected = _ARGUMENT_RULES[name]
        if not accepts(value):
            raise ConfigError(f"{name}: must be {expected} (got {value!r})")


def _optional(kind: type | tuple[type, ...]) -> Callable[[object], bool]:
    return lambda value: value is None or isinstance(value, kind)


def _is_flag(value: object) -> bool:
    return isinstance(value, bool)


def _is_duration_or_none(value: object) -> bool:
    if value is None:
        return True
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _are_names(value: object) -> bool:
    """A collection of str; not one str (a collection of one-letter names), nor an iterator checking would use up."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Collection):
        return False
    return all(isinstance(each, str) for each in value)


_ARGUMENT_RULES: Final[dict[str, tuple[Callable[[object], bool], str]]] = {
    "require_https": (_is_flag, "True or False"),
    "allow_private_networks": (_is_flag, "True or False"),
    "allowed_domains": (_are_names, "a sequence of str (not one str)"),
    "default_refresh_early": (_is_duration_or_none, "a finite number >= 0 or None"),
    "default_stale_while_error": (_is_duration_or_none, "a finite number >= 0 or None"),
    "http_client": (_optional(httpx.AsyncClient), "an httpx.AsyncClient or None"),
    "store": (_optional(SnapshotStore), "a SnapshotStore or None"),
    "clock": (_optional(Clock), "a Clock (monotonic(), time(), async sleep_until()) or None"),
    "rng": (_optional(random.Random), "a random.Random or None"),
    "ssl_context": (_optional(ssl.SSLContext), "an ssl.SSLContext or None"),
}


@asynccontextmanager
async def _unwrap_single() -> AsyncIterator[None]:
    """Let a lone exception out of the task group as itself, as trio-websocket does."""
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:  # one level only: a caller's own ExceptionGroup stays one
            inner = group.exceptions[0]
            raise inner from inner.__cause__
        raise
