"""One Registry, a few healthy tenants and one tenant for every kind of misbehaviour we know of.

The promise under test: one tenant's trouble stays that tenant's. Healthy tenants verify tokens
throughout; each hostile one shows its own typed error in status; the store's poison and outages
cost nothing but log lines; the Registry exits cleanly. Virtual time drives retries and expiry;
the identity providers are real loopback servers.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import coredis
import pytest
from tests.eddsa_vectors import LIBSODIUM_BLOCKLIST
from tests.helpers import config_for, loopback_registry
from tests.redis_servers import RedisServerProcess, coredis_outage

from jwks_cache import FileStore, ProviderConfig, ProviderState, Registry, RetryPolicy
from jwks_cache.redis import RedisStore
from jwks_cache.testing import LocalIdentityProvider, VirtualClock

#: one attempt per refresh (retries have tests of their own): a stalled or dripping provider costs
#: 0.1 real seconds per refresh (httpx's read timeout; the virtual clock waits for real I/O)
_RETRY = RetryPolicy(max_retries=0, attempt_timeout=0.1, initial_backoff=0.1, max_backoff=0.2, deadline=1.0)
_DEEP = b"[" * 100_000 + b"]" * 100_000


def _jwks_with(member: bytes) -> bytes:
    return b'{"keys":[],"x":' + member + b"}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


_PRIVATE_AND_SYMMETRIC = (
    b'{"keys":[{"kty":"oct","kid":"s","k":"c2VjcmV0"},{"kty":"RSA","kid":"p","n":"AQAB","e":"AQAB","d":"AQAB"}]}'
)

Misbehave = Callable[[LocalIdentityProvider], None]


def _set(attribute: str, value: object) -> Misbehave:
    return lambda idp: setattr(idp, attribute, value)


def _body(body: bytes, **knobs: object) -> Misbehave:
    def apply(idp: LocalIdentityProvider) -> None:
        idp.set_body(body)
        for name, value in knobs.items():
            setattr(idp, name, value)

    return apply


def _small_order_key(idp: LocalIdentityProvider) -> None:
    x = _b64(bytes.fromhex(LIBSODIUM_BLOCKLIST[0]))
    idp.set_body(b'{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"zero","alg":"EdDSA","x":"%s"}]}' % x.encode())


#: tenant -> (what the provider does, the class of the error its status must show)
HOSTILE: dict[str, tuple[Misbehave, str]] = {
    "deep-jwks": (lambda idp: idp.set_body(_jwks_with(_DEEP)), "InvalidJwksError"),
    "deep-objects": (
        lambda idp: idp.set_body(_jwks_with(b'{"a":' * 50_000 + b"1" + b"}" * 50_000)),
        "InvalidJwksError",
    ),
    "deep-discovery": (
        lambda idp: idp.set_discovery_body(b'{"issuer":"x","jwks_uri":"y","z":' + _DEEP + b"}"),
        "InvalidJwksError",
    ),
    "huge": (lambda idp: idp.set_body(_jwks_with(b'"' + b"a" * 2_000_000 + b'"')), "ResponseTooLargeError"),
    "gzip-bomb": (lambda idp: idp.gzip_bomb(2**31), "ResponseTooLargeError"),
    "slow-drip": (lambda idp: idp.slow_drip(1, 0.15), "FetchError"),
    "stall": (lambda idp: idp.stall(math.inf), "FetchError"),
    "reset": (_set("content_length", 1_000_000), "FetchError"),
    "5xx-storm": (lambda idp: idp.fail(503), "FetchError"),
    "429-storm": (lambda idp: idp.fail(429, headers={"Retry-After": "3600"}), "FetchError"),
    "html": (_body(b"<html><body>Log in to the hotel wifi</body></html>", content_type="text/html"), "SecurityError"),
    "bad-keys": (lambda idp: idp.set_body(_PRIVATE_AND_SYMMETRIC), "InvalidJwksError"),
    "small-order": (_small_order_key, "InvalidJwksError"),
    "redirect-loop": (lambda idp: idp.redirect_to(idp.jwks_url), "SecurityError"),
    "non-utf8": (lambda idp: idp.set_body(b'{"keys":[],"x":"\xff\xfe"}'), "InvalidJwksError"),
    "truncated": (lambda idp: idp.set_body(b'{"keys":[{"kty":"RSA","n":"'), "InvalidJwksError"),
    "not-json": (lambda idp: idp.set_body(b"\x00\x01\x02 definitely not json"), "InvalidJwksError"),
}


def _config(idp: LocalIdentityProvider, tenant: str) -> ProviderConfig:
    if tenant == "deep-discovery":  # found by discovery: the hostile document is the discovery one
        return config_for(idp, tenant=tenant, jwks_url=None, issuer=idp.issuer, retry=_RETRY)
    return config_for(idp, tenant=tenant, retry=_RETRY)


async def _verify_healthy(reg: Registry, healthy: dict[str, LocalIdentityProvider], round_: int) -> None:
    for tenant, idp in healthy.items():
        claims = await reg.verify(idp.mint({"sub": f"{tenant}-{round_}"}), tenant=tenant, provider="idp")
        assert claims["sub"] == f"{tenant}-{round_}"


def _no_task_needed_the_boundary(caplog: pytest.LogCaptureFixture) -> None:
    """Every hostile input met a typed path: the last-resort boundary never had to catch anything."""
    caught = [r.getMessage() for r in caplog.records if getattr(r, "event", None) == "task_failed"]
    assert caught == []
    unexpected = [
        r.getMessage() for r in caplog.records if getattr(r, "event", None) == "refresh_failed" and r.exc_info
    ]
    assert unexpected == []


async def test_hostile_tenants_and_a_poisoned_store_never_reach_the_healthy_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "jwks_cache")
    clock = VirtualClock()
    store = FileStore(tmp_path)
    # poisoned snapshots for healthy tenants: deep msgpack, garbage, a truncated file
    for tenant, data in (
        ("good-1", b"\x91" * 200_000 + b"\xc0"),
        ("good-2", b"\xde\xad\xbe\xef" * 64),
        ("good-3", b"\x87"),
    ):
        store.path_for(tenant, "idp").write_bytes(data)
    with anyio.fail_after(60):
        async with contextlib.AsyncExitStack() as stack:
            healthy = {f"good-{i}": await stack.enter_async_context(LocalIdentityProvider()) for i in (1, 2, 3)}
            hostile = {tenant: await stack.enter_async_context(LocalIdentityProvider()) for tenant in HOSTILE}
            for tenant, idp in hostile.items():
                HOSTILE[tenant][0](idp)
            for idp in healthy.values():
                idp.cache_control = "max-age=60"  # healthy tenants refresh during the test too
            async with loopback_registry(clock, store=store) as reg:
                await reg.register_many([config_for(idp, tenant=t) for t, idp in healthy.items()])
                await reg.register_many([_config(idp, t) for t, idp in hostile.items()])
                for round_ in range(5):  # 5 x 30 virtual seconds: first fetches, retries, healthy refreshes
                    await _verify_healthy(reg, healthy, round_)
                    await clock.advance(30)
                shown = {t: reg.status(t, "idp") for t in HOSTILE}
                for tenant, idp in healthy.items():
                    status = reg.status(tenant, "idp")
                    assert (status.state, status.last_error) == (ProviderState.READY, None), tenant
                    assert idp.request_count >= 3  # the poisoned snapshot was ignored; fetched, then refreshed
            for idp in hostile.values():
                idp.recover()  # release stalled and dripping requests before the servers close
    wrong = {
        t: (s.state, s.last_error_type, s.last_error) for t, s in shown.items() if s.last_error_type != HOSTILE[t][1]
    }
    assert wrong == {}
    # never a key set: failed, or (a retry sleeping out its backoff) still loading
    assert all(s.state in {ProviderState.FAILED, ProviderState.LOADING} and s.error_count >= 1 for s in shown.values())
    _no_task_needed_the_boundary(caplog)


async def _forge(client: Any, store: RedisStore, tenant: str) -> None:
    """What anyone who can reach Redis can do without the HMAC key: forged notices, poisoned values."""
    deep_notice = b'{"tenant":"good-1","provider":"idp","fetched_at":1,"origin":"x","z":' + _DEEP + b"}"
    for notice in (deep_notice, b"\xff\xfe garbage", b'{"tenant":"../../etc","provider":"idp","fetched_at":1}'):
        await client.publish(store.channel, notice)
    await client.set(store.snapshot_key(tenant, "idp"), b"\x91" * 200_000 + b"\xc0")
    await client.publish(store.channel, b'{"tenant":"%s","provider":"idp","fetched_at":1e300}' % tenant.encode())


@coredis_outage
async def test_a_fleet_under_forged_notices_poisoned_snapshots_and_a_dying_redis(
    disposable_redis: RedisServerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "jwks_cache")
    clock = VirtualClock()
    with anyio.fail_after(60):
        async with contextlib.AsyncExitStack() as stack:
            healthy = {f"good-{i}": await stack.enter_async_context(LocalIdentityProvider()) for i in (1, 2)}
            deep = await stack.enter_async_context(LocalIdentityProvider())
            HOSTILE["deep-jwks"][0](deep)
            stores = [RedisStore(disposable_redis.url, shared=True, timeout=0.5) for _ in range(2)]
            regs = [await stack.enter_async_context(loopback_registry(clock, store=s)) for s in stores]
            for reg in regs:
                await reg.register_many([config_for(idp, tenant=t, retry=_RETRY) for t, idp in healthy.items()])
                await reg.register(config_for(deep, tenant="deep-jwks", retry=_RETRY))
            client = await stack.enter_async_context(coredis.Redis.from_url(disposable_redis.url))
            round_ = 0
            for phase in ("forged", "hung", "killed", "back"):
                if phase == "forged":
                    await _forge(client, stores[0], "good-1")
                elif phase == "hung":
                    disposable_redis.pause()
                elif phase == "killed":
                    disposable_redis.resume()
                    disposable_redis.stop()
                else:
                    disposable_redis.start()
                for _ in range(3):
                    round_ += 1
                    for reg in regs:
                        await _verify_healthy(reg, healthy, round_)
                    await clock.advance(45)
                for reg in regs:
                    # fresh keys served; a refresh may be waiting on a hung Redis (for its timeout)
                    assert reg.status("good-1", "idp").state in {ProviderState.READY, ProviderState.REFRESHING}, phase
                    # a jump of virtual time can pass a flight's deadline while a real Redis round
                    # trip is pending (the clock waits for HTTP, not Redis): "overran its deadline"
                    assert reg.status("deep-jwks", "idp").last_error_type in {"InvalidJwksError", "FetchError"}
    refused = [r for r in caplog.records if r.getMessage().endswith("nests deeper than 32 levels")]
    assert refused  # the deep document itself was refused as invalid, not merely timed out
    _no_task_needed_the_boundary(caplog)
