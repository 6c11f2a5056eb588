"""A blocking facade over :class:`~jwks_cache.Registry` for synchronous code (Flask, Django, scripts).

The Registry is async: its refresh loops need an event loop that keeps running between requests.
:class:`SyncRegistry` runs one on a daemon thread (asyncio by default, trio on request) and hands
each call to it through an anyio blocking portal, which is safe from any number of threads: the
portal serialises the calls into the loop, and the exceptions they raise are re-raised, as the
same objects, in the calling thread.

A portal call costs two thread switches (tens of microseconds on an idle machine, hundreds on a
busy one), so :meth:`SyncRegistry.get_key` answers a warm key in the calling thread through
:meth:`Registry.get_key_nowait` (a couple of dict reads, no I/O) and crosses only when the key
is cold; :meth:`SyncRegistry.verify` likewise verifies against fresh cached keys in the calling
thread (:meth:`Registry.verify_nowait`) and crosses only for a token that needs a fetch or a
refresh. Those calls only read what the loop thread swaps whole (a provider's published set), so
they need no lock.

:class:`TokenGuard` makes a ``require_token`` decorator for any framework that can hand over the
``Authorization`` header and turn an RFC 6750 :class:`~jwks_cache.bearer.Challenge` into its own
response.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import logging
import math
import threading
import weakref
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from types import TracebackType
from typing import Any, Final, Generic, ParamSpec, Self, TypeVar

import anyio
from anyio.from_thread import BlockingPortal

from jwks_cache import (
    ConfigError,
    KeyNotFoundError,
    ProviderConfig,
    ProviderStatus,
    Registry,
    RegistryClosedError,
    StoreStatus,
)
from jwks_cache.bearer import REFUSALS, Challenge, Refused, bearer_token, challenge_for, check_grants

__all__ = ["SyncRegistry", "TokenGuard"]

_T = TypeVar("_T")
_P = ParamSpec("_P")
_R = TypeVar("_R")
_Response = TypeVar("_Response")

_BACKENDS: Final = ("asyncio", "trio")
#: how long close() waits for the loop thread after the registry's exit (its flush is bounded at 5 s)
_JOIN_TIMEOUT: Final = 30.0
_log = logging.getLogger("jwks_cache.sync")


class _LoopThread:
    """The event-loop thread, its portal and the open Registry.

    Kept apart from :class:`SyncRegistry` so that the weakref finalizer, which closes it at
    garbage collection or interpreter exit, holds no reference to the facade itself.
    """

    def __init__(self, backend: str, backend_options: dict[str, Any] | None, registry_kwargs: dict[str, Any]) -> None:
        self._backend = backend
        self._backend_options = backend_options
        self._registry_kwargs = registry_kwargs
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._exit_error: BaseException | None = None
        self.portal: BlockingPortal | None = None
        self.registry: Registry | None = None
        self.closed = False

    def start(self) -> None:
        ready: concurrent.futures.Future[tuple[BlockingPortal, Registry]] = concurrent.futures.Future()
        # a daemon thread: a non-daemon one would be joined before atexit runs, so an unclosed
        # facade would hang the interpreter's exit instead of being closed by its finalizer
        self._thread = threading.Thread(target=self._main, args=(ready,), name="jwks-cache-sync", daemon=True)
        self._thread.start()
        try:
            self.portal, self.registry = ready.result()
        except BaseException:
            self.closed = True
            self._thread.join(_JOIN_TIMEOUT)
            raise

    def _main(self, ready: concurrent.futures.Future[tuple[BlockingPortal, Registry]]) -> None:
        try:
            anyio.run(self._serve, ready, backend=self._backend, backend_options=self._backend_options)
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)  # start() raises it in the caller's thread
            else:
                self._exit_error = exc  # close() raises it

    async def _serve(self, ready: concurrent.futures.Future[tuple[BlockingPortal, Registry]]) -> None:
        registry = Registry(**self._registry_kwargs)  # in the loop: its primitives belong to it
        async with registry, BlockingPortal() as portal:
            ready.set_result((portal, registry))
            await portal.sleep_until_stopped()
        # leaving the registry flushed its store; calls still in flight were cancelled by the stop

    def open_parts(self) -> tuple[BlockingPortal, Registry]:
        portal, registry = self.portal, self.registry
        if self.closed or portal is None or registry is None:
            raise RegistryClosedError(
                "the SyncRegistry is not open; use `with SyncRegistry(...) as reg:` or call start() first"
            )
        return portal, registry

    def close(self) -> None:
        """Stop the portal (cancelling calls in flight), leave the registry (flushing its store), join."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            portal, thread = self.portal, self._thread
            if portal is None or thread is None:
                return
            if threading.current_thread() is thread:  # collected on the loop thread: it cannot wait for itself
                threading.Thread(target=self._stop, args=(portal, thread), daemon=True).start()
                return
            self._stop(portal, thread)
            error, self._exit_error = self._exit_error, None
        if error is not None:
            raise error

    def _stop(self, portal: BlockingPortal, thread: threading.Thread) -> None:
        with contextlib.suppress(RuntimeError):  # the loop already ended (its error, if any, close raises)
            portal.call(portal.stop, True)
        thread.join(_JOIN_TIMEOUT)
        if thread.is_alive():
            _log.warning("the SyncRegistry's loop thread did not end within %.0f s", _JOIN_TIMEOUT)


