"""Registration bodies for the control plane: decode, and turn every refusal into RFC 9457 field errors.

Operators fix registrations from these messages, so each refusal carries the JSON Pointer of the
member at fault, whether msgspec (types, unknown fields) or ``__post_init__`` (rules) refused it.
The JSON Schema forms of those rules live here too, beside the decoder they describe.
"""

from __future__ import annotations

import re
from typing import Any, Final
from urllib.parse import quote

import msgspec

from .._config import (
    _MAX_ACCEPTED_ISSUERS,
    _MAX_CLAIM_VALUE_CHARS,
    _MAX_CLAIM_VALUES,
    _MAX_ISSUER_CHARS,
    _MAX_KEYS_CAP,
    _MAX_TENANT_IDS,
    _NOT_VALUE_CLAIMS,
    ASYMMETRIC_ALGORITHMS,
    PROVIDER_NAME,
    TENANT_NAME,
    ProviderConfig,
)
from .._errors import ConfigError
from .._http._policy import _MAX_URL_CHARS
from .._issuers import _TENANT_ID
from .._jose._nesting import json_problem
from ._plumbing import FieldError, HttpProblem

__all__ = [
    "REGISTRATION_RULES",
    "RETRY_RULES",
    "decode_registration",
    "invalid_registration",
    "registration_defaults",
]

_AT_PATH: Final = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_NAMED_FIELD: Final = re.compile(r"(?:missing required|unknown) field `(?P<name>[^`]+)`")
_PATH_PART: Final = re.compile(r"\.(?P<name>[A-Za-z_][A-Za-z0-9_]*)|\[(?P<index>\d+|\.\.\.)\]")
_LEADING_FIELD: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_TOP_FIELDS: Final = frozenset(ProviderConfig.__struct_fields__)


def _number(**bounds: float) -> dict[str, Any]:
    return {"type": "number", **bounds}


def _integer(**bounds: int) -> dict[str, Any]:
    return {"type": "integer", **bounds}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


