"""Configuration data: frozen msgspec Structs validated on every construction path.

``__post_init__`` runs on construction, ``msgspec.convert``/``decode`` and ``msgspec.structs.replace``,
so an invalid registration cannot exist in memory. Each rule raises :class:`ConfigError` naming the
field, because operators read these messages in deploy logs, not in a debugger.

msgspec checks types when it decodes or converts, but not in ``__init__``; ``__post_init__`` therefore
checks every field against its annotation too, so ``RetryPolicy(jitter="sometimes")`` fails as its
decoded twin does, before any rule reads the value.
"""

from __future__ import annotations

import functools
import re
from typing import Annotated, Any, ClassVar, Final, Literal, TypeVar, get_args, get_origin
from urllib.parse import urlsplit

import msgspec
import msgspec.inspect as mi

from ._errors import ConfigError
from ._issuers import TENANT_ID, TENANT_PLACEHOLDER, is_tenant_id, template_problem

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "MAX_SECONDS",
    "PROVIDER_NAME",
    "PROVIDER_RULES",
    "RETRY_RULES",
    "TENANT_NAME",
    "ProviderConfig",
    "RetryPolicy",
    "decode_config",
]

#: JWS algorithms verify() may ever accept; ``none`` and HS* are absent on purpose (RFC 8725 §3.1).
#: ``Ed25519`` and ``Ed448`` are RFC 9864's fully-specified names, each bound to its own curve;
#: the older polymorphic ``EdDSA`` names either curve. This one constant feeds the default
#: allowlist, the config check, the control plane's field rules and its OpenAPI document.
ASYMMETRIC_ALGORITHMS: Final = frozenset(
    {
        "RS256", "RS384", "RS512",
        "PS256", "PS384", "PS512",
        "ES256", "ES384", "ES512",
        "EdDSA", "Ed25519", "Ed448",
    }
)  # fmt: skip

#: The one home of the name alphabets: names become file names, Redis keys and URL path segments,
#: and the snapshot codec, the control plane and its OpenAPI schema read these same patterns.
TENANT_NAME: Final = re.compile(r"[A-Za-z0-9-]{1,64}")
PROVIDER_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: a hostname's labels: canonical lowercase, IDNA A-labels, no trailing dot (and 253 characters at most)
_HOSTNAME: Final = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*"
#: numeric dates: ``exp``, ``nbf`` and ``iat`` have their own checks, and a string never equals a number
_HOST_RE: Final = re.compile(_HOSTNAME)
_NOT_VALUE_CLAIMS: Final = frozenset({"exp", "nbf", "iat"})
#: Upper bound of every duration: larger values (or inf) only overflow datetime arithmetic later.
MAX_SECONDS: Final = 10 * 365 * 86400.0  # any duration's bound (configuration, leases)
_MAX_RETRY_SECONDS: Final = 3600.0
_NEGATIVE_CACHE_MIN: Final = 1  # negative_cache_ttl: 0 (off), or at least this

_M = msgspec.Meta
_SECONDS: Final = _M(ge=0, le=MAX_SECONDS)


def _entries(entry: Any, **bounds: Any) -> Any:
    return Annotated[tuple[entry, ...], _M(**bounds)]


def _mapping(key: Any, value: Any, **bounds: Any) -> Any:
    return Annotated[dict[key, value], _M(**bounds)]


def _texts(min_length: int, max_length: int) -> Any:
    return Annotated[str, _M(min_length=min_length, max_length=max_length)]


