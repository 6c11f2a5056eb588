"""Every invalid configuration value gives ConfigError naming the field; valid ones round-trip."""

from __future__ import annotations

import math
import random
import re
import ssl
import time
from typing import Any

import httpx
import msgspec
import pytest

from jwks_cache import ConfigError, MemoryStore, ProviderConfig, Registry, RetryPolicy
from jwks_cache._config import decode_config
from jwks_cache.testing import VirtualClock

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


# -- types: checked on construction as decoding checks them -----------------------------------------

#: One wrongly typed value per field (some fields twice), each one msgspec's decoding refuses as well.
WRONG_TYPES: list[tuple[str, object]] = [
    ("tenant", 5),
    ("provider", None),
    ("jwks_url", b"https://id.example.com/jwks"),
    ("issuer", 5),
    ("require_https", None),
    ("allowed_domains", "example.com"),  # a str is a sequence of one-letter domains
    ("allowed_domains", ["example.com", 3]),
    ("refresh_early", None),
    ("stale_while_error", True),  # bool is an int to Python, never a duration here
    ("min_ttl", [30.0]),
    ("max_ttl", {}),
    ("max_response_bytes", 1.5),
    ("negative_cache_ttl", False),
    ("max_redirects", True),
    ("pinned_spki", "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="),
    ("prefetch_jitter", "soon"),
    ("unknown_kid_cooldown", None),
    ("algorithms", "RS256"),
    ("algorithms", ["RS256", None]),
    ("audience", ["api"]),
    ("required_claims", "exp"),
    ("accepted_issuers", "accounts.google.com"),
    ("allowed_tenant_ids", ["tid", 7]),
    ("claim_values", {"client_id": "abc"}),  # a str is not a tuple of accepted values
    ("claim_values", {"client_id": [1]}),
    ("max_keys", True),
    ("labels", {"team": 1}),
    ("labels", [("team", "auth")]),
]

#: The same for RetryPolicy, whose messages name the field as a decode error does: ``retry.jitter``.
WRONG_RETRY_TYPES: list[tuple[str, object]] = [
    ("max_retries", True),
    ("max_retries", 2.5),
    ("attempt_timeout", None),
    ("initial_backoff", [0.25]),
    ("max_backoff", False),
    ("deadline", {}),
    ("jitter", "sometimes"),  # a Literal outside its set
    ("jitter", None),
]

#: Values lax decoding (decode_config, for TOML and environment strings) coerces, Python never does.
LAX_ONLY: list[tuple[str, object]] = [("max_ttl", "300"), ("require_https", 1), ("max_keys", 5.0)]


def test_the_wrong_type_tables_cover_every_field() -> None:
    nested = {"retry"}  # covered by test_a_dict_is_not_a_retry_policy below
    assert {name for name, _ in WRONG_TYPES} | nested == set(ProviderConfig.__struct_fields__)
    assert {name for name, _ in WRONG_RETRY_TYPES} == set(RetryPolicy.__struct_fields__)


@pytest.mark.parametrize(("field", "value"), WRONG_TYPES + LAX_ONLY)
def test_a_wrongly_typed_field_is_a_config_error_naming_it(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"^{field} must be .* \(got {re.escape(repr(value))}\)$"):
        ProviderConfig(**{**BASE, field: value})


@pytest.mark.parametrize(("field", "value"), WRONG_RETRY_TYPES)
def test_a_wrongly_typed_retry_field_is_a_config_error_naming_it(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"^retry\.{field} must be "):
        RetryPolicy(**{field: value})


def test_a_type_message_says_what_the_field_takes() -> None:
    with pytest.raises(ConfigError, match=r"^retry\.jitter must be one of 'decorrelated', 'full', 'none' \(got "):
        RetryPolicy(jitter="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^algorithms must be a tuple of str or None \(got 'RS256'\)$"):
        ProviderConfig(**BASE, algorithms="RS256")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^max_keys must be an int \(got True\)$"):
        ProviderConfig(**BASE, max_keys=True)


def test_a_dict_is_not_a_retry_policy() -> None:
    with pytest.raises(ConfigError, match=r"^retry must be a RetryPolicy \(got 'dict'\)$"):
        ProviderConfig(**BASE, retry={"jitter": "full"})  # type: ignore[arg-type]


