"""The pieces OpenAPI operations are written from: references, headers, responses, path parameters.

Each route declares its operation beside its handler (``_routes``) out of these; ``_openapi``
assembles the document.
"""

from __future__ import annotations

from typing import Any, Final

from ._fields import REGISTRATION_RULES
from ._plumbing import JSON, PROBLEM_JSON

__all__ = [
    "AFTER_PUT",
    "CACHE_CONTROL",
    "CLOSED",
    "ETAG",
    "EXAMPLE_REGISTRATION",
    "LOCATION",
    "RETRY_AFTER",
    "UNKNOWN",
    "WWW_AUTHENTICATE",
    "header",
    "json",
    "links",
    "path_params",
    "problem",
    "ref",
]

REF: Final = "#/components/schemas/{name}"


def ref(name: str) -> dict[str, Any]:
    return {"$ref": REF.format(name=name)}


def header(description: str, **schema: Any) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "string", **schema}}


ETAG: Final = header("Strong validator: a hash of this exact body (the `kid` filter included).")
CACHE_CONTROL: Final = header(
    "`public` (`private` with protect_reads) `max-age` = seconds the set stays fresh in this cache; "
    "`no-cache` while stale keys are served."
)
RETRY_AFTER: Final = header("Seconds until the cache tries the identity provider again.", pattern="^[0-9]+$")
LOCATION: Final = header("The status resource of this provider.")
WWW_AUTHENTICATE: Final = header('`Bearer realm="jwks-cache"`, with `error="invalid_token"` for a wrong token.')


def json(
    description: str, schema: dict[str, Any], *, headers: dict[str, Any] | None = None, media_type: str = JSON
) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {media_type: {"schema": schema}}}
    if headers:
        response["headers"] = dict(headers)
    return response


def problem(description: str, *, schema: str = "Problem", headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return json(description, ref(schema), headers=headers, media_type=PROBLEM_JSON)


def path_params() -> list[dict[str, Any]]:
    examples = {"tenant": "acme", "provider": "login"}
    return [
        {"name": name, "in": "path", "required": True, "schema": dict(REGISTRATION_RULES[name]), "example": example}
        for name, example in examples.items()
    ]


CLOSED: Final = "The registry is closed."
UNKNOWN: Final = "No provider is registered under this tenant and name."


def links(*operation_ids: str) -> dict[str, Any]:
    """OpenAPI links: what a client (or a stateful tester) can call next on the same provider."""
    params = {"tenant": "$request.path.tenant", "provider": "$request.path.provider"}
    return {op: {"operationId": op, "parameters": dict(params)} for op in operation_ids}


EXAMPLE_REGISTRATION: Final = {
    "jwks_url": "https://login.example.com/.well-known/jwks.json",
    "labels": {"team": "payments"},
}
AFTER_PUT: Final = ("getJwks", "getProviderStatus", "refreshProvider", "deleteProvider")