#: Every single-field rule of a registration, declared once as msgspec constraints on the field's type.
#: ``__post_init__`` checks values against them (in its own words, naming the field), and the control
#: plane's OpenAPI schema is generated from them by msgspec. They are not the fields' annotations:
#: msgspec would then refuse a decoded value in its words before ``__post_init__`` could name the rule.
#: Cross-field rules (max_ttl >= min_ttl, say) are ``__post_init__``'s alone; ``extra_json_schema``
#: states in the schema what they imply for one field.
PROVIDER_RULES: Final[dict[str, Any]] = {
    "tenant": Annotated[str, _M(pattern=f"^{TENANT_NAME.pattern}$")],
    "provider": Annotated[str, _M(pattern=f"^{PROVIDER_NAME.pattern}$")],
    "allowed_domains": _entries(Annotated[str, _M(max_length=253, pattern=f"^{_HOSTNAME}$")]),
    "refresh_early": Annotated[float, _M(ge=1, le=MAX_SECONDS)],
    "stale_while_error": Annotated[float, _SECONDS],
    "min_ttl": Annotated[float, _M(ge=30, le=MAX_SECONDS)],
    "max_ttl": Annotated[float, _M(le=MAX_SECONDS, extra_json_schema={"minimum": 30})],  # >= min_ttl >= 30
    "max_response_bytes": Annotated[int, _M(ge=1)],
    "negative_cache_ttl": Annotated[
        float, _M(ge=0, le=MAX_SECONDS, extra_json_schema={"anyOf": [{"const": 0}, {"minimum": _NEGATIVE_CACHE_MIN}]})
    ],
    "max_redirects": Annotated[int, _M(ge=0, le=10)],
    # 32 bytes of base64; __post_init__ decodes the pin, which this pattern implies
    "pinned_spki": _entries(Annotated[str, _M(pattern="^[A-Za-z0-9+/]{43}=$")]),
    "prefetch_jitter": Annotated[float, _SECONDS],
    "unknown_kid_cooldown": Annotated[float, _SECONDS],
    "algorithms": _entries(Annotated[str, _M(extra_json_schema={"enum": sorted(ASYMMETRIC_ALGORITHMS)})], min_length=1)
    | None,
    "max_keys": Annotated[int, _M(ge=1, le=10_000)],
    "required_claims": _entries(_texts(1, 64), max_length=16),
    "accepted_issuers": _entries(_texts(1, 2048), max_length=16),
    "allowed_tenant_ids": _entries(Annotated[str, _M(pattern=f"^{TENANT_ID.pattern}$")], max_length=1000),
    "claim_values": _mapping(
        Annotated[str, _M(min_length=1, max_length=64, extra_json_schema={"not": {"enum": sorted(_NOT_VALUE_CLAIMS)}})],
        _entries(_texts(1, 1024), min_length=1, max_length=100),
        max_length=16,
    ),
    "labels": _mapping(_texts(1, 64), Annotated[str, _M(max_length=256)]),
}
RETRY_RULES: Final[dict[str, Any]] = {
    "max_retries": Annotated[int, _M(ge=0, le=100)],
    "attempt_timeout": Annotated[float, _M(ge=0.1, le=_MAX_RETRY_SECONDS)],
    "initial_backoff": Annotated[float, _M(gt=0, le=_MAX_RETRY_SECONDS)],
    # >= initial_backoff > 0 and >= attempt_timeout >= 0.1: __post_init__'s cross-field rules
    "max_backoff": Annotated[float, _M(le=_MAX_RETRY_SECONDS, extra_json_schema={"exclusiveMinimum": 0})],
    "deadline": Annotated[float, _M(le=_MAX_RETRY_SECONDS, extra_json_schema={"minimum": 0.1})],
}


def _bounds(rule: Any) -> msgspec.Meta:
    """The constraints a rule puts on the value itself (none: an empty Meta)."""
    if get_origin(rule) is Annotated:
        return next((each for each in get_args(rule)[1:] if isinstance(each, msgspec.Meta)), _M())
    return _M()


def _parts(rule: Any) -> tuple[Any, ...]:
    """A rule's inner rules: a tuple's entry, a dict's key and value (Annotated and None stripped)."""
    if get_origin(rule) is Annotated:
        rule = get_args(rule)[0]
    args = tuple(arg for arg in get_args(rule) if arg is not type(None) and arg is not Ellipsis)
    if len(args) == 1 and get_origin(args[0]) is not None and get_origin(rule) is not tuple:
        return _parts(args[0])  # X | None: the rules of X
    return args


