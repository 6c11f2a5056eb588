"""JWK Set -> key table: key hygiene, and the only module that imports joserfc.

A JWKS is attacker-adjacent input (a compromised CDN, a careless IdP admin, a proxy on an unpinned
hop), so a document is refused as a whole only when it is not a JWK Set at all; each key is then
judged on its own and a bad one is skipped with a reason, because one odd key must not take a
tenant's logins down (RFC 7517 §5: "implementations SHOULD ignore JWKs ... they do not understand").

Keys are served only when they can verify and nothing else: public asymmetric signature keys of a
known type, curve and size whose declared ``alg`` fits them. Duplicate ``kid`` values are ambiguous
(which key did the IdP mean?), so none of the duplicates is served.
"""

from __future__ import annotations

import binascii
import json
import re
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, Final, NamedTuple, TypeAlias

import msgspec
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, JWKRegistry, Key, KeySet, OKPKey, RSAKey

from .._config import ASYMMETRIC_ALGORITHMS
from .._errors import InvalidJwksError
from ._nesting import json_problem

__all__ = [
    "ALLOWED_DEFAULT",
    "Key",
    "KeyEntry",
    "KeySet",
    "KeyTable",
    "SkippedKey",
    "TableCache",
    "key_fits_alg",
    "misfit",
    "parse_jwks",
]

#: Algorithms a token may ever use; ``none`` and HS* are absent (RFC 8725 §3.1, §3.2). Every
#: asymmetric algorithm is in, the fully-specified ``Ed25519`` and ``Ed448`` too: each is bound to
#: its key's type and curve (:func:`key_fits_alg`), so allowing one more name cannot let a key
#: verify under an algorithm it was not made for.
ALLOWED_DEFAULT: Final[frozenset[str]] = ASYMMETRIC_ALGORITHMS