class SyncRegistry:
    """A :class:`~jwks_cache.Registry` for synchronous code, on an event loop of its own thread.

    Use it as ``with SyncRegistry(**registry_kwargs) as reg:``, or call :meth:`start` and
    :meth:`close` where an app factory has no ``with`` (Django's ``AppConfig.ready``, Flask's
    ``create_app``). A facade never closed is closed when it is garbage-collected or at
    interpreter exit, so its store is still flushed. Closing twice is harmless; any call after
    :meth:`close` raises :class:`~jwks_cache.RegistryClosedError`.

    Args:
        backend: ``"asyncio"`` (default) or ``"trio"``: the loop the registry runs on.
        backend_options: passed to ``anyio.run`` (``{"use_uvloop": True}``, ...).
        timeout: default bound, in seconds, on each blocking call (``TimeoutError`` when it runs
            out); None leaves calls bounded only by the registrations' retry deadlines. Each
            call also takes its own ``timeout=``.
        **registry_kwargs: the :class:`~jwks_cache.Registry` arguments (``store=``,
            ``allowed_domains=``, ``ssl_context=``, ...); they are checked by :meth:`start`.
    """

    def __init__(
        self,
        *,
        backend: str = "asyncio",
        backend_options: dict[str, Any] | None = None,
        timeout: float | None = None,
        **registry_kwargs: Any,
    ) -> None:
        if backend not in _BACKENDS:
            raise ConfigError(f"backend: must be one of {', '.join(_BACKENDS)} (got {backend!r})")
        self._timeout = _checked_timeout(timeout)
        self._backend = backend
        self._loop = _LoopThread(backend, backend_options, registry_kwargs)
        self._finalizer: weakref.finalize[..., Any] | None = None
        self._started = False

    @property
    def backend(self) -> str:
        return self._backend

    @property
    def closed(self) -> bool:
        return self._loop.closed

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the loop thread and open the registry; raises what opening it raised (ConfigError, ...).

        Raises:
            RegistryClosedError: already started (a SyncRegistry, as a Registry, opens once).
        """
        if self._started or self._loop.closed:
            raise RegistryClosedError("a SyncRegistry can be started once, and not after close(); make a new one")
        self._started = True
        self._loop.start()
        self._finalizer = weakref.finalize(self, self._loop.close)
        return self

    def close(self) -> None:
        """Cancel calls in flight, close the registry (flushing its store) and end the loop thread.

        Raises what the registry's exit raised, once. Safe to call twice, and from several threads.
        """
        if self._finalizer is not None:
            self._finalizer()
        else:
            self._loop.closed = True

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- calls ----------------------------------------------------------------------------------------

    def _call(self, func: Callable[..., Awaitable[_T]], *args: Any, timeout: float | None, **kwargs: Any) -> _T:
        """``await func(*args, **kwargs)`` on the loop, bounded by ``timeout`` (or the facade's default)."""
        portal, _registry = self._loop.open_parts()
        bound = self._timeout if timeout is None else _checked_timeout(timeout)
        try:
            return portal.call(_bounded, bound, functools.partial(func, *args, **kwargs))
        except concurrent.futures.CancelledError:
            raise RegistryClosedError("the SyncRegistry closed during the call") from None
        except RuntimeError:
            if self._loop.closed:  # the portal stopped between open_parts() and the call
                raise RegistryClosedError("the SyncRegistry is closed") from None
            raise

    def _call_sync(self, func: Callable[..., _T], *args: Any) -> _T:
        """A synchronous Registry method, run on the loop thread (the registry is not thread-safe)."""
        portal, _registry = self._loop.open_parts()
        try:
            return portal.call(functools.partial(func, *args))
        except RuntimeError:
            if self._loop.closed:
                raise RegistryClosedError("the SyncRegistry is closed") from None
            raise

    def run(self, func: Callable[[Registry], Awaitable[_T]], *, timeout: float | None = None) -> _T:
        """Run ``func(registry)`` on the loop: any other Registry coroutine (``refresh``, ``resolve``, ...)."""
        _portal, registry = self._loop.open_parts()
        return self._call(func, registry, timeout=timeout)

    def register(self, config: ProviderConfig, *, timeout: float | None = None) -> None:
        """:meth:`Registry.register`."""
        _portal, registry = self._loop.open_parts()
        self._call(registry.register, config, timeout=timeout)

    def register_many(self, configs: Iterable[ProviderConfig], *, timeout: float | None = None) -> None:
        """:meth:`Registry.register_many` (the iterable is read here, in the calling thread)."""
        _portal, registry = self._loop.open_parts()
        self._call(registry.register_many, list(configs), timeout=timeout)

    def unregister(self, tenant: str, provider: str, *, timeout: float | None = None) -> bool:
        """:meth:`Registry.unregister`."""
        _portal, registry = self._loop.open_parts()
        return self._call(registry.unregister, tenant, provider, timeout=timeout)

    def get_key(
        self, tenant: str, provider: str, kid: str, *, alg: str | None = None, timeout: float | None = None
    ) -> Any:
        """:meth:`Registry.get_key`; a warm key is answered in the calling thread, without a thread switch."""
        _portal, registry = self._loop.open_parts()
        try:
            return registry.get_key_nowait(tenant, provider, kid, alg=alg)
        except KeyNotFoundError:  # cold, expired or unknown: the loop decides (fetch, refresh, or raise)
            return self._call(registry.get_key, tenant, provider, kid, alg=alg, timeout=timeout)

    def verify(
        self,
        token: str | bytes,
        *,
        tenant: str,
        provider: str,
        audience: str | Sequence[str] | None = None,
        issuer: str | Sequence[str] | None = None,
        leeway: float = 0.0,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """:meth:`Registry.verify`: the claims, or its TokenError, KeyNotFoundError or FetchError.

        Answered in the calling thread from fresh cached keys (:meth:`Registry.verify_nowait`);
        only a token that needs a fetch or a refresh crosses into the registry's loop.
        """
        _portal, registry = self._loop.open_parts()
        try:
            return registry.verify_nowait(
                token, tenant=tenant, provider=provider, audience=audience, issuer=issuer, leeway=leeway
            )
        except KeyNotFoundError:  # cold, expired, unknown kid or a key replaced: the loop decides
            pass
        return self._call(
            registry.verify,
            token,
            tenant=tenant,
            provider=provider,
            audience=audience,
            issuer=issuer,
            leeway=leeway,
            timeout=timeout,
        )

    def warm(self, *, max_wait: float = 10.0) -> list[ProviderStatus]:
        """:meth:`Registry.warm`: wait up to ``max_wait`` for every provider's keys; the still-cold statuses."""
        _portal, registry = self._loop.open_parts()
        return self._call(registry.warm, max_wait=max_wait, timeout=None)

    def persist(self, *, timeout: float | None = None) -> None:
        """:meth:`Registry.persist`: save every provider's current set now."""
        _portal, registry = self._loop.open_parts()
        self._call(registry.persist, timeout=timeout)

    def status(self, tenant: str, provider: str) -> ProviderStatus:
        _portal, registry = self._loop.open_parts()
        return self._call_sync(registry.status, tenant, provider)

    def statuses(self) -> list[ProviderStatus]:
        _portal, registry = self._loop.open_parts()
        return self._call_sync(registry.statuses)

    def store_status(self) -> StoreStatus | None:
        _portal, registry = self._loop.open_parts()
        return self._call_sync(registry.store_status)


async def _bounded(seconds: float | None, call: Callable[[], Awaitable[_T]]) -> _T:
    with anyio.fail_after(seconds):  # None: no bound
        return await call()


def _checked_timeout(timeout: float | None) -> float | None:
    if timeout is not None and not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
        raise ConfigError(f"timeout: must be a finite number of seconds > 0, or None (got {timeout!r})")
    return timeout


def _resolve(value: str | Callable[..., str], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    return value(*args, **kwargs) if callable(value) else value


class TokenGuard(Generic[_Response]):
    """Makes ``require_token`` decorators for one framework: how to read the header, answer a
    refusal and hand the claims to the view; every callable gets the view's own arguments.

    Flask::

        guard = TokenGuard(
            lambda: current_app.extensions["jwks_cache"],
            authorization=lambda *args, **kwargs: request.headers.get("Authorization"),
            respond=lambda challenge: (challenge.body, challenge.status, challenge.headers),
            store=lambda claims, *args, **kwargs: setattr(g, "jwt_claims", claims),
        )
        require_token = guard.require_token

    Args:
        registry: the SyncRegistry, or a callable returning it (looked up per request, so the
            app may create it after the views are decorated).
        authorization: the request's ``Authorization`` header, or None.
        respond: the framework's response for a :class:`~jwks_cache.bearer.Challenge`.
        store: where the verified claims go (``flask.g``, ``request``), before the view runs.
        realm: the ``realm`` of the ``WWW-Authenticate`` challenges, if any.
    """

    def __init__(
        self,
        registry: SyncRegistry | Callable[[], SyncRegistry],
        *,
        authorization: Callable[..., str | None],
        respond: Callable[[Challenge], _Response],
        store: Callable[..., None],
        realm: str | None = None,
    ) -> None:
        self._registry = registry
        self._authorization = authorization
        self._respond = respond
        self._store = store
        self._realm = realm

    def _current(self) -> SyncRegistry:
        return self._registry if isinstance(self._registry, SyncRegistry) else self._registry()

    def require_token(
        self,
        *,
        tenant: str | Callable[..., str],
        provider: str | Callable[..., str],
        scopes: Collection[str] = (),
        roles: Collection[str] = (),
        role_claim: str = "roles",
        audience: str | Sequence[str] | None = None,
        issuer: str | Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> Callable[[Callable[_P, _R]], Callable[_P, _R | _Response]]:
        """A decorator: the view runs only for a verified bearer token granting ``scopes`` and ``roles``.

        ``tenant`` and ``provider`` may be callables of the view's arguments (a path parameter).
        A refusal is answered per RFC 6750 (see :mod:`jwks_cache.bearer`): 401 without or with a
        bad token, 403 for a missing scope or role, 503 when the keys are unavailable.
        """
        required_scopes, required_roles = tuple(scopes), tuple(roles)

        def decorate(view: Callable[_P, _R]) -> Callable[_P, _R | _Response]:
            @functools.wraps(view)
            def guarded(*args: _P.args, **kwargs: _P.kwargs) -> _R | _Response:
                try:
                    token = bearer_token(self._authorization(*args, **kwargs))
                    if token is None:
                        return self._respond(challenge_for(None, realm=self._realm))
                    claims = self._current().verify(
                        token,
                        tenant=_resolve(tenant, args, kwargs),
                        provider=_resolve(provider, args, kwargs),
                        audience=audience,
                        issuer=issuer,
                        timeout=timeout,
                    )
                except REFUSALS as exc:
                    return self._respond(challenge_for(exc, realm=self._realm))
                try:
                    check_grants(
                        claims, scopes=required_scopes, roles=required_roles, role_claim=role_claim, realm=self._realm
                    )
                except Refused as refused:
                    return self._respond(refused.challenge)
                self._store(claims, *args, **kwargs)
                return view(*args, **kwargs)

            return guarded

        return decorate