def _check_number(field: str, value: float, bounds: msgspec.Meta) -> None:
    """A number against its declared bounds, in the words operators have always read."""
    if bounds.ge is not None and bounds.le is not None and isinstance(bounds.le, int):
        _check(bounds.ge <= value <= bounds.le, field, f"must be in {bounds.ge}..{bounds.le}", value)
        return
    if bounds.le is not None:
        ten_years = " (ten years)" if bounds.le == MAX_SECONDS else ""
        _check(value <= bounds.le, field, f"must be <= {bounds.le:g}{ten_years}", value)
    if bounds.ge is not None:
        _check(value >= bounds.ge, field, f"must be >= {bounds.ge:g}", value)
    if bounds.gt is not None:
        _check(value > bounds.gt, field, f"must be > {bounds.gt:g}", value)


def _check_numbers(config: object, rules: dict[str, Any], prefix: str = "") -> None:
    for name, rule in rules.items():
        value = getattr(config, name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            _check_number(prefix + name, value, _bounds(rule))


def _length(rule: Any, *path: int) -> tuple[int, int]:
    """(min_length, max_length) a rule (or, by ``path``, one of its inner rules) declares."""
    for index in path:
        rule = _parts(rule)[index]
    bounds = _bounds(rule)
    return (bounds.min_length or 0, bounds.max_length if bounds.max_length is not None else 1 << 62)


class _Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    #: prepended to field names in messages: decode errors name a nested struct's fields by their path
    _field_prefix: ClassVar[str] = ""

    def __post_init__(self) -> None:
        _types_of(type(self)).check(self)
        self._check_values()

    def _check_values(self) -> None:
        """The rules beyond types; they run only once every field holds its annotated type."""


def _check(ok: bool, field: str, rule: str, value: object) -> None:
    if not ok:
        raise ConfigError(f"{field} {rule} (got {value!r})")


class _FieldTypes:
    """One config class's field annotations, checked by msgspec in a single call per construction.

    A shadow Struct with the same fields and annotations, but no ``__post_init__``, is converted from
    the config's attributes: msgspec applies exactly the type rules of decoding (bool is not an int, a
    str is not a tuple of str, a Literal holds one of its values), in C, without recursing into the
    config's own ``__post_init__``. Nested config Structs are shadowed as ``Any`` and must be instances:
    converting would turn a dict into one, which decoding does but a Python caller should not rely on.
    """

    __slots__ = ("_annotations", "_coerced", "_nested", "_prefix", "_shadow")

    def __init__(self, cls: type[_Config]) -> None:
        fields = msgspec.structs.fields(cls)
        self._prefix = cls._field_prefix
        self._annotations = {f.name: f.type for f in fields}
        self._nested = tuple((f.name, f.type) for f in fields if _is_struct(f.type))
        plain = [f for f in fields if not _is_struct(f.type)]
        for f in plain:  # a Struct inside a union or container would be built from a dict, unchecked
            if "StructType(" in repr(mi.type_info(f.type)):
                raise TypeError(f"{cls.__name__}.{f.name}: annotate a nested config Struct on its own")
        self._shadow = msgspec.defstruct(
            f"_{cls.__name__}Types", [(f.name, f.type) for f in plain] + [(name, Any) for name, _ in self._nested]
        )
        #: fields whose converted value is a fresh container: a list given for a tuple, a caller's dict
        self._coerced = tuple(f.name for f in plain if _may_coerce(mi.type_info(f.type)))

    def check(self, config: _Config) -> None:
        """Raise ConfigError for the first mistyped field; keep msgspec's copies of containers.

        The copies make a list given for a tuple field the annotated tuple, and keep a caller who later
        mutates the dict or list they passed from changing a validated, frozen config.
        """
        for name, struct in self._nested:
            value = getattr(config, name)
            _check(isinstance(value, struct), self._prefix + name, f"must be a {struct.__name__}", type(value).__name__)
        try:
            typed = msgspec.convert(config, self._shadow, from_attributes=True, strict=True)
        except msgspec.ValidationError as exc:
            raise self._explain(config) from exc
        for name in self._coerced:
            msgspec.structs.force_setattr(config, name, getattr(typed, name))

    def _explain(self, config: _Config) -> ConfigError:
        """The error for the first field msgspec refuses on its own, in ``_check``'s words."""
        for name, annotation in self._annotations.items():
            value = getattr(config, name)
            try:
                msgspec.convert(value, annotation, strict=True)
            except msgspec.ValidationError:
                return ConfigError(
                    f"{self._prefix}{name} must be {_describe(mi.type_info(annotation))} (got {value!r})"
                )
        return ConfigError(f"invalid {type(config).__name__}")  # unreachable: some field failed above


@functools.cache
def _types_of(cls: type[_Config]) -> _FieldTypes:
    return _FieldTypes(cls)


def _is_struct(annotation: object) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, msgspec.Struct)


