"""Builds the read-only views of a provider (ProviderStatus, ServedJwks) from its fields; lock-free."""

from __future__ import annotations

import base64
import binascii
import math
from datetime import UTC, datetime
from typing import Any

import msgspec

from .._clock import Clock
from .._models import KeyInfo, ProviderState, ProviderStatus, ServedJwks
from ._provider import Provider
from ._published import Published

__all__ = ["provider_state", "provider_status", "served_jwks"]


def provider_state(provider: Provider, now: float) -> ProviderState:
    pub = provider.published
    in_flight = provider.flight is not None
    if pub is None:
        if in_flight:
            return ProviderState.LOADING
        return ProviderState.FAILED if provider.error_count else ProviderState.EMPTY
    if now < pub.expires_mono:
        return ProviderState.REFRESHING if in_flight else ProviderState.READY
    if now < pub.stale_until_mono:
        return ProviderState.REFRESHING if in_flight else ProviderState.STALE
    return ProviderState.FAILED


def _wall(clock: Clock, monotonic: float) -> datetime | None:
    if not math.isfinite(monotonic):
        return None
    return _datetime(clock.time() + (monotonic - clock.monotonic()))


def _datetime(epoch: float) -> datetime | None:
    """A UTC datetime, or None for a time no datetime can hold (status must never raise)."""
    try:
        return datetime.fromtimestamp(epoch, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def provider_status(provider: Provider, clock: Clock) -> ProviderStatus:
    now = clock.monotonic()
    pub = provider.published
    cfg = provider.config
    counts = provider.counts
    return ProviderStatus(
        tenant=cfg.tenant,
        provider=cfg.provider,
        state=provider_state(provider, now),
        jwks_url=provider.refresher.jwks_url,
        key_ids=pub.table.key_ids if pub is not None else (),
        last_refresh=_datetime(pub.wall_fetched_at) if pub is not None else None,
        next_refresh=_wall(clock, provider.next_refresh_mono),
        expires_at=_datetime(pub.wall_expires_at) if pub is not None else None,
        error_count=provider.error_count,
        last_error=str(provider.last_error) if provider.last_error is not None else None,
        hits=counts.hits,
        misses=counts.misses,
        stale_serves=counts.stale_serves,
        refreshes=counts.refreshes,
        refresh_errors=counts.refresh_errors,
        labels=dict(cfg.labels),
        revalidations=counts.not_modified,
        last_error_type=type(provider.last_error).__name__ if provider.last_error is not None else None,
    )


def served_jwks(provider: Provider, published: Published, clock: Clock) -> ServedJwks:
    """The view of ``published`` as ``provider`` serves it; the raw document supplies skipped keys' members."""
    cfg = provider.config
    return ServedJwks(
        tenant=cfg.tenant,
        provider=cfg.provider,
        jwks_url=published.url,
        jwks=published.table.public_jwks(),
        keys=_key_infos(published),
        fetched_at=datetime.fromtimestamp(published.wall_fetched_at, tz=UTC),
        expires_at=datetime.fromtimestamp(published.wall_expires_at, tz=UTC),
        ttl=published.ttl,
        fresh_for=published.expires_mono - clock.monotonic(),
        no_store=published.no_store,
        etag=published.etag,
        last_modified=published.last_modified,
    )


def _key_infos(published: Published) -> tuple[KeyInfo, ...]:
    # The table keeps parsed keys only; the raw document gives kty/alg/use of skipped ones too.
    table = published.table
    raw = _raw_keys(table.body)
    skipped_at = {s.index: s for s in table.skipped}
    served = iter(table.entries)
    infos: list[KeyInfo] = []
    for index in range(len(table.entries) + len(table.skipped)):
        jwk = raw[index] if index < len(raw) else {}
        skip = skipped_at.get(index)
        if skip is not None:
            kid, kty, alg, crv = skip.kid, _text(jwk, "kty"), _text(jwk, "alg"), _text(jwk, "crv")
        else:
            entry = next(served)
            kid, kty, alg, crv = entry.kid, entry.kty, entry.alg, entry.crv
        size = crv if kty in ("EC", "OKP") else _rsa_bits(jwk) if kty == "RSA" else None
        reason = skip.reason if skip is not None else None
        infos.append(
            KeyInfo(
                index=index,
                kid=kid,
                kty=kty,
                alg=alg,
                size=size,
                use=_text(jwk, "use"),
                served=skip is None,
                reason=reason,
            )
        )
    return tuple(infos)


def _raw_keys(body: bytes) -> list[dict[str, Any]]:
    try:
        doc = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return []
    keys = doc.get("keys") if isinstance(doc, dict) else None
    return [k if isinstance(k, dict) else {} for k in keys] if isinstance(keys, list) else []


def _text(jwk: dict[str, Any], member: str) -> str | None:
    value = jwk.get(member)
    return value[:64] if isinstance(value, str) else None


def _rsa_bits(jwk: dict[str, Any]) -> str | None:
    n = jwk.get("n")
    if not isinstance(n, str):
        return None
    try:
        modulus = base64.urlsafe_b64decode(n + "=" * (-len(n) % 4))
    except (binascii.Error, ValueError):
        return None
    return f"{int.from_bytes(modulus, 'big').bit_length()} bits"
