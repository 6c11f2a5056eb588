"""``jwks-cache serve``: the control plane over a Registry configured from a TOML file, under hypercorn.

The server runs inside the Registry's ``async with``: the registry is opened first and closed last,
so no request meets a closed registry and no provider loop outlives the server.
The first SIGINT or SIGTERM asks hypercorn for a graceful shutdown (in-flight requests finish,
within hypercorn's ``graceful_timeout``); the signal handlers are removed at that moment, so a
second Ctrl+C interrupts at once if shutdown ever hangs.

The configuration file::

    [registry]                       # optional; the Registry's floors
    require_https = true             # also the default of each provider's require_https
    allowed_domains = ["example.com"]
    allow_private_networks = false
    max_concurrent_fetches = 32      # upstream requests at once; raise for thousands of tenants
    ca_file = "private-ca.pem"       # trust only these CA certificates (PEM), relative to this file;
                                     # without it: SSL_CERT_FILE/SSL_CERT_DIR when set, else certifi

    [store]                          # optional; snapshots survive restarts
    file = "snapshots"               # a directory, relative to the configuration file

    [control_plane]                  # optional
    protect_reads = true             # reads need the admin token (the default); false: open to anyone

    [[providers]]                    # any number; ProviderConfig fields
    tenant = "acme"
    provider = "okta"
    issuer = "https://acme.okta.com"
"""

from __future__ import annotations

import signal
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar

import anyio
import msgspec

from .._asgi._app import ASGIApp, create_app
from .._asgi._fields import registration_defaults
from .._config import _HOST_RE, ProviderConfig, decode_config
from .._errors import ConfigError
from .._http._fetch import DEFAULT_CONCURRENT_FETCHES, MAX_CONCURRENT_FETCHES
from .._http._transport import ca_file_context
from .._jose._nesting import toml_problem
from .._runtime._registry import Registry
from .._stores import FileStore, SnapshotStore

__all__ = [
    "ControlPlaneOptions",
    "RegistryOptions",
    "ServeConfig",
    "StoreOptions",
    "load_serve_config",
    "open_registry",
    "serve",
    "with_ca_file",
]

Backend = Literal["asyncio", "trio"]
_SHUTDOWN_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)
_T = TypeVar("_T")


class RegistryOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The ``[registry]`` table: the keyword arguments of :class:`Registry` a file can set."""

    require_https: bool = True
    allowed_domains: tuple[str, ...] = ()
    allow_private_networks: bool = False
    max_concurrent_fetches: Annotated[int, msgspec.Meta(ge=2, le=MAX_CONCURRENT_FETCHES)] = DEFAULT_CONCURRENT_FETCHES
    #: a PEM file of CA certificates trusted instead of the default; :func:`load_serve_config`
    #: resolves it against the file's folder and checks that it loads
    ca_file: str | None = None


class StoreOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The ``[store]`` table; ``file`` is a directory for a :class:`FileStore`."""

    file: str


class ControlPlaneOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The ``[control_plane]`` table: the settings of :func:`jwks_cache.asgi.create_app` a file can set."""

    #: reads (status, JWKS) need the admin token; ``false`` serves them to anyone, as a deployment
    #: without ``--admin-token-env`` must choose explicitly
    protect_reads: bool = True


class ServeConfig(msgspec.Struct, frozen=True, kw_only=True):
    """A whole configuration file, validated: nothing here can fail at registration but a floor."""

    registry: RegistryOptions
    store: StoreOptions | None
    providers: tuple[ProviderConfig, ...]
    path: Path  # the file: errors name it, and a relative store directory is resolved against its folder
    control_plane: ControlPlaneOptions = ControlPlaneOptions()


class _FileLayout(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    registry: dict[str, Any] = msgspec.field(default_factory=dict)
    store: dict[str, Any] | None = None
    control_plane: dict[str, Any] = msgspec.field(default_factory=dict)
    providers: list[dict[str, Any]] = msgspec.field(default_factory=list)


def load_serve_config(path: str | Path) -> ServeConfig:
    """Read and validate a ``serve`` configuration file.

    Every error is one :class:`ConfigError` line naming the file and the table or field at fault,
    because operators read it in a deploy log.

    Raises:
        ConfigError: the file is unreadable, not TOML, or a value is invalid.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    problem = toml_problem(raw)  # tomllib recurses into inline arrays and tables
    if problem is not None:
        raise ConfigError(f"{path}: not valid TOML: it {problem}")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    layout = _convert(path, "top level", data, _FileLayout)
    registry = _convert(path, "[registry]", layout.registry, RegistryOptions)
    for domain in registry.allowed_domains:
        if _HOST_RE.fullmatch(domain) is None:
            raise ConfigError(
                f"{path}: [registry]: allowed_domains entries must be canonical hostnames (got {domain!r})"
            )
    if registry.ca_file is not None:
        registry = _with_ca_file(registry, path.parent / registry.ca_file, setting=f"{path}: [registry] ca_file")
    store = None if layout.store is None else _convert(path, "[store]", layout.store, StoreOptions)
    control_plane = _convert(path, "[control_plane]", layout.control_plane, ControlPlaneOptions)
    providers: list[ProviderConfig] = []
    seen: set[tuple[str, str]] = set()
    for index, table in enumerate(layout.providers):
        where = f"providers[{index}]"
        # The registry's https policy is the natural default; a file says it once, not per provider
        # (and a PUT to the control plane gets the very same defaults).
        try:
            defaults = registration_defaults(require_https=registry.require_https)
            config = decode_config({**defaults, **table}, ProviderConfig)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {where}: {exc}") from exc
        if config.key in seen:
            raise ConfigError(f"{path}: {where}: duplicate tenant/provider {config.tenant}/{config.provider}")
        seen.add(config.key)
        providers.append(config)
    return ServeConfig(
        registry=registry, store=store, providers=tuple(providers), path=path, control_plane=control_plane
    )