@pytest.mark.parametrize(("field", "value"), WRONG_TYPES)
def test_replace_checks_types_as_construction_does(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"^{field} must be "):
        msgspec.structs.replace(ProviderConfig(**BASE), **{field: value})


@pytest.mark.parametrize(("field", "value"), WRONG_TYPES)
def test_decoding_refuses_the_same_values_as_before(field: str, value: object) -> None:
    # msgspec's own type errors come first on these paths, as documented; decode_config wraps them
    with pytest.raises(msgspec.ValidationError, match=rf"at `\$\.{field}\b"):
        msgspec.convert({**BASE, field: value}, ProviderConfig)
    with pytest.raises(ConfigError, match=rf"^invalid ProviderConfig: .* at `\$\.{field}\b"):
        decode_config({**BASE, field: value}, ProviderConfig)


@pytest.mark.parametrize(("field", "value"), WRONG_RETRY_TYPES)
def test_decoding_refuses_the_same_retry_values_as_before(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"^invalid ProviderConfig: .* at `\$\.retry\.{field}`"):
        decode_config({**BASE, "retry": {field: value}}, ProviderConfig)


def test_lax_decoding_still_coerces_strings_to_the_annotated_types() -> None:
    config = decode_config({**BASE, **dict(LAX_ONLY)}, ProviderConfig)
    assert (config.max_ttl, config.require_https, config.max_keys) == (300.0, True, 5)
    assert decode_config({**BASE, "retry": {"jitter": "none"}}, ProviderConfig).retry == RetryPolicy(jitter="none")


def test_lists_become_the_annotated_tuples_and_the_callers_containers_stay_theirs() -> None:
    domains, labels = ["example.com"], {"team": "auth"}
    config = ProviderConfig(**BASE, allowed_domains=domains, algorithms=["RS256"], labels=labels)  # type: ignore[arg-type]
    domains.append("Not A Host")
    labels["x" * 100] = "breaks the labels rule"
    assert (config.allowed_domains, config.algorithms, config.labels) == (
        ("example.com",),
        ("RS256",),
        {"team": "auth"},
    )
    assert config == msgspec.convert({**BASE, "allowed_domains": ["example.com"], "algorithms": ["RS256"],
                                      "labels": {"team": "auth"}}, ProviderConfig)  # fmt: skip


def test_an_int_is_a_number_of_seconds() -> None:
    assert ProviderConfig(**BASE, max_ttl=300).max_ttl == 300
    assert RetryPolicy(deadline=8).deadline == 8


# -- Registry(...) arguments --------------------------------------------------------------------------


class _NotAStore:
    async def load(self, tenant: str, provider: str) -> None:
        return None


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("require_https", "yes"),
        ("require_https", None),
        ("allow_private_networks", 1),
        ("allowed_domains", "example.com"),
        ("allowed_domains", ["example.com", 3]),
        ("allowed_domains", iter(["example.com"])),  # checking would consume it, leaving no floor
        ("allowed_domains", None),
        ("default_refresh_early", "30"),
        ("default_refresh_early", -1.0),
        ("default_refresh_early", math.inf),
        ("default_refresh_early", True),
        ("default_stale_while_error", math.nan),
        ("default_stale_while_error", -5),
        ("http_client", object()),
        ("store", _NotAStore()),
        ("store", "/var/cache/jwks"),
        ("clock", time),  # the module has monotonic() and time() but no sleep_until
        ("rng", random),
        ("ssl_context", True),
    ],
)
def test_a_wrong_registry_argument_is_a_config_error_naming_it(argument: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"^{argument}: must be "):
        Registry(**{argument: value})


def test_registry_arguments_of_the_documented_types_are_accepted() -> None:
    Registry(
        require_https=False,
        allowed_domains=frozenset({"example.com"}),
        allow_private_networks=True,
        default_refresh_early=10,
        default_stale_while_error=0.0,
        store=MemoryStore(),
        clock=VirtualClock(),
        rng=random.Random(7),
        ssl_context=ssl.create_default_context(),
    )
    Registry(http_client=httpx.AsyncClient())
