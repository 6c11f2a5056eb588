"""OpenTelemetry metrics and spans, and the library's log lines: the only opentelemetry import.

One choke point per event (httpcore's ``_trace.py``): the runtime calls in here and never touches
otel or a log format itself. Lookups stay a dict read and an int increment: the counters are the
providers' plain ints, read by observable instruments only when a reader collects. Without an SDK,
opentelemetry-api is a no-op and so is everything here.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Final, Protocol, Self
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Histogram, Meter, MeterProvider, Observation
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, TracerProvider

from ._clock import Clock
from ._config import ProviderConfig
from ._errors import FetchError
from ._jose._jwks import SkippedKey
from ._version import __version__

__all__ = [
    "FetchSpan",
    "MeterProvider",
    "RefreshSpan",
    "Telemetry",
    "TracerProvider",
    "log_refresh_failed",
    "log_skipped_keys",
    "log_stale_ended",
    "log_stale_started",
]

log = logging.getLogger("jwks_cache")

_SCOPE: Final = "jwks_cache"
# seconds; the SDK's default buckets are milliseconds-sized (semconv http.client.request.duration)
_DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
_KID_SHOWN: Final = 64  # kids come from the IdP's document: bound what reaches a log line


class _Dated(Protocol):
    @property
    def fetched_mono(self) -> float: ...


class _Counts(Protocol):
    hits: int
    misses: int
    stale_serves: int
    refreshes: int
    refresh_errors: int
    not_modified: int
    unknown_kid_rejections: int


class Observed(Protocol):
    """What the metrics read from a provider (``Provider`` satisfies it; no import cycle)."""

    config: ProviderConfig

    @property
    def counts(self) -> _Counts: ...

    @property
    def published(self) -> _Dated | None: ...


class _RefreshSource(Protocol):
    @property
    def jwks_url(self) -> str | None: ...
    @property
    def retries(self) -> int: ...


_COUNTERS: Final[tuple[tuple[str, str, str, Callable[[Observed], int]], ...]] = (
    ("jwks_cache.requests", "{lookup}", "Key lookups (hits + misses).", lambda p: p.counts.hits + p.counts.misses),
    ("jwks_cache.hits", "{lookup}", "Lookups answered from the key set.", lambda p: p.counts.hits),
    ("jwks_cache.misses", "{lookup}", "Lookups that found no usable key.", lambda p: p.counts.misses),
    ("jwks_cache.stale_serves", "{lookup}", "Lookups answered past expiry.", lambda p: p.counts.stale_serves),
    ("jwks_cache.refreshes", "{refresh}", "Successful refreshes (200 or 304).", lambda p: p.counts.refreshes),
    ("jwks_cache.refresh_errors", "{refresh}", "Failed refreshes.", lambda p: p.counts.refresh_errors),
    ("jwks_cache.revalidations_not_modified", "{refresh}", "Refreshes answered 304.", lambda p: p.counts.not_modified),
    (
        "jwks_cache.unknown_kid_rejections",
        "{lookup}",
        "Lookups refused for a kid the set lacks.",
        lambda p: p.counts.unknown_kid_rejections,
    ),
)


def attributes(config: ProviderConfig) -> dict[str, str]:
    """A provider's metric attributes: its labels, then tenant and provider (which win a clash)."""
    return {**config.labels, "tenant": config.tenant, "provider": config.provider}


class _Instruments:
    """The instruments of one MeterProvider, shared by every Telemetry reporting to it.

    The SDK answers a second registration of a name with the first instrument and drops the new
    callbacks, so a second Registry would silently report nothing; instead one set of callbacks per
    provider reads every attached Telemetry. Collection may run on an exporter thread, hence the lock.
    """

    def __init__(self, meter: Meter) -> None:
        self._lock = threading.Lock()
        self._attached: weakref.WeakSet[Telemetry] = weakref.WeakSet()
        self.duration: Histogram = meter.create_histogram(
            "jwks_cache.refresh.duration",
            unit="s",
            description="Duration of one refresh, retries and discovery included.",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        for name, unit, description, read in _COUNTERS:
            meter.create_observable_counter(name, [self._counter(read)], unit, description)
        meter.create_observable_gauge(
            "jwks_cache.key_set.age", [self._age], "s", "Seconds since the last good fetch (200 or 304)."
        )

    def add(self, telemetry: Telemetry) -> None:
        with self._lock:
            self._attached.add(telemetry)

    def discard(self, telemetry: Telemetry) -> None:
        with self._lock:
            self._attached.discard(telemetry)

    def _providers(self) -> list[tuple[Observed, Clock]]:
        with self._lock:
            attached = list(self._attached)
        return [(p, clock) for t in attached for p, clock in t.observed()]

    def _counter(self, read: Callable[[Observed], int]) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(read(p), attributes(p.config)) for p, _ in self._providers()]

        return callback

    def _age(self, _options: CallbackOptions) -> Iterable[Observation]:
        found = []
        for p, clock in self._providers():
            published = p.published
            if published is not None:
                found.append(Observation(max(0.0, clock.monotonic() - published.fetched_mono), attributes(p.config)))
        return found


