"""Metrics, spans and log lines of a Registry against a real loopback identity provider.

Every test passes its own SDK meter/tracer provider with in-memory readers: no global is set.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import anyio
import httpx
import msgspec
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from tests.helpers import PROVIDER, TENANT, config_for, loopback_registry

from jwks_cache import FetchError, KeyNotFoundError, RetryPolicy
from jwks_cache._errors import InvalidJwksError
from jwks_cache._telemetry import _error_type
from jwks_cache.testing import LocalIdentityProvider, VirtualClock

LABELS = {"team": "auth"}
ATTRS = {"tenant": TENANT, "provider": PROVIDER, "team": "auth"}
NO_RETRY = RetryPolicy(max_retries=0)


class Otel(msgspec.Struct):
    reader: InMemoryMetricReader
    exporter: InMemorySpanExporter
    meter_provider: MeterProvider
    tracer_provider: TracerProvider

    def metrics(self) -> dict[str, list[Any]]:
        """Metric name -> its data points, from one collection."""
        data = self.reader.get_metrics_data()
        if data is None:
            return {}
        return {
            m.name: list(m.data.data_points)
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
        }

    def values(self) -> dict[str, dict[tuple[tuple[str, Any], ...], Any]]:
        """Counter/gauge name -> {sorted attributes: value}."""
        return {
            name: {tuple(sorted(p.attributes.items())): p.value for p in points}
            for name, points in self.metrics().items()
            if name != "jwks_cache.refresh.duration"
        }

    def spans(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name == name]


@pytest.fixture
def otel() -> Iterator[Otel]:
    reader = InMemoryMetricReader()
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Otel(reader, exporter, meter_provider, tracer_provider)
    meter_provider.shutdown()
    tracer_provider.shutdown()


def _key(attrs: dict[str, str]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(attrs.items()))


def _attrs(span: ReadableSpan) -> Mapping[str, Any]:
    return span.attributes or {}


async def test_scripted_scenario_reports_counters_durations_and_spans(otel: Otel) -> None:
    clock = VirtualClock()
    with anyio.fail_after(10):
        async with (
            LocalIdentityProvider() as idp,
            loopback_registry(clock, meter_provider=otel.meter_provider, tracer_provider=otel.tracer_provider) as reg,
        ):
            await reg.register(config_for(idp, labels=LABELS, retry=NO_RETRY))
            kid = idp.kids[0]
            await reg.get_key(TENANT, PROVIDER, kid)  # cold fetch (200), then a hit
            for _ in range(3):
                reg.get_key_nowait(TENANT, PROVIDER, kid)
            with pytest.raises(KeyNotFoundError):
                await reg.get_key(TENANT, PROVIDER, "no-such-kid")  # unconditional refetch (200), a miss
            await reg.refresh(TENANT, PROVIDER)  # revalidation: 304
            await clock.advance(10)
            idp.fail(404)
            with pytest.raises(FetchError):
                await reg.refresh(TENANT, PROVIDER)

            values = otel.values()
            expected = {
                "jwks_cache.requests": 5,
                "jwks_cache.hits": 4,
                "jwks_cache.misses": 1,
                "jwks_cache.stale_serves": 0,
                "jwks_cache.refreshes": 3,
                "jwks_cache.refresh_errors": 1,
                "jwks_cache.revalidations_not_modified": 1,
                "jwks_cache.unknown_kid_rejections": 1,
                "jwks_cache.key_set.age": 10.0,  # since the 304: a failure is not a good fetch
            }
            assert values == {name: {_key(ATTRS): value} for name, value in expected.items()}

            durations = {p.attributes["outcome"]: p for p in otel.metrics()["jwks_cache.refresh.duration"]}
            assert {o: p.count for o, p in durations.items()} == {"200": 2, "304": 1, "error": 1}
            assert all(p.sum == 0.0 for p in durations.values())  # virtual time: the clock seam measured them
            assert all(dict(p.attributes) == {**ATTRS, "outcome": o} for o, p in durations.items())

    refreshes = otel.spans("jwks_cache.refresh")
    fetches = otel.spans("jwks_cache.fetch")
    assert [_attrs(s)["outcome"] for s in refreshes] == ["200", "200", "304", "error"]
    assert [_attrs(s)["http.response.status_code"] for s in fetches] == [200, 200, 304, 404]
    for refresh, fetch in zip(refreshes, fetches, strict=True):
        assert refresh.parent is None  # a shared fetch belongs to no caller's trace
        assert fetch.parent is not None and fetch.parent.span_id == refresh.context.span_id
        assert fetch.kind is SpanKind.CLIENT
        assert {k: _attrs(refresh)[k] for k in (*ATTRS, "url.full", "retries")} == {
            **ATTRS,
            "url.full": idp.jwks_url,
            "retries": 0,
        }
        assert _attrs(fetch)["http.request.method"] == "GET"
        assert _attrs(fetch)["url.full"] == idp.jwks_url
        assert _attrs(fetch)["server.address"] == "127.0.0.1"
        assert _attrs(fetch)["server.port"] == idp.port
    for span in (refreshes[-1], fetches[-1]):
        assert span.status.status_code is StatusCode.ERROR
        assert _attrs(span)["error.type"] == "404"
        assert [e.name for e in span.events] == ["exception"]
    assert all(s.status.status_code is StatusCode.UNSET for s in [*refreshes[:-1], *fetches[:-1]])


async def test_retried_attempts_are_child_spans_of_one_refresh(otel: Otel) -> None:
    clock = VirtualClock()
    with anyio.fail_after(10):
        async with (
            LocalIdentityProvider() as idp,
            loopback_registry(clock, meter_provider=otel.meter_provider, tracer_provider=otel.tracer_provider) as reg,
        ):
            idp.fail(503, times=1)
            await reg.register(config_for(idp))
            await clock.advance(5)  # the loop's first fetch: 503, a backoff sleep, then 200
            assert reg.get_key_nowait(TENANT, PROVIDER, idp.kids[0]).kid == idp.kids[0]

    (refresh,) = otel.spans("jwks_cache.refresh")
    assert _attrs(refresh)["outcome"] == "200" and _attrs(refresh)["retries"] == 1
    fetches = otel.spans("jwks_cache.fetch")
    assert [_attrs(s)["http.response.status_code"] for s in fetches] == [503, 200]
    assert [_attrs(s).get("error.type") for s in fetches] == ["503", None]
    assert all(s.parent is not None and s.parent.span_id == refresh.context.span_id for s in fetches)


async def test_an_attempt_timeout_is_error_type_timeout(otel: Otel) -> None:
    policy = RetryPolicy(max_retries=0, attempt_timeout=0.1, deadline=1.0)
    with anyio.fail_after(10):
        async with (
            LocalIdentityProvider() as idp,
            loopback_registry(meter_provider=otel.meter_provider, tracer_provider=otel.tracer_provider) as reg,
        ):
            idp.stall(float("inf"))
            await reg.register(config_for(idp, retry=policy))
            with pytest.raises(FetchError):
                await reg.refresh(TENANT, PROVIDER)
            idp.recover()

    (fetch,) = otel.spans("jwks_cache.fetch")
    assert _attrs(fetch)["error.type"] == "timeout"
    assert "http.response.status_code" not in _attrs(fetch)
    (refresh,) = otel.spans("jwks_cache.refresh")
    assert _attrs(refresh)["outcome"] == "error"
    assert refresh.status.status_code is StatusCode.ERROR


async def test_registries_share_a_meter_provider_and_a_closed_one_stops_reporting(otel: Otel) -> None:
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp:
            kwargs: dict[str, Any] = {"meter_provider": otel.meter_provider, "tracer_provider": otel.tracer_provider}
            async with loopback_registry(**kwargs) as second:
                async with loopback_registry(**kwargs) as first:
                    await first.register(config_for(idp, tenant="first"))
                    await second.register(config_for(idp, tenant="second"))
                    await first.get_key("first", PROVIDER, idp.kids[0])
                    await second.get_key("second", PROVIDER, idp.kids[0])
                    hits = otel.values()["jwks_cache.hits"]
                    assert sorted(dict(k)["tenant"] for k in hits) == ["first", "second"]
                hits = otel.values()["jwks_cache.hits"]
                assert [dict(k)["tenant"] for k in hits] == ["second"]
            assert "jwks_cache.hits" not in otel.values()


async def test_skipped_keys_are_logged_once_per_new_set_without_key_material(
    otel: Otel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="jwks_cache")
    secret = "c2VjcmV0LXN5bW1ldHJpYy1rZXk"
    with anyio.fail_after(10):
        async with (
            LocalIdentityProvider() as idp,
            loopback_registry(meter_provider=otel.meter_provider, tracer_provider=otel.tracer_provider) as reg,
        ):
            keys = [*idp.jwks["keys"], {"kty": "oct", "kid": "sym", "k": secret}]
            idp.set_body(msgspec.json.encode({"keys": keys}))
            await reg.register(config_for(idp))
            await reg.get_key(TENANT, PROVIDER, idp.kids[0])
            with pytest.raises(KeyNotFoundError):
                await reg.get_key(TENANT, PROVIDER, "sym")  # refetches the same body: no second line
            assert idp.request_count == 2

    skipped = [r for r in caplog.records if getattr(r, "event", None) == "key_skipped"]
    assert len(skipped) == 1
    record: Any = skipped[0]
    assert (record.levelno, record.tenant, record.provider, record.kid, record.key_index) == (
        logging.INFO,
        TENANT,
        PROVIDER,
        "sym",
        2,
    )
    assert record.reason == "oct key"
    assert secret not in caplog.text


async def test_a_stale_episode_logs_one_start_and_one_end(otel: Otel, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="jwks_cache")
    clock = VirtualClock()
    with anyio.fail_after(10):
        async with (
            LocalIdentityProvider() as idp,
            loopback_registry(clock, meter_provider=otel.meter_provider, tracer_provider=otel.tracer_provider) as reg,
        ):
            await reg.register(config_for(idp, stale_while_error=600.0, retry=NO_RETRY))
            kid = idp.kids[0]
            await reg.get_key(TENANT, PROVIDER, kid)
            idp.fail(500)
            await clock.advance(310)  # max-age=300: the loop's refreshes fail, the set expires
            for _ in range(3):
                await reg.get_key(TENANT, PROVIDER, kid)
            idp.recover()
            await reg.refresh(TENANT, PROVIDER)
            assert otel.values()["jwks_cache.stale_serves"] == {_key({"tenant": TENANT, "provider": PROVIDER}): 3}

    events = [getattr(r, "event", None) for r in caplog.records]
    assert events.count("stale_started") == 1 and events.count("stale_ended") == 1
    assert events.index("stale_started") < events.index("stale_ended")
    failed = [r for r in caplog.records if getattr(r, "event", None) == "refresh_failed"]
    assert failed and all(getattr(r, "error_type", None) == "500" for r in failed)
    (ended,) = [r for r in caplog.records if getattr(r, "event", None) == "stale_ended"]
    assert getattr(ended, "reason", None) == "refreshed"


def test_error_type_names_the_status_the_transport_or_our_class() -> None:
    assert _error_type(FetchError("x", status=503)) == "503"
    assert _error_type(TimeoutError()) == "timeout"
    wrapped = FetchError("x")
    wrapped.__cause__ = httpx.ConnectError("refused")
    assert _error_type(wrapped) == "httpx.ConnectError"
    invalid = InvalidJwksError("x")
    invalid.__cause__ = msgspec.ValidationError("bad")
    assert _error_type(invalid) == "jwks_cache.InvalidJwksError"
