"""Scopes and roles as every integration reads them."""

from __future__ import annotations

from typing import Any

import pytest

from jwks_cache import InsufficientScopeError, TokenError, require_roles, require_scopes, roles_of, scopes_of


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        ({"scope": "read write"}, {"read", "write"}),  # RFC 9068: one space-separated string
        ({"scp": "read  write "}, {"read", "write"}),  # Entra ID: scp, a string
        ({"scp": ["read", "write"]}, {"read", "write"}),  # Okta: scp, an array
        ({"scope": "read", "scp": ["write"]}, {"read", "write"}),
        ({"scope": 5, "scp": [1, None, "", "ok"]}, {"ok"}),  # malformed members are no scopes
        ({}, set()),
    ],
)
def test_scopes_are_read_from_both_spellings(claims: dict[str, Any], expected: set[str]) -> None:
    assert scopes_of(claims) == expected


def test_roles_follow_a_dotted_path_into_nested_claims() -> None:
    claims = {"roles": ["admin"], "realm_access": {"roles": ["user", "auditor"]}, "cognito:groups": "ops dev"}
    assert roles_of(claims) == {"admin"}
    assert roles_of(claims, "realm_access.roles") == {"user", "auditor"}
    assert roles_of(claims, "cognito:groups") == {"ops", "dev"}
    assert roles_of(claims, "realm_access.missing") == frozenset()
    assert roles_of(claims, "roles.deeper") == frozenset()  # a list is no object to walk into


def test_a_missing_scope_is_insufficient_scope_naming_what_configuration_required() -> None:
    require_scopes({"scope": "read write"}, ["read"])
    with pytest.raises(InsufficientScopeError) as caught:
        require_scopes({"scope": "read", "secret": "s3cr3t"}, ["write", "admin", "read"])
    error = caught.value
    assert isinstance(error, TokenError)
    assert (error.reason, error.required) == ("insufficient_scope", ("admin", "write"))
    assert "'admin', 'write'" in str(error) and "s3cr3t" not in str(error)


def test_a_missing_role_is_insufficient_scope() -> None:
    require_roles({"realm_access": {"roles": ["user"]}}, ["user"], claim="realm_access.roles")
    with pytest.raises(InsufficientScopeError, match="role"):
        require_roles({"roles": ["user"]}, ["admin"])