# alg -> (kty, curves or None). ES256K is left out: nobody we serve signs with it, and fewer
# curves means fewer ways for a key to mean two things.
_ALG_KEYS: Final[dict[str, tuple[str, frozenset[str] | None]]] = {
    **{f"{p}{n}": ("RSA", None) for p in ("RS", "PS") for n in ("256", "384", "512")},
    "ES256": ("EC", frozenset({"P-256"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),  # polymorphic: the key's crv decides
    # RFC 9864 fully-specified names: each names one curve
    "Ed25519": ("OKP", frozenset({"Ed25519"})),
    "Ed448": ("OKP", frozenset({"Ed448"})),
}
#: names of one signature scheme: a key declaring one verifies tokens of another when its curve fits
_EDDSA_NAMES: Final = frozenset({"EdDSA", "Ed25519", "Ed448"})
_CURVES: Final[dict[str, frozenset[str]]] = {
    "EC": frozenset({"P-256", "P-384", "P-521"}),
    "OKP": frozenset({"Ed25519", "Ed448"}),
}
_MATERIAL: Final[dict[str, tuple[str, ...]]] = {"RSA": ("n", "e"), "EC": ("x", "y"), "OKP": ("x",)}
_COMMON_MEMBERS: Final = ("kty", "kid", "use", "key_ops", "alg", "x5c", "x5t", "x5t#S256")
_SERVED_MEMBERS: Final = {
    (kty, curved): (*_COMMON_MEMBERS, *(("crv",) if curved else ()), *material)
    for kty, material in _MATERIAL.items()
    for curved in (False, True)
}
#: members only joserfc's validator judges (the x5* types); without them it is skipped
_JOSERFC_CHECKED: Final = frozenset({"x5c", "x5t", "x5t#S256"})
_PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_EC_CURVES: Final[dict[str, ec.EllipticCurve]] = {
    "P-256": ec.SECP256R1(),
    "P-384": ec.SECP384R1(),
    "P-521": ec.SECP521R1(),
}
_JOSE_TYPES: Final = {"RSA": RSAKey, "EC": ECKey, "OKP": OKPKey}
#: canonical objects for the names a table stores once per key
_NAMES: Final[dict[str | None, str]] = {
    name: name for name in (*_ALG_KEYS, *_MATERIAL, "P-256", "P-384", "P-521", "Ed25519", "Ed448")
}
_RSA_MIN_BITS: Final = 2048
_RSA_MAX_BITS: Final = 16384  # bigger moduli only make every verify slower
_MAX_STRING_CHARS: Final = 16 * 1024
_MAX_INT: Final = 2**63
_CANDIDATE_CAP: Final = 10  # kid-less tokens try at most this many keys (signature checks are CPU)
B64URL_CHARS: Final = re.compile(rb"[A-Za-z0-9_-]*")


class KeyEntry(msgspec.Struct, kw_only=True, gc=False, repr_omit_defaults=True):
    """One servable key; ``kid`` is the published one, never joserfc's generated thumbprint.

    Its key objects (joserfc's and cryptography's) are made on first use, not at parse time: a
    provider typically signs with one of its five keys, and an RSA key object costs about a
    kilobyte of OpenSSL memory, so ten thousand tenants would otherwise hold fifty thousand of them
    (and pay for making them on every restore). Parsing already judged the key exactly as making it
    would, so making it later cannot fail. Until then the entry holds only its index in ``body``.

    ``gc=False``: the garbage collector never scans entries (tens of thousands after a restore),
    which is safe because nothing an entry holds refers back to it.
    """

    index: int  # position in the document's "keys" array
    kid: str | None
    kty: str
    alg: str | None
    crv: str | None
    body: bytes  # the document it came from (shared with its table, not a copy)
    #: the key's own ``issuer`` member (Entra ID publishes one, often ``{tenantid}``-templated): the key
    #: verifies only that issuer's tokens. None: the key is not restricted to an issuer
    issuer: str | None = None
    _jwk: Key | None = None  # set by the first use of :attr:`jwk`
    _verifier: object | None = None

    def __repr__(self) -> str:
        return f"KeyEntry(kid={self.kid!r}, kty={self.kty!r}, alg={self.alg!r}, crv={self.crv!r})"

    @property
    def jwk(self) -> Key:
        """The joserfc key (public members only), made on first use."""
        jwk = self._jwk
        return jwk if jwk is not None else self._make()[1]

    @property
    def verifier(self) -> object:
        """The cryptography public key object, made on first use."""
        verifier = self._verifier
        return verifier if verifier is not None else self._make()[0]

    def _make(self) -> tuple[object, Key]:
        # the body passed the strict decode when parsed: msgspec alone gives the same tree
        raw = msgspec.json.decode(self.body)["keys"][self.index]
        material = _check_material(raw, self.kty)
        verifier = _public_key(self.kty, self.crv, material)
        parameters = _parameters(raw)
        # the entry holds kid and alg already (alg interned): the key object shares those strings
        # instead of keeping copies just decoded, which ten thousand providers would multiply
        if self.kid is not None:
            parameters["kid"] = self.kid
        if self.alg is not None:
            parameters["alg"] = self.alg
        if parameters.get("use") == "sig":
            parameters["use"] = "sig"  # the interned literal
        jwk: Key = _JOSE_TYPES[self.kty].import_key(verifier, parameters=parameters)  # type: ignore[attr-defined]
        self._verifier, self._jwk = verifier, jwk
        return verifier, jwk


class SkippedKey(msgspec.Struct, frozen=True):
    """A JWK that is never served, and why (for logs and status)."""

    index: int
    kid: str | None
    reason: str


def key_fits_alg(entry: KeyEntry, alg: str) -> bool:
    """Whether ``entry`` may verify a token signed with ``alg`` (kty, curve and declared alg agree)."""
    rule = _ALG_KEYS.get(alg)
    if rule is None or entry.kty != rule[0]:
        return False
    if rule[1] is not None and entry.crv not in rule[1]:
        return False
    if entry.alg is None or entry.alg == alg:
        return True
    return entry.alg in _EDDSA_NAMES and alg in _EDDSA_NAMES


def misfit(entry: KeyEntry, alg: str) -> str:
    """Why ``entry`` cannot verify an ``alg`` token, for an error message: "is for PS256, not RS256".

    Says what the key is for (its declared ``alg``, else its type and curve), which the JWKS
    publishes anyway. ``alg`` is shown bare only when it is a name we know; anything else (a
    caller's ``get_key(alg=...)``) is quoted and cut short.
    """
    wanted = alg if alg in _ALG_KEYS else _show(alg)
    if entry.alg is not None:
        return f"is for {entry.alg}, not {wanted}"
    kind = entry.kty if entry.crv is None else f"{entry.kty} {entry.crv}"
    return f"is an {kind} key, not one for {wanted}"


class KeyTable:
    """The usable keys of one JWK Set; immutable after construction, shared by every lookup.

    It keeps the document's bytes rather than a parsed tree: the bytes are what snapshots store
    anyway and are several times smaller than the tree, and the public members, the joserfc
    ``KeySet`` and each key object are derived from them on the (cold) paths that need them.
    """

    __slots__ = ("__weakref__", "_by_alg", "_key_set", "body", "by_kid", "entries", "key_ids", "made", "skipped")

    def __init__(self, entries: Sequence[KeyEntry], skipped: Sequence[SkippedKey], body: bytes) -> None:
        self.body = body
        self.entries: tuple[KeyEntry, ...] = tuple(entries)
        self.skipped: tuple[SkippedKey, ...] = tuple(skipped) if skipped else ()
        # a plain dict, not a MappingProxyType: the warm lookup path reads it on every call and the
        # proxy doubles that cost; the table is never handed out, so nobody can mutate it
        self.by_kid: dict[str, KeyEntry] = {e.kid: e for e in self.entries if e.kid is not None}
        self.key_ids: tuple[str, ...] = tuple(self.by_kid)
        #: kid -> joserfc key, for the keys made so far: the warm lookup path's one dict read
        self.made: dict[str, Key] = {}
        self._key_set: KeySet | None = None  # built on first resolve(): most tables never need it
        self._by_alg: dict[str, tuple[KeyEntry, ...]] | None = None  # built on the first kid-less token

    def jwk(self, entry: KeyEntry) -> Key:
        """``entry``'s joserfc key, made now if need be and then found by the warm path."""
        jwk = entry.jwk
        # only this table's own entry goes on its warm path (tables are shared between tenants)
        if entry.kid is not None and self.by_kid.get(entry.kid) is entry:
            self.made[entry.kid] = jwk
        return jwk

    def public_jwks(self) -> dict[str, Any]:
        """The served keys as a JWK Set of public members only (a fresh copy the caller may keep)."""
        raw_keys = msgspec.json.decode(self.body)["keys"]  # strictly decoded once already, at parse
        return {"keys": [_public_members(raw_keys[e.index], e.kty, e.crv) for e in self.entries]}

    def key_set(self) -> KeySet:
        """A joserfc KeySet of the served keys, for ``Registry.resolve`` (built once, on first use).

        Its key objects are twins of ``entries[i].jwk``: joserfc's ``KeySet`` writes thumbprint
        kids into kid-less keys, which must not leak into ``KeyEntry.jwk``.
        """
        if self._key_set is None:
            self._key_set = KeySet([JWKRegistry.import_key(_for_joserfc(m)) for m in self.public_jwks()["keys"]])
        return self._key_set

    def candidates(self, kid: str | None, alg: str) -> tuple[KeyEntry, ...]:
        """Keys that may verify a token with this ``kid`` and ``alg``.

        A token without ``kid`` gets every fitting key, bounded so a kid-less token cannot make us
        run a hundred signature checks.
        """
        if kid is None:
            by_alg = self._by_alg
            if by_alg is None:
                by_alg = self._by_alg = {
                    a: tuple(e for e in self.entries if key_fits_alg(e, a))[:_CANDIDATE_CAP] for a in _ALG_KEYS
                }
            return by_alg.get(alg, ())
        entry = self.by_kid.get(kid)
        return (entry,) if entry is not None and key_fits_alg(entry, alg) else ()


class TableCache:
    """Identical documents parse to one shared, immutable table.

    Tenants of one identity provider (and restored snapshots of it) then hold one set of key
    objects instead of one each: memory and restore time follow the number of distinct key sets,
    not of registrations. Weak values, so a set no provider serves any more is freed.
    """

    __slots__ = ("_tables",)

    def __init__(self) -> None:
        self._tables: weakref.WeakValueDictionary[tuple[bytes, int], KeyTable] = weakref.WeakValueDictionary()

    def parse(self, body: bytes, *, url: str, max_keys: int) -> KeyTable:
        """:func:`parse_jwks`, or the table an identical body already produced."""
        key = (body, max_keys)
        table = self._tables.get(key)
        if table is None:
            table = parse_jwks(body, url=url, max_keys=max_keys)
            self._tables[key] = table
        return table


# --- strict JSON, shared with _jws -------------------------------------------------------------


class JsonProblem(Exception):
    """Private signal from the strict decoder: ``path`` and a short message, no input values."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class _Duplicated(dict[str, Any]):
    """An object that repeated a member name; the walk reports it with its path."""


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    return _Duplicated(obj) if len(obj) != len(pairs) else obj


def decode_json(data: bytes, *, max_string: int = _MAX_STRING_CHARS) -> Any:
    """Decode strict JSON with no duplicate member names, no deep nesting, no huge numbers or strings.

    msgspec is the strict RFC 8259 parser (invalid UTF-8, lone surrogates, NaN, out-of-range numbers
    are errors), but it keeps the last of duplicate members silently, and two parsers disagreeing on
    which ``kid``/``alg`` counts is how key confusion starts. ``json``'s ``object_pairs_hook`` is the
    only stdlib way to see every member name, so it re-reads the (size-capped) input, but only when
    a duplicate is possible: every member name in the text is followed by a colon, so with no more
    colons than decoded members no name can repeat. Typical token headers skip the second pass.
    Both parsers recurse, so the shared nesting bound is checked on the bytes before either runs.
    """
    problem = json_problem(data)
    if problem is not None:
        raise JsonProblem("$", problem)
    try:
        tree = msgspec.json.decode(data)
        members = _walk(tree, max_string)
        if data.count(b":") > members:
            _walk(json.loads(data.decode("utf-8"), object_pairs_hook=_pairs_hook), max_string)
    except (msgspec.DecodeError, ValueError) as exc:
        raise JsonProblem("$", f"invalid JSON ({exc})") from exc
    return tree


def _walk(tree: Any, max_string: int) -> int:
    """Check the limits iteratively; returns the member count.

    Written for speed (restoring thousands of snapshots walks every one): strings, the common
    case, are checked inline, the object and array loops are written out separately rather than
    through a shared helper, which would cost a call per member, and a container's JSON path is
    kept as a (parent, key) pair that becomes text only in an error message. Depth needs no check
    here: :func:`decode_json` refused deep input before decoding it.
    """
    members = 0
    stack: list[tuple[Any, _Path]] = [(tree, "$")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            if isinstance(node, _Duplicated):
                raise JsonProblem(_path_text(path), "duplicate member names")
            members += len(node)
            for key, value in node.items():
                if len(key) > max_string:
                    raise JsonProblem(_path_text(path), "member name too long")
                if type(value) is str:
                    if len(value) > max_string:
                        _check_scalar(value, path, max_string, key)
                elif isinstance(value, dict | list):
                    stack.append((value, (path, key)))
                elif isinstance(value, str | int):
                    _check_scalar(value, path, max_string, key)
        elif isinstance(node, list):
            for index, value in enumerate(node):
                if type(value) is str:
                    if len(value) > max_string:
                        _check_scalar(value, path, max_string, index)
                elif isinstance(value, dict | list):
                    stack.append((value, (path, index)))
                elif isinstance(value, str | int):
                    _check_scalar(value, path, max_string, index)
        else:
            _check_scalar(node, path, max_string)
    return members


#: a JSON path in the making: "$", or (parent path, member name or index)
_Path: TypeAlias = "str | tuple[_Path, str | int]"


def _path_text(path: _Path) -> str:
    keys: list[str | int] = []
    while not isinstance(path, str):
        path, key = path
        keys.append(key)
    for key in reversed(keys):
        path = _child_path(path, key)
    return path


def _check_scalar(value: object, path: _Path, max_string: int, key: str | int | None = None) -> None:
    if isinstance(value, str) and len(value) > max_string:
        where = _path_text(path if key is None else (path, key))
        raise JsonProblem(where, f"string longer than {max_string} characters")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > _MAX_INT:
        raise JsonProblem(_path_text(path if key is None else (path, key)), "number out of range")


def _child_path(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if key.isidentifier() and key.isascii():
        return f"{path}.{key}"
    # names land in log lines: json.dumps escapes control characters, the cap bounds the size
    return f"{path}[{json.dumps(key[:64])}]"


def b64url_decode(segment: bytes) -> bytes | None:
    """Strict base64url (RFC 7515 §2): no padding, no ``+/=``, no whitespace, canonical final bits.

    Non-canonical trailing bits would let two different strings decode to one signature or key,
    which breaks anything that keys on the token text (replay caches, audit logs). Written with C
    primitives only (one ``translate`` that also turns ``+/=`` into a character strict decoding
    refuses, ``a2b_base64(strict_mode=True)``, one table look-up): it runs three times per verified
    token.
    """
    size = len(segment)
    if size % 4 == 1:
        return None
    try:
        raw = binascii.a2b_base64(segment.translate(_URLSAFE_TO_STD) + _PADDING[size % 4], strict_mode=True)
    except binascii.Error:
        return None
    if size % 4 and _B64_VALUES[segment[-1]] & _UNUSED_BITS[size % 4]:
        return None  # the last character carries bits beyond the data: not the canonical encoding
    return raw


#: base64url to standard base64; the standard alphabet's own "+/" and padding "=" become "!",
#: which strict decoding refuses, so one pass both maps and vets the alphabet
_URLSAFE_TO_STD: Final = bytes.maketrans(b"-_+/=", b"+/!!!")
_PADDING: Final = (b"", b"", b"==", b"=")
_UNUSED_BITS: Final = (0, 0, 0x0F, 0x03)
_B64_VALUES: Final = bytes(
    (b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".find(bytes([c])) % 64) for c in range(256)
)


# --- JWKS parsing -------------------------------------------------------------------------------


class _Skip(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_jwks(body: bytes, *, url: str, max_keys: int = 100) -> KeyTable:
    """Parse a JWK Set document into the table of keys we are willing to serve.

    Args:
        body: the response body, already capped at ``max_response_bytes`` by the fetcher.
        url: where it came from; carried by every error.
        max_keys: more keys than this is refused as a whole (a set that big is a mistake or an attack).

    Returns:
        The usable keys, plus every skipped key with its reason.

    Raises:
        InvalidJwksError: the document is not a JWK Set, breaks a size limit, or has no usable key;
            the message starts with the JSON path at fault.
    """
    try:
        doc = decode_json(body)
    except JsonProblem as exc:
        raise InvalidJwksError(str(exc), url=url) from exc
    if not isinstance(doc, dict):
        raise InvalidJwksError("$: not a JSON object", url=url)
    keys = doc.get("keys")
    if not isinstance(keys, list):
        raise InvalidJwksError("$.keys: " + ("missing" if keys is None else "not an array"), url=url)
    if len(keys) > max_keys:
        raise InvalidJwksError(f"$.keys: more than {max_keys} keys ({len(keys)})", url=url)
    kid_counts: dict[str, int] = {}
    for raw in keys:
        if isinstance(raw, dict) and isinstance(raw.get("kid"), str):
            kid_counts[raw["kid"]] = kid_counts.get(raw["kid"], 0) + 1

    entries: list[KeyEntry] = []
    skipped: list[SkippedKey] = []
    for index, raw in enumerate(keys):
        kid = raw.get("kid") if isinstance(raw, dict) else None
        try:
            entries.append(_parse_key(index, raw, kid_counts, body))
        except _Skip as skip:
            skipped.append(SkippedKey(index, kid if isinstance(kid, str) else None, skip.reason))
    if not entries:
        raise InvalidJwksError(f"$.keys: no usable keys ({_summary(skipped)})", url=url)
    return KeyTable(entries, skipped, body)


def _summary(skipped: Sequence[SkippedKey]) -> str:
    if not skipped:
        return "empty set"
    shown = "; ".join(f"[{s.index}] {s.reason}" for s in skipped[:5])
    more = f"; {len(skipped) - 5} more" if len(skipped) > 5 else ""
    return f"{len(skipped)} skipped: {shown}{more}"


def _show(value: object) -> str:
    text = json.dumps(value) if isinstance(value, str | int | float | bool) or value is None else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _parse_key(index: int, raw: object, kid_counts: Mapping[str, int], body: bytes) -> KeyEntry:
    if not isinstance(raw, dict):
        raise _Skip("not a JSON object")
    # members present as JSON null are malformed, not absent
    kid = raw.get("kid")
    if "kid" in raw and not isinstance(kid, str):
        raise _Skip("non-string kid")
    if kid is not None and kid_counts.get(kid, 0) > 1:
        raise _Skip("duplicate kid")
    issuer = raw.get("issuer")
    if "issuer" in raw and not isinstance(issuer, str):
        raise _Skip("non-string issuer")  # a restriction we cannot read must not serve the key unrestricted
    kty = raw.get("kty")
    if kty == "oct":
        raise _Skip("oct key")
    if not _PRIVATE_MEMBERS.isdisjoint(raw):
        raise _Skip("private key material")
    if not isinstance(kty, str) or kty not in _MATERIAL:
        raise _Skip(f"unsupported kty {_show(kty)}")
    _check_usage(raw)
    alg, crv = _check_alg_and_curve(raw, kty)
    material = _check_material(raw, kty)
    try:
        if kty == "RSA":
            _check_rsa_numbers(material)  # what cryptography checks, without making the key now
        else:
            # curve points must be checked on the curve, which only making the key does; these
            # objects are small, and this one is dropped: the served one is made on first use
            _public_key(kty, crv, material)
            if kty == "OKP":
                _check_edwards_point(crv or "", material["x"])
        if not _JOSERFC_CHECKED.isdisjoint(raw):  # the rest we judged above, more strictly
            members = _for_joserfc(_public_members(raw, kty, crv))
            _JOSE_TYPES[kty].validate_dict_key(members)  # type: ignore[attr-defined]
    except (JoseError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise _Skip(f"invalid {kty} key ({type(exc).__name__})") from exc
    # interned names: ten thousand tables must not hold ten thousand copies of "RS256"
    return KeyEntry(
        index=index, kid=kid, kty=_NAMES[kty], alg=_NAMES.get(alg), crv=_NAMES.get(crv), body=body, issuer=issuer
    )


def _public_members(raw: Mapping[str, Any], kty: str, crv: str | None) -> dict[str, Any]:
    """The members we serve for a key: known public ones only.

    No copies: every caller passes a tree it just decoded from the table's bytes, which nobody
    else holds.
    """
    return {name: raw[name] for name in _SERVED_MEMBERS[kty, crv is not None] if name in raw}


def _parameters(raw: Mapping[str, Any]) -> dict[str, Any]:
    """joserfc's extra parameters for a key object made from numbers: the common public members."""
    return _for_joserfc({name: raw[name] for name in _COMMON_MEMBERS if name != "kty" and name in raw})


def _for_joserfc(members: dict[str, Any]) -> dict[str, Any]:
    """``members`` as joserfc accepts them: ``key_ops`` narrowed to ``["verify"]``.

    RFC 7517 §4.3 lets ``key_ops`` hold values joserfc refuses (its registry is closed, and it
    rejects anything but sign/verify beside ``use: sig``). We serve keys for verifying only and
    require "verify" among them, so that is the one operation our key objects carry; the document
    as served (``public_jwks``) keeps the member as published.
    """
    if "key_ops" in members:
        return {**members, "key_ops": ["verify"]}
    return members


def _check_rsa_numbers(material: Mapping[str, bytes]) -> None:
    """cryptography's own checks on public numbers (``RSAPublicNumbers.public_key``), done up front."""
    e, n = int.from_bytes(material["e"]), int.from_bytes(material["n"])
    if e < 3 or e >= n or not e & 1 or not n & 1:
        raise ValueError("RSA public numbers out of range (e must be odd, 3 <= e < n; n must be odd)")


def _public_key(kty: str, crv: str | None, material: Mapping[str, bytes]) -> object:
    if kty == "RSA":
        return rsa.RSAPublicNumbers(int.from_bytes(material["e"]), int.from_bytes(material["n"])).public_key()
    if kty == "EC":
        curve = _EC_CURVES[crv or ""]
        size = (curve.key_size + 7) // 8
        if len(material["x"]) != size or len(material["y"]) != size:  # RFC 7518 §6.2.1.2: full length
            raise ValueError("coordinate length does not match the curve")
        x, y = int.from_bytes(material["x"]), int.from_bytes(material["y"])
        return ec.EllipticCurvePublicNumbers(x, y, curve).public_key()
    if crv == "Ed25519":
        return ed25519.Ed25519PublicKey.from_public_bytes(material["x"])
    return ed448.Ed448PublicKey.from_public_bytes(material["x"])


class _Edwards(NamedTuple):
    """What key hygiene needs of an EdDSA curve (RFC 8032 §5.1, §5.2)."""

    p: int  # the field prime: an encoded y must be below it
    #: y of the points whose order divides the cofactor; each stands for both signs of x
    small_order_y: frozenset[int]


_P25519: Final = 2**255 - 19
_P448: Final = 2**448 - 2**224 - 1
#: y of two of Ed25519's four points of order 8 (the other two have p - y); libsodium's blocklist
_Y8_25519: Final = 2707385501144840649318225287225658788936804267575313519463743609750303402022
_EDWARDS: Final[dict[str, _Edwards]] = {
    # the 8-torsion is cyclic: identity (y = 1), order 2 (y = -1), order 4 (y = 0), order 8 (y = ±y8)
    "Ed25519": _Edwards(_P25519, frozenset({1, _P25519 - 1, 0, _Y8_25519, _P25519 - _Y8_25519})),
    # the 4-torsion is cyclic: identity (y = 1), order 2 (y = -1), order 4 (y = 0, x = ±1)
    "Ed448": _Edwards(_P448, frozenset({1, _P448 - 1, 0})),
}


def _check_edwards_point(crv: str, encoded: bytes) -> None:
    """Refuse an EdDSA public key of small order, or one not canonically encoded.

    A key of small order lets anyone sign. cryptography (OpenSSL) verifies Ed25519 without the
    cofactor: with the identity as key, R = identity and S = 0 verify every message, and with the
    other small-order keys a half, a quarter or an eighth of messages, which a forger reaches by
    varying a claim. It verifies Ed448 with the cofactor, so R = A and S = 0 verify every message
    under an order-4 key. An honest key is a multiple of the base point and never of small order:
    only a mistake or an attacker publishes one.

    A non-canonical encoding (y ≥ p, or for Ed448 a set unused bit in the last byte) is never what
    a signer produces, it is how small-order points slip past byte-wise blocklists (y = p + 1 is
    the identity again), and it gives one key two spellings. The small-order points are known by y
    alone, whatever the sign bit says, so the check is two integer comparisons, cheap enough for
    the thousands of keys a snapshot restore parses.

    Not refused: keys not on the curve (no signature verifies under them) and keys of large but
    not prime order (an honest key plus a small-order point), whose check costs a scalar
    multiplication and which still need their private half to sign.
    """
    curve = _EDWARDS[crv]
    # the top bit is the sign of x; for Ed448 the seven bits below it stay in y and make it >= p
    y = int.from_bytes(encoded, "little") & ~(1 << (8 * len(encoded) - 1))
    if y >= curve.p:
        raise _Skip(f"x is not the canonical encoding of an {crv} point")
    if y in curve.small_order_y:
        raise _Skip(f"x is a small-order {crv} point")


def _check_usage(raw: Mapping[str, Any]) -> None:
    use = raw.get("use", "sig")
    if use != "sig":
        raise _Skip(f'use is {_show(use)}, not "sig"')
    if "key_ops" in raw:
        ops = raw["key_ops"]
        if not isinstance(ops, list) or not all(isinstance(op, str) for op in ops):
            raise _Skip("key_ops is not an array of strings")
        if "verify" not in ops:
            raise _Skip('key_ops lacks "verify"')


def _check_alg_and_curve(raw: Mapping[str, Any], kty: str) -> tuple[str | None, str | None]:
    alg = raw.get("alg")
    if "alg" in raw and (not isinstance(alg, str) or alg not in _ALG_KEYS):
        raise _Skip(f"alg {_show(alg)} is not an asymmetric JWS alg")
    crv: str | None = None
    if kty in _CURVES:
        crv = raw.get("crv")
        if not isinstance(crv, str) or crv not in _CURVES[kty]:
            raise _Skip(f"unsupported {kty} crv {_show(crv)}")
    if alg is not None:
        want_kty, curves = _ALG_KEYS[alg]
        if kty != want_kty:
            raise _Skip(f"alg {alg} does not fit a {kty} key")
        if curves is not None and crv not in curves:
            raise _Skip(f"curve {crv} does not match alg {alg}")
    return alg, crv


def _check_material(raw: Mapping[str, Any], kty: str) -> dict[str, bytes]:
    # joserfc's own decoder skips stray characters; refuse them before it sees the key
    material: dict[str, bytes] = {}
    for name in _MATERIAL[kty]:
        value = raw.get(name)
        decoded = b64url_decode(value.encode("ascii")) if isinstance(value, str) and value.isascii() else None
        if not decoded:
            raise _Skip(f"{name} is missing or not base64url")
        material[name] = decoded
    if kty == "RSA":
        bits = int.from_bytes(material["n"]).bit_length()
        if bits < _RSA_MIN_BITS:
            raise _Skip(f"rsa key too small ({bits} bits)")
        if bits > _RSA_MAX_BITS:
            raise _Skip(f"rsa key too large ({bits} bits)")
    return material
