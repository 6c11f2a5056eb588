"""Every invalid configuration value gives ConfigError naming the field; valid ones round-trip."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from jwks_cache import ConfigError, ProviderConfig, RetryPolicy

BASE: dict[str, Any] = {"tenant": "acme", "provider": "okta", "jwks_url": "https://id.example.com/jwks"}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"tenant": ""}, "tenant"),
        ({"tenant": "a" * 65}, "tenant"),
        ({"tenant": "acme_corp"}, "tenant"),
        ({"provider": "okta/x"}, "provider"),
        ({"jwks_url": None}, "jwks_url"),
        ({"jwks_url": "http://id.example.com/jwks"}, "jwks_url"),
        ({"jwks_url": "/relative/jwks"}, "jwks_url"),
        ({"jwks_url": "https://user:pw@id.example.com/jwks"}, "jwks_url"),
        ({"jwks_url": "ftp://id.example.com/jwks"}, "jwks_url"),
        ({"jwks_url": "https://[::1/jwks"}, "jwks_url"),
        ({"issuer": "http://id.example.com"}, "issuer"),
        ({"allowed_domains": ("Example.COM",)}, "allowed_domains"),
        ({"allowed_domains": ("example.com.",)}, "allowed_domains"),
        ({"allowed_domains": ("*.example.com",)}, "allowed_domains"),
        ({"refresh_early": 0.5}, "refresh_early"),
        ({"refresh_early": 86400.0}, "refresh_early"),
        ({"stale_while_error": -1.0}, "stale_while_error"),
        ({"min_ttl": 29.0}, "min_ttl"),
        ({"max_ttl": 40.0, "min_ttl": 60.0}, "max_ttl"),
        ({"max_response_bytes": 0}, "max_response_bytes"),
        ({"negative_cache_ttl": 0.5}, "negative_cache_ttl"),
        ({"max_redirects": 11}, "max_redirects"),
        ({"max_redirects": -1}, "max_redirects"),
        ({"pinned_spki": ("not-base64!",)}, "pinned_spki"),
        ({"pinned_spki": ("AAAA",)}, "pinned_spki"),
        ({"prefetch_jitter": -1.0}, "prefetch_jitter"),
        ({"unknown_kid_cooldown": -1.0}, "unknown_kid_cooldown"),
        ({"algorithms": ("HS256",)}, "algorithms"),
        ({"algorithms": ("none",)}, "algorithms"),
        ({"algorithms": ()}, "algorithms"),
        ({"max_keys": 0}, "max_keys"),
        ({"required_claims": ("",)}, "required_claims"),
        ({"required_claims": ("x" * 65,)}, "required_claims"),
        ({"required_claims": tuple(f"c{i}" for i in range(17))}, "required_claims"),
    ],
)
def test_invalid_provider_value_names_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{field}\b"):
        ProviderConfig(**{**BASE, **changes})


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"max_retries": -1}, "retry.max_retries"),
        ({"attempt_timeout": 0.05}, "retry.attempt_timeout"),
        ({"initial_backoff": 0.0}, "retry.initial_backoff"),
        ({"max_backoff": 0.1}, "retry.max_backoff"),
        ({"deadline": 1.0}, "retry.deadline"),
    ],
)
def test_invalid_retry_value_names_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{field}\b"):
        RetryPolicy(**changes)


def test_decoding_from_json_validates_and_reports_the_field() -> None:
    raw = b'{"tenant": "acme", "provider": "okta", "jwks_url": "https://id.example.com/jwks", "min_ttl": 5}'
    with pytest.raises(ConfigError, match="^min_ttl"):
        msgspec.json.decode(raw, type=ProviderConfig)


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(msgspec.ValidationError, match="mx_ttl"):
        msgspec.convert({**BASE, "mx_ttl": 5}, ProviderConfig)


def test_issuer_alone_is_enough_and_defaults_match_the_contract() -> None:
    cfg = ProviderConfig(tenant="acme", provider="okta", issuer="https://id.example.com")
    assert (cfg.refresh_early, cfg.stale_while_error, cfg.min_ttl, cfg.max_ttl) == (30.0, 60.0, 30.0, 86400.0)
    assert (cfg.max_redirects, cfg.unknown_kid_cooldown, cfg.negative_cache_ttl) == (3, 30.0, 0.0)
    assert cfg.retry == RetryPolicy()
    assert cfg.retry.max_retries == 2 and cfg.retry.deadline == 8.0


def test_config_round_trips_through_json() -> None:
    cfg = ProviderConfig(**BASE, labels={"team": "auth"}, retry=RetryPolicy(max_retries=1))
    assert msgspec.json.decode(msgspec.json.encode(cfg), type=ProviderConfig) == cfg


def test_retry_must_be_a_retry_policy_even_through_the_plain_constructor() -> None:
    with pytest.raises(ConfigError, match="^retry "):
        ProviderConfig(**BASE, retry={"max_retries": 1})  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["min_ttl", "max_ttl", "stale_while_error", "unknown_kid_cooldown"])
def test_durations_have_an_upper_bound(field: str) -> None:
    with pytest.raises(ConfigError, match=f"^{field}"):
        ProviderConfig(**BASE, **{field: float("inf")})
