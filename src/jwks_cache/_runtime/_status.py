"""Builds ProviderStatus views from a provider's fields; read-only and lock-free."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from .._clock import Clock
from .._models import ProviderState, ProviderStatus
from ._provider import Provider

__all__ = ["provider_state", "provider_status"]


def provider_state(provider: Provider, now: float) -> ProviderState:
    pub = provider.published
    in_flight = provider.flight is not None
    if pub is None:
        if in_flight:
            return ProviderState.LOADING
        return ProviderState.FAILED if provider.error_count else ProviderState.EMPTY
    if now < pub.expires_at:
        return ProviderState.REFRESHING if in_flight else ProviderState.READY
    if now < pub.stale_until:
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
    return ProviderStatus(
        tenant=cfg.tenant,
        provider=cfg.provider,
        state=provider_state(provider, now),
        jwks_url=provider.refresher.jwks_url,
        key_ids=pub.table.key_ids if pub is not None else (),
        last_refresh=_datetime(pub.wall_fetched_at) if pub is not None else None,
        next_refresh=_wall(clock, provider.next_refresh),
        expires_at=_datetime(pub.wall_expires_at) if pub is not None else None,
        error_count=provider.error_count,
        last_error=str(provider.last_error) if provider.last_error is not None else None,
        hits=provider.hits,
        misses=provider.misses,
        stale_serves=provider.stale_serves,
        refreshes=provider.refreshes,
        refresh_errors=provider.refresh_errors,
        labels=dict(cfg.labels),
        revalidations=provider.not_modified,
        last_error_type=type(provider.last_error).__name__ if provider.last_error is not None else None,
    )