# Every rule of ProviderConfig/RetryPolicy (and of the registry's URL check) that one field can state
# in JSON Schema, so clients and fuzzers see them; each must be implied by the code, never stricter,
# or a body the schema calls invalid would be accepted. Cross-field rules (max_ttl >= min_ttl,
# https under require_https, hosts inside allowed_domains, a body tenant equal to the path's) remain
# 422s only the server can explain.
_URL: Final = {"type": "string", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://", "maxLength": _MAX_URL_CHARS}
_HOSTNAME: Final = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
REGISTRATION_RULES: Final[dict[str, dict[str, Any]]] = {
    "tenant": {"type": "string", "pattern": f"^{TENANT_NAME.pattern}$"},
    "provider": {"type": "string", "pattern": f"^{PROVIDER_NAME.pattern}$"},
    "jwks_url": _nullable(_URL),
    "issuer": _nullable(_URL),
    "allowed_domains": {"type": "array", "items": {"type": "string", "maxLength": 253, "pattern": _HOSTNAME}},
    "refresh_early": _number(minimum=1),
    "stale_while_error": _number(minimum=0),
    "min_ttl": _number(minimum=30),
    "max_ttl": _number(minimum=30),  # >= min_ttl >= 30
    "max_response_bytes": _integer(minimum=1),
    "negative_cache_ttl": {"type": "number", "anyOf": [{"const": 0}, {"minimum": 1}]},
    "max_redirects": _integer(minimum=0, maximum=10),
    "pinned_spki": {"type": "array", "items": {"type": "string", "pattern": "^[A-Za-z0-9+/]{43}=$"}},  # 32 bytes
    "prefetch_jitter": _number(minimum=0),
    "unknown_kid_cooldown": _number(minimum=0),
    "algorithms": _nullable({"type": "array", "minItems": 1, "items": {"enum": sorted(ASYMMETRIC_ALGORITHMS)}}),
    "max_keys": _integer(minimum=1, maximum=_MAX_KEYS_CAP),
    "required_claims": {"type": "array", "maxItems": 16, "items": {"type": "string", "minLength": 1, "maxLength": 64}},
    "accepted_issuers": {
        "type": "array",
        "maxItems": _MAX_ACCEPTED_ISSUERS,
        "items": {"type": "string", "minLength": 1, "maxLength": _MAX_ISSUER_CHARS},
    },
    "allowed_tenant_ids": {
        "type": "array",
        "maxItems": _MAX_TENANT_IDS,
        "items": {"type": "string", "pattern": f"^{_TENANT_ID.pattern}$"},
    },
    "claim_values": {
        "type": "object",
        "maxProperties": 16,
        "propertyNames": {"minLength": 1, "maxLength": 64, "not": {"enum": sorted(_NOT_VALUE_CLAIMS)}},
        "additionalProperties": {
            "type": "array",
            "minItems": 1,
            "maxItems": _MAX_CLAIM_VALUES,
            "items": {"type": "string", "minLength": 1, "maxLength": _MAX_CLAIM_VALUE_CHARS},
        },
    },
    "labels": {
        "type": "object",
        "propertyNames": {"minLength": 1, "maxLength": 64},
        "additionalProperties": {"type": "string", "maxLength": 256},
    },
}
RETRY_RULES: Final[dict[str, dict[str, Any]]] = {
    "max_retries": _integer(minimum=0, maximum=100),
    "attempt_timeout": _number(minimum=0.1),
    "initial_backoff": _number(exclusiveMinimum=0),
    "max_backoff": _number(exclusiveMinimum=0),  # >= initial_backoff > 0
    "deadline": _number(minimum=0.1),  # >= attempt_timeout >= 0.1
}


def registration_defaults(*, require_https: bool) -> dict[str, Any]:
    """What a registration leaves out and takes from the server's registry rather than from ProviderConfig.

    One meaning for a registration wherever it comes from (a ``[[providers]]`` table of the serve
    file or a PUT body): under a registry with ``require_https = false`` an http registration need
    not repeat it. The other floors (``allowed_domains``, ``allow_private_networks``) and defaults
    (``default_refresh_early``, ``default_stale_while_error``) are the Registry's own, applied by
    ``register`` to both alike.
    """
    return {"require_https": require_https}


def decode_registration(
    body: bytes, tenant: str, provider: str, defaults: dict[str, Any] | None = None
) -> ProviderConfig:
    """A ProviderConfig from a PUT body; tenant and provider come from the path (and must match if given).

    ``defaults`` (:func:`registration_defaults`) fill the fields the body leaves out.
    """
    problem = json_problem(body)
    if problem is not None:
        raise HttpProblem(400, f"the body {problem}")
    try:
        data: Any = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise HttpProblem(400, f"the body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise _refused([FieldError(detail="the body must be a JSON object", pointer="#", field="")])
    for name, value in (("tenant", tenant), ("provider", provider)):
        given = data.setdefault(name, value)
        if given != value:
            detail = f"{name} must match the path ({value!r}) or be left out"
            raise _refused([FieldError(detail=detail, pointer=f"#/{name}", field=name)])
    for name, default in (defaults or {}).items():
        data.setdefault(name, default)
    try:
        return msgspec.convert(data, type=ProviderConfig)
    except msgspec.ValidationError as exc:
        raise _refused([_from_validation(exc)]) from exc
    except ConfigError as exc:
        raise invalid_registration(exc) from exc


def invalid_registration(exc: ConfigError) -> HttpProblem:
    """A 422 for a ConfigError, whose message starts with the field's dotted name."""
    message = str(exc)
    match = _LEADING_FIELD.match(message)
    field = match.group(0) if match is not None and match.group(0).split(".")[0] in _TOP_FIELDS else ""
    return _refused([FieldError(detail=message, pointer=_pointer(field.split(".") if field else []), field=field)])


def _from_validation(exc: msgspec.ValidationError) -> FieldError:
    message = str(exc)
    names: list[str] = []
    tokens: list[str] = []
    at = _AT_PATH.search(message)
    if at is not None:
        for part in _PATH_PART.finditer(at.group("path")):
            if part.group("name") is not None:
                names.append(part.group("name"))
                tokens.append(part.group("name"))
            elif part.group("index") != "...":  # a dict key msgspec does not name
                tokens.append(part.group("index"))
        message = message[: at.start()]
    named = _NAMED_FIELD.search(message)
    if named is not None:  # missing and unknown fields are named in the message, not the path
        names.append(named.group("name"))
        tokens.append(named.group("name"))
    return FieldError(detail=message, pointer=_pointer(tokens), field=".".join(names))


def _pointer(tokens: list[str]) -> str:
    """A JSON Pointer (RFC 6901) in URI fragment form, as RFC 9457's examples use."""
    escaped = (token.replace("~", "~0").replace("/", "~1") for token in tokens)
    return "#" + "".join("/" + quote(token, safe="~!$&'()*+,;=:@") for token in escaped)


def _refused(errors: list[FieldError]) -> HttpProblem:
    summary = "; ".join(e.detail if e.field in e.detail else f"{e.field or 'body'}: {e.detail}" for e in errors)
    return HttpProblem(422, f"invalid registration: {summary}", kind="invalid-registration", errors=errors)