_by_provider: weakref.WeakKeyDictionary[MeterProvider, _Instruments] = weakref.WeakKeyDictionary()
_by_provider_lock = threading.Lock()


def _instruments_for(meter_provider: MeterProvider) -> _Instruments:
    # keyed like the SDK's own instrument registry (per provider, process-wide): see _Instruments
    with _by_provider_lock:
        found = _by_provider.get(meter_provider)
        if found is None:
            found = _by_provider[meter_provider] = _Instruments(meter_provider.get_meter(_SCOPE, __version__))
        return found


class Telemetry:
    """One Registry's metrics and spans.

    Args:
        meter_provider: where metrics go; default the global one (a no-op until an SDK is set).
        tracer_provider: where spans go; default the global one.
    """

    def __init__(
        self, *, meter_provider: MeterProvider | None = None, tracer_provider: TracerProvider | None = None
    ) -> None:
        self._tracer: Tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer(_SCOPE, __version__)
        self._instruments = _instruments_for(meter_provider or metrics.get_meter_provider())
        self._source: tuple[Callable[[], Iterable[Observed]], Clock] | None = None

    def attach(self, providers: Callable[[], Iterable[Observed]], clock: Clock) -> None:
        """Report ``providers()`` (read at each collection) until :meth:`detach`."""
        self._source = (providers, clock)
        self._instruments.add(self)

    def detach(self) -> None:
        """Stop reporting: observable callbacks cannot be unregistered, so they stop finding us."""
        self._instruments.discard(self)
        self._source = None

    def observed(self) -> list[tuple[Observed, Clock]]:
        source = self._source
        if source is None:
            return []
        providers, clock = source
        for _ in range(3):  # the event loop thread may resize the table while an exporter thread reads it
            try:
                return [(p, clock) for p in list(providers())]
            except RuntimeError:
                continue
        return []

    def refresh_span(self, source: _RefreshSource, config: ProviderConfig, clock: Clock) -> RefreshSpan:
        return RefreshSpan(self._tracer, self._instruments.duration, source, attributes(config), clock)

    def fetch_span(self, url: str) -> FetchSpan:
        return FetchSpan(self._tracer, url)


class RefreshSpan:
    """Span ``jwks_cache.refresh`` and one ``jwks_cache.refresh.duration`` point for one refresh.

    A root span: the fetch is shared by every waiter and belongs to none of their traces. The
    refresher sets ``outcome`` to ``"304"`` for a revalidation; an exception makes it ``"error"``.
    """

    __slots__ = (
        "_attributes", "_clock", "_histogram", "_retries", "_source", "_span", "_started", "_token", "_tracer", "outcome"
    )  # fmt: skip

    def __init__(
        self, tracer: Tracer, histogram: Histogram, source: _RefreshSource, attrs: dict[str, str], clock: Clock
    ) -> None:
        self._tracer = tracer
        self._histogram = histogram
        self._source = source
        self._attributes = attrs
        self._clock = clock
        self.outcome = "200"

    def __enter__(self) -> Self:
        self._started = self._clock.monotonic()
        self._retries = self._source.retries
        self._span = self._tracer.start_span("jwks_cache.refresh", otel_context.Context(), attributes=self._attributes)
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        otel_context.detach(self._token)
        span = self._span
        url = self._source.jwks_url
        if url is not None:
            span.set_attribute("url.full", url)
        span.set_attribute("retries", self._source.retries - self._retries)
        if isinstance(exc, Exception):
            self.outcome = "error"
            _fail(span, exc)
        elif exc is not None:
            self.outcome = "cancelled"  # the registry is closing or the provider went away: no data point
        span.set_attribute("outcome", self.outcome)
        span.end()
        if exc is None or isinstance(exc, Exception):
            elapsed = max(0.0, self._clock.monotonic() - self._started)
            self._histogram.record(elapsed, {**self._attributes, "outcome": self.outcome})