def with_ca_file(config: ServeConfig, ca_file: str | Path, *, setting: str) -> ServeConfig:
    """``config`` with another CA file (``serve --cacert``), relative to the working directory.

    Raises:
        ConfigError: the file cannot be read or holds no certificate; the message names ``setting``.
    """
    return msgspec.structs.replace(config, registry=_with_ca_file(config.registry, Path(ca_file), setting=setting))


def _with_ca_file(registry: RegistryOptions, ca_file: Path, *, setting: str) -> RegistryOptions:
    # an absolute path, checked now: a bad CA file is a startup error, not a failure of every fetch
    ca_file = ca_file.absolute()
    ca_file_context(ca_file, setting=setting)
    return msgspec.structs.replace(registry, ca_file=str(ca_file))


def _convert(path: Path, where: str, data: Any, kind: type[_T]) -> _T:
    try:
        return msgspec.convert(data, type=kind)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path}: {where}: {exc}") from exc


def open_registry(config: ServeConfig) -> Registry:
    """The Registry the file describes (not yet entered)."""
    store: SnapshotStore | None = None
    if config.store is not None:
        store = FileStore(config.path.parent / config.store.file)
    options = config.registry
    return Registry(
        require_https=options.require_https,
        allowed_domains=options.allowed_domains,
        allow_private_networks=options.allow_private_networks,
        store=store,
        max_concurrent_fetches=options.max_concurrent_fetches,
        ssl_context=None if options.ca_file is None else ca_file_context(options.ca_file, setting="ca_file"),
    )


async def serve(
    config: ServeConfig,
    *,
    host: str,
    port: int,
    backend: Backend,
    admin_token: str | None = None,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Serve the control plane until SIGINT or SIGTERM, then shut down gracefully.

    Args:
        config: the validated configuration file.
        host: the address to listen on; ``port`` 0 picks a free port (hypercorn logs it).
        backend: the event loop this coroutine runs on; it picks hypercorn's matching worker.
        admin_token: enables the mutating routes (see :func:`jwks_cache.asgi.create_app`).
        on_ready: called with the number of registered providers before the server starts.

    Raises:
        ConfigError: a registration breaks a registry floor, the admin token is malformed, or reads
            are protected without one.
    """
    protect_reads = config.control_plane.protect_reads
    if protect_reads and admin_token is None:  # said before anything starts, in the file's terms
        raise ConfigError(
            f"{config.path}: [control_plane] protect_reads: reads need the admin token (the default); "
            "pass --admin-token-env, or set protect_reads = false to serve them to anyone"
        )
    async with open_registry(config) as reg:
        for index, provider in enumerate(config.providers):
            try:
                await reg.register(provider)
            except ConfigError as exc:
                raise ConfigError(f"{config.path}: providers[{index}]: {exc}") from exc
        app = create_app(reg, admin_token=admin_token, protect_reads=protect_reads)
        if on_ready is not None:
            on_ready(len(config.providers))
        await _run_hypercorn(app, host=host, port=port, backend=backend)


async def _run_hypercorn(app: ASGIApp, *, host: str, port: int, backend: Backend) -> None:
    from hypercorn.config import Config  # the [server] extra: imported only when serving

    server = Config()
    server.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    serve_app: Callable[..., Awaitable[None]]
    if backend == "trio":
        from hypercorn.trio import serve as serve_app
    else:
        from hypercorn.asyncio import serve as serve_app

    # A task of its own: on Python 3.11, asyncio.TaskGroup (inside hypercorn) can leave a spent
    # cancel request on its host task, which the Registry's cancel scope would then take as an
    # outer cancellation at exit; here it dies with this short-lived task.
    async def run() -> None:
        await serve_app(app, server, shutdown_trigger=_until_shutdown_signal)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
    except BaseExceptionGroup as group:
        # cannot listen (port taken, address not ours): hypercorn's own task group and ours wrap
        # the OSError; the command reports it in one line, not as a traceback of two groups
        cannot_listen, rest = group.split(OSError)
        if cannot_listen is None or rest is not None:
            raise
        raise _first_leaf(cannot_listen) from None


def _first_leaf(group: BaseExceptionGroup[OSError]) -> OSError:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


async def _until_shutdown_signal() -> None:
    # Leaving the receiver restores the default handlers: a second Ctrl+C is not swallowed.
    with anyio.open_signal_receiver(*_SHUTDOWN_SIGNALS) as signals:
        async for _ in signals:
            return
