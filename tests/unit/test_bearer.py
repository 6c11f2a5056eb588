"""RFC 6750 answers (jwks_cache.bearer): the header parsing and the challenge every integration sends."""

from __future__ import annotations

import pytest

from jwks_cache import (
    ConfigError,
    FetchError,
    InsufficientScopeError,
    KeyNotFoundError,
    NotRegisteredError,
    RegistryClosedError,
    TokenError,
)
from jwks_cache.bearer import bearer_token, challenge_for


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer abc", "abc"),  # the scheme is case-insensitive (RFC 9110 §11.1)
        ("BEARER   abc  ", "abc"),
        ("Basic dXNlcjpwYXNz", None),
        ("Bearer", None),
        ("Bearer ", None),
        ("Bearer a b", None),
        ("", None),
        (None, None),
        ("Bearer " + "a" * 20_000, None),
    ],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_no_token_is_a_bare_challenge() -> None:
    challenge = challenge_for(None)
    assert (challenge.status, challenge.headers, challenge.body) == (
        401,
        {"WWW-Authenticate": "Bearer"},
        {"error_description": "a bearer token is required"},
    )
    assert challenge_for(None, realm="api").headers == {"WWW-Authenticate": 'Bearer realm="api"'}


@pytest.mark.parametrize(
    ("error", "description"),
    [
        (TokenError("x", reason="expired"), "expired"),
        (TokenError("x", reason='odd"reason\\\n'), "oddreason"),  # kept a valid quoted-string
        (KeyNotFoundError("x"), "unknown_kid"),
        (NotRegisteredError("x"), "unknown_tenant"),
    ],
)
def test_a_failed_token_is_invalid_token(error: Exception, description: str) -> None:
    challenge = challenge_for(error)
    assert challenge.status == 401
    assert challenge.headers["WWW-Authenticate"] == f'Bearer error="invalid_token", error_description="{description}"'
    assert challenge.body == {"error": "invalid_token", "error_description": description}


def test_a_missing_scope_is_a_403_naming_the_scopes() -> None:
    challenge = challenge_for(InsufficientScopeError("x", required=("b",)), scopes=["b", "a"])
    assert challenge.status == 403
    assert challenge.headers["WWW-Authenticate"] == (
        'Bearer error="insufficient_scope", error_description="insufficient_scope", scope="a b"'
    )


@pytest.mark.parametrize("error", [FetchError("down"), RegistryClosedError("closed"), TimeoutError()])
def test_unavailable_keys_are_a_503_without_challenge(error: Exception) -> None:
    challenge = challenge_for(error)
    assert (challenge.status, challenge.error, "WWW-Authenticate" in challenge.headers) == (
        503,
        "temporarily_unavailable",
        False,
    )


def test_other_errors_are_raised() -> None:
    with pytest.raises(ConfigError):
        challenge_for(ConfigError("a bug of the server's, not the client's"))