def _may_coerce(info: mi.Type) -> bool:
    if isinstance(info, mi.UnionType):
        return any(_may_coerce(each) for each in info.types)
    scalars = (mi.StrType, mi.IntType, mi.FloatType, mi.BoolType, mi.NoneType, mi.LiteralType)
    return not isinstance(info, scalars)  # an int stays as given in a float field: it is one to typing


def _describe(info: mi.Type) -> str:
    """A field's type in an operator's words: ``a tuple of str or None``, ``one of 'none', 'full'``."""
    if isinstance(info, mi.UnionType):
        return " or ".join(_describe(each) for each in info.types)
    if isinstance(info, mi.LiteralType):
        return "one of " + ", ".join(repr(value) for value in info.values)
    if isinstance(info, mi.VarTupleType):
        return f"a tuple of {_noun(info.item_type)}"
    if isinstance(info, mi.DictType):
        return f"a dict of {_noun(info.key_type)} to {_noun(info.value_type)}"
    if isinstance(info, mi.NoneType):
        return "None"
    if isinstance(info, mi.FloatType):
        return "a number"
    noun = _noun(info)
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def _noun(info: mi.Type) -> str:
    """The Python name of a type, as a caller writes it in an annotation."""
    if isinstance(info, (mi.StructType, mi.EnumType)):
        return info.cls.__name__
    return _NOUNS.get(type(info), type(info).__name__.removesuffix("Type").lower())


_NOUNS: Final[dict[type[mi.Type], str]] = {
    mi.StrType: "str", mi.IntType: "int", mi.FloatType: "float", mi.BoolType: "bool"
}  # fmt: skip


