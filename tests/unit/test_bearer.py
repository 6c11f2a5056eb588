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
from jwks_cache.bearer import MalformedAuthorizationError, Refused, bearer_token, challenge_for, check_grants


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer abc", "abc"),  # the scheme is case-insensitive (RFC 9110 §11.1)
        ("BEARER   abc  ", "abc"),
        ("Basic dXNlcjpwYXNz", None),  # another scheme: no bearer credentials
        ("Bearerabc", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


@pytest.mark.parametrize(
    "header",
    ["Bearer", "Bearer ", "Bearer   ", "Bearer a b", 'Bearer a"b', "Bearer a\r\nX-Evil: 1", "Bearer " + "a" * 20_000],
)
def test_a_malformed_bearer_header_is_400_invalid_request(header: str) -> None:
    with pytest.raises(MalformedAuthorizationError) as raised:
        bearer_token(header)
    challenge = challenge_for(raised.value, realm="api")
    assert (challenge.status, challenge.headers, challenge.body) == (
        400,
        {"WWW-Authenticate": 'Bearer realm="api", error="invalid_request", error_description="malformed_header"'},
        {"error": "invalid_request", "error_description": "malformed_header"},
    )


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
        (KeyNotFoundError("x"), "unknown_kid"),
        (NotRegisteredError("x"), "not_registered"),  # an unknown tenant or provider, in every integration
    ],
)
def test_a_failed_token_is_invalid_token(error: Exception, description: str) -> None:
    challenge = challenge_for(error)
    assert challenge.status == 401
    assert challenge.headers["WWW-Authenticate"] == f'Bearer error="invalid_token", error_description="{description}"'
    assert challenge.body == {"error": "invalid_token", "error_description": description}


def test_parameter_values_are_escaped_quoted_strings() -> None:
    """RFC 7235 quoted-string: ``"`` and ``\\`` escaped; CR/LF dropped, so no value splits the header."""
    challenge = challenge_for(TokenError("x", reason='odd"re\\ason\r\nSet-Cookie: a=b'), realm='my "api"')
    assert challenge.headers["WWW-Authenticate"] == (
        'Bearer realm="my \\"api\\"", error="invalid_token", error_description="odd\\"re\\\\asonSet-Cookie: a=b"'
    )


def test_a_missing_scope_is_a_403_naming_the_required_scopes() -> None:
    challenge = challenge_for(InsufficientScopeError("x", required=("b",)), scopes=["b", "a", 'c"\r\n'])
    assert challenge.status == 403
    # every scope the endpoint requires (RFC 6750 §3); one that is no RFC 6749 scope-token is left out
    assert challenge.headers["WWW-Authenticate"] == 'Bearer error="insufficient_scope", scope="a b"'


def test_check_grants_names_scopes_for_a_scope_and_none_for_a_role() -> None:
    claims = {"scope": "a", "roles": ["reader"]}
    check_grants(claims, scopes=["a"], roles=["reader"])
    with pytest.raises(Refused) as scope:
        check_grants(claims, scopes=["a", "b"])
    with pytest.raises(Refused) as role:
        check_grants(claims, scopes=["a"], roles=["admin"])
    assert (scope.value.status, scope.value.headers["WWW-Authenticate"]) == (
        403,
        'Bearer error="insufficient_scope", scope="a b"',
    )
    assert (role.value.status, role.value.headers["WWW-Authenticate"]) == (403, 'Bearer error="insufficient_scope"')
    assert "'admin'" in role.value.detail


@pytest.mark.parametrize("error", [FetchError("down"), RegistryClosedError("closed"), TimeoutError()])
def test_unavailable_keys_are_a_503_without_challenge(error: Exception) -> None:
    challenge = challenge_for(error)
    assert (challenge.status, challenge.error, challenge.headers) == (
        503,
        "temporarily_unavailable",
        {"Retry-After": "5"},
    )


def test_other_errors_are_raised() -> None:
    with pytest.raises(ConfigError):
        challenge_for(ConfigError("a bug of the server's, not the client's"))