class FetchSpan:
    """Span ``jwks_cache.fetch`` for one HTTP attempt (redirect hops included), HTTP client semconv."""

    __slots__ = ("_span", "_token", "_tracer", "_url", "status_code")

    def __init__(self, tracer: Tracer, url: str) -> None:
        self._tracer = tracer
        self._url = url
        self.status_code: int | None = None  # set by the fetcher when a response arrived

    def __enter__(self) -> Self:
        attrs: dict[str, str | int] = {"http.request.method": "GET", "url.full": self._url}
        try:
            parts = urlsplit(self._url)
            if parts.hostname:
                attrs["server.address"] = parts.hostname
                attrs["server.port"] = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            pass  # the fetcher refuses such a URL itself; the span records that error
        self._span = self._tracer.start_span("jwks_cache.fetch", kind=SpanKind.CLIENT, attributes=attrs)
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        otel_context.detach(self._token)
        status = self.status_code if exc is None else getattr(exc, "status", None)
        if isinstance(status, int):
            self._span.set_attribute("http.response.status_code", status)
        if isinstance(exc, Exception):
            _fail(self._span, exc)
        self._span.end()


def _fail(span: Span, exc: Exception) -> None:
    span.record_exception(exc)
    span.set_attribute("error.type", _error_type(exc))
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


def _error_type(exc: BaseException) -> str:
    """Semconv ``error.type``: the status code of an HTTP error, else a low-cardinality class name."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    status = getattr(exc, "status", None)
    if isinstance(status, int) and status >= 400:
        return str(status)
    if type(exc) is FetchError and exc.__cause__ is not None:
        exc = exc.__cause__  # a transport failure: httpx.ConnectError says more than FetchError
    module = type(exc).__module__.split(".")[0]
    return type(exc).__qualname__ if module == "builtins" else f"{module}.{type(exc).__qualname__}"


# -- log lines: stdlib logger "jwks_cache", fields in ``extra`` for structured handlers ----------------
# Never key material, tokens or claims: kids, reasons, URLs and error messages only.


def _log(
    level: int,
    config: ProviderConfig,
    event: str,
    message: str,
    *args: object,
    exc_info: BaseException | None = None,
    **fields: object,
) -> None:
    extra = {"event": event, "tenant": config.tenant, "provider": config.provider, **fields}
    log.log(
        level, "jwks-cache %s/%s: " + message, config.tenant, config.provider, *args, extra=extra, exc_info=exc_info
    )


def log_refresh_failed(config: ProviderConfig, error: BaseException, *, exc_info: BaseException | None = None) -> None:
    """``exc_info``: an unexpected exception behind ``error``, whose traceback the line carries."""
    _log(
        logging.WARNING,
        config,
        "refresh_failed",
        "refresh failed: %s",
        error,
        exc_info=exc_info,
        error_type=_error_type(exc_info or error),
    )


def log_stale_started(config: ProviderConfig, *, expired_for: float, error: BaseException | None) -> None:
    message = "serving keys %.0fs past expiry (last error: %s)"
    _log(logging.WARNING, config, "stale_started", message, expired_for, error, expired_for=expired_for)


def log_stale_ended(config: ProviderConfig, *, reason: str) -> None:
    """``reason``: "refreshed" (a good set arrived) or "window over" (lookups now fail closed)."""
    level = logging.INFO if reason == "refreshed" else logging.ERROR
    _log(level, config, "stale_ended", "stale serving ended: %s", reason, reason=reason)


def log_skipped_keys(config: ProviderConfig, url: str, skipped: Sequence[SkippedKey]) -> None:
    """One INFO line per key a new set carries that will never be served."""
    for key in skipped:
        kid = None if key.kid is None else key.kid[:_KID_SHOWN]
        message = "skipped key [%d] kid=%r from %s: %s"
        _log(
            logging.INFO,
            config,
            "key_skipped",
            message,
            key.index,
            kid,
            url,
            key.reason,
            kid=kid,
            key_index=key.index,
            reason=key.reason,
            jwks_url=url,
        )