class RetryPolicy(_Config, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How one refresh retries transient failures.

    ``deadline`` bounds the whole sequence including backoff sleeps; ``attempt_timeout`` bounds one
    HTTP attempt from connect to the last body byte, so a slow-drip server cannot hold a fetch.
    """

    _field_prefix: ClassVar[str] = "retry."

    max_retries: int = 2
    attempt_timeout: float = 3.0
    initial_backoff: float = 0.25
    max_backoff: float = 2.0
    deadline: float = 8.0
    jitter: Literal["none", "full", "decorrelated"] = "full"

    def _check_values(self) -> None:
        _check_numbers(self, RETRY_RULES, "retry.")
        _check(
            self.max_backoff >= self.initial_backoff,
            "retry.max_backoff",
            "must be >= initial_backoff",
            self.max_backoff,
        )
        _check(
            self.deadline >= self.attempt_timeout,
            "retry.deadline",
            "must be >= attempt_timeout",
            self.deadline,
        )


def _check_template(field: str, issuer: str) -> None:
    problem = template_problem(issuer)
    _check(problem is None, field, problem or "", issuer)


def _check_url(field: str, url: str, require_https: bool) -> None:
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port
    except ValueError as exc:
        raise ConfigError(f"{field} is not a valid URL ({url!r}): {exc}") from exc
    _check(parts.scheme in ("http", "https") and bool(host), field, "must be an absolute http(s) URL with a host", url)
    _check(not require_https or parts.scheme == "https", field, "must use https (require_https is set)", url)
    _check(parts.username is None and parts.password is None, field, "must not carry userinfo", url)
    _check(not parts.fragment, field, "must not carry a fragment", url)


class ProviderConfig(_Config, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One tenant's registration of one identity provider's JWKS."""

    tenant: str
    provider: str
    jwks_url: str | None = None
    issuer: str | None = None
    require_https: bool = True
    allowed_domains: tuple[str, ...] = ()
    refresh_early: float = 30.0
    stale_while_error: float = 60.0
    min_ttl: float = 30.0
    max_ttl: float = 86400.0
    max_response_bytes: int = 1_048_576
    negative_cache_ttl: float = 0.0
    max_redirects: int = 3
    pinned_spki: tuple[str, ...] = ()
    prefetch_jitter: float = 5.0
    unknown_kid_cooldown: float = 30.0
    algorithms: tuple[str, ...] | None = None
    audience: str | None = None
    #: further ``iss`` values verify() accepts besides ``issuer`` (Google's bare ``accounts.google.com``)
    accepted_issuers: tuple[str, ...] = ()
    #: when set, a token's ``tid`` must be one of these (multi-tenant issuers: which tenants get in)
    allowed_tenant_ids: tuple[str, ...] = ()
    #: claims verify() requires to be present (e.g. ``("exp",)``: a token without ``exp`` never expires)
    required_claims: tuple[str, ...] = ()
    #: claim name -> accepted values: the claim must be present and hold one of them (Cognito ``client_id``)
    claim_values: dict[str, tuple[str, ...]] = msgspec.field(default_factory=dict)
    max_keys: int = 100
    retry: RetryPolicy = msgspec.field(default_factory=RetryPolicy)
    labels: dict[str, str] = msgspec.field(default_factory=dict)

    def _check_values(self) -> None:
        _check(
            TENANT_NAME.fullmatch(self.tenant) is not None, "tenant", "must be 1-64 chars of [A-Za-z0-9-]", self.tenant
        )
        _check(
            PROVIDER_NAME.fullmatch(self.provider) is not None,
            "provider",
            "must be 1-64 chars of [A-Za-z0-9_-]",
            self.provider,
        )
        _check(self.jwks_url is not None or self.issuer is not None, "jwks_url", "or issuer is required", None)
        if self.jwks_url is not None:
            _check_url("jwks_url", self.jwks_url, self.require_https)
        if self.issuer is not None:
            _check_url("issuer", self.issuer, self.require_https)
            _check_template("issuer", self.issuer)
            _check(
                self.jwks_url is not None or TENANT_PLACEHOLDER not in self.issuer,
                "issuer",
                f"with {TENANT_PLACEHOLDER} needs jwks_url (discovery cannot be fetched from a template; "
                "register the multi-tenant endpoint, e.g. .../common/v2.0, to use discovery)",
                self.issuer,
            )
        rules = PROVIDER_RULES
        host_chars = _length(rules["allowed_domains"], 0)[1]
        for domain in self.allowed_domains:
            _check(
                len(domain) <= host_chars and _HOST_RE.fullmatch(domain) is not None,
                "allowed_domains",
                "entries must be canonical lowercase hostnames (IDNA A-labels, no trailing dot)",
                domain,
            )
        self._check_times()
        _check_numbers(self, {name: rules[name] for name in ("max_response_bytes", "max_redirects")})
        for pin in self.pinned_spki:
            _check(_is_sha256_b64(pin), "pinned_spki", "entries must be base64 SHA-256 digests", pin)
        if self.algorithms is not None:
            _check(len(self.algorithms) > 0, "algorithms", "must not be empty (use None for the default)", ())
            for alg in self.algorithms:
                _check(alg in ASYMMETRIC_ALGORITHMS, "algorithms", "entries must be asymmetric JWS algorithms", alg)
        self._check_claim_rules()
        _check_numbers(self, {"max_keys": rules["max_keys"]})
        key_chars, value_chars = _length(rules["labels"], 0), _length(rules["labels"], 1)
        for key, value in self.labels.items():
            _check(
                key_chars[0] <= len(key) <= key_chars[1] and len(value) <= value_chars[1],
                "labels",
                f"keys {key_chars[0]}-{key_chars[1]} chars, values <= {value_chars[1]} chars",
                key,
            )

    def _check_claim_rules(self) -> None:
        rules = PROVIDER_RULES
        _, most = _length(rules["accepted_issuers"])
        _check(
            len(self.accepted_issuers) <= most,
            "accepted_issuers",
            f"at most {most} entries",
            len(self.accepted_issuers),
        )
        fewest, most = _length(rules["accepted_issuers"], 0)
        for issuer in self.accepted_issuers:
            _check(
                fewest <= len(issuer) <= most, "accepted_issuers", f"entries must be {fewest}-{most} characters", issuer
            )
            _check_template("accepted_issuers", issuer)
        _, most = _length(rules["allowed_tenant_ids"])
        _check(
            len(self.allowed_tenant_ids) <= most,
            "allowed_tenant_ids",
            f"at most {most} entries",
            len(self.allowed_tenant_ids),
        )
        for tenant_id in self.allowed_tenant_ids:
            _check(
                is_tenant_id(tenant_id),
                "allowed_tenant_ids",
                "entries must be tenant ids: 1-64 chars of [A-Za-z0-9_-], starting with a letter or digit",
                tenant_id,
            )
        _, most = _length(rules["required_claims"])
        _check(len(self.required_claims) <= most, "required_claims", f"at most {most} entries", None)
        fewest, most = _length(rules["required_claims"], 0)
        for claim in self.required_claims:
            _check(
                fewest <= len(claim) <= most, "required_claims", f"entries must be {fewest}-{most} characters", claim
            )
        self._check_claim_values()

    def _check_claim_values(self) -> None:
        rule = PROVIDER_RULES["claim_values"]
        (_, most), names, values, texts = _length(rule), _length(rule, 0), _length(rule, 1), _length(rule, 1, 0)
        _check(len(self.claim_values) <= most, "claim_values", f"at most {most} claims", len(self.claim_values))
        for claim, accepted in self.claim_values.items():
            _check(
                names[0] <= len(claim) <= names[1],
                "claim_values",
                f"claim names must be {names[0]}-{names[1]} characters",
                claim,
            )
            _check(claim not in _NOT_VALUE_CLAIMS, "claim_values", "cannot check exp, nbf or iat", claim)
            _check(
                values[0] <= len(accepted) <= values[1],
                "claim_values",
                f"must list {values[0]}-{values[1]} accepted values per claim",
                claim,
            )
            for value in accepted:
                _check(
                    texts[0] <= len(value) <= texts[1],
                    "claim_values",
                    f"values must be {texts[0]}-{texts[1]} characters",
                    value,
                )

    def _check_times(self) -> None:
        rules = PROVIDER_RULES
        _check_numbers(
            self,
            {
                name: rules[name]
                for name in (
                    "refresh_early", "stale_while_error", "min_ttl", "max_ttl",
                    "negative_cache_ttl", "prefetch_jitter", "unknown_kid_cooldown",
                )
            },
        )  # fmt: skip
        _check(self.max_ttl >= self.min_ttl, "max_ttl", "must be >= min_ttl", self.max_ttl)
        _check(self.refresh_early < self.max_ttl, "refresh_early", "must be >= 1 and < max_ttl", self.refresh_early)
        _check(
            self.negative_cache_ttl == 0 or self.negative_cache_ttl >= _NEGATIVE_CACHE_MIN,
            "negative_cache_ttl",
            f"must be 0 (off) or >= {_NEGATIVE_CACHE_MIN:g}",
            self.negative_cache_ttl,
        )

    @property
    def key(self) -> tuple[str, str]:
        """The registry key of this registration."""
        return (self.tenant, self.provider)


def _is_sha256_b64(pin: str) -> bool:
    import base64
    import binascii

    try:
        return len(base64.b64decode(pin, validate=True)) == 32
    except (binascii.Error, ValueError):
        return False


_T = TypeVar("_T", RetryPolicy, ProviderConfig)


def decode_config(data: Any, type: type[_T]) -> _T:  # noqa: A002
    """Convert a dict (from JSON/TOML/YAML) into a config Struct, mapping msgspec errors to ConfigError."""
    try:
        return msgspec.convert(data, type=type, strict=False)
    except msgspec.ValidationError as exc:  # a ConfigError from __post_init__ passes through msgspec as itself
        raise ConfigError(f"invalid {type.__name__}: {exc}") from exc
