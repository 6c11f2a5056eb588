"""Transport-security policy for every hop of a JWKS or discovery fetch: pure, no I/O.

A JWKS URL is attacker-influenced (discovery documents, redirects, tenant self-service), so each hop
is checked against the registration's policy before a socket is opened: scheme, userinfo, the host
allowlist, and non-public addresses (SSRF to metadata services, RFC 6890 special-purpose ranges).
Hosts are canonicalised first, because the allowlist is only as good as the agreement between the
host we check and the host the HTTP client connects to.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import re
import unicodedata
from collections.abc import Sequence
from typing import Final
from urllib.parse import urljoin, urlsplit

import msgspec
from cryptography import x509

from .._errors import SecurityError

__all__ = [
    "MAX_URL_CHARS", "HopPolicy", "canonical_host", "check_address", "check_content_type", "check_pin", "check_url",
    "host_allowed", "is_public_address", "resolve_redirect", "spki_sha256_b64",
]  # fmt: skip

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_CHARS: Final = 8192
_LABEL_RE: Final = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
_NUMERIC_LABEL_RE: Final = re.compile(r"[0-9]+|0x[0-9a-f]*")
_IPV4_PART_RE: Final = re.compile(r"(0x[0-9a-f]*)|(0[0-7]*)|[1-9][0-9]*")
_PORT_RE: Final = re.compile(r"[0-9]{0,5}")
_JSON_TYPE_RE: Final = re.compile(r"application/([a-z0-9!#$&^_.-]+\+)?json")
# Mapped differently by IDNA 2003 (the stdlib codec) and IDNA 2008 (httpx's `idna`): the checked
# host and the connected host would differ, e.g. "faß.de" is fass.de here and xn--fa-hia.de there.
_IDNA_DEVIATIONS: Final = frozenset("\u00df\u03c2\u200c\u200d")

# RFC 6890 and the IANA special-purpose registries, plus ranges no identity provider lives in.
_V4_BLOCKED: Final = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
        "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    )
)  # fmt: skip
_V6_GLOBAL_UNICAST: Final = ipaddress.IPv6Network("2000::/3")
_V6_BLOCKED: Final = tuple(ipaddress.IPv6Network(n) for n in ("2001::/23", "2001:db8::/32", "3fff::/20"))
# Forms whose low 32 bits are an IPv4 address the traffic ends up at (mapped, compatible,
# SIIT-translated, NAT64 well-known prefix).
_V6_EMBEDDING_V4: Final = tuple(
    ipaddress.IPv6Network(n) for n in ("::ffff:0:0/96", "::/96", "::ffff:0:0:0/96", "64:ff9b::/96")
)


class HopPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """What one hop (initial URL, redirect target, connection) must satisfy.

    Built by the fetch layer from a registration and the Registry's floors, so these checks need no
    knowledge of either.
    """

    require_https: bool
    allowed_domains: tuple[str, ...]  # canonical lowercase hostnames; () = any host
    allow_private_networks: bool
    pinned_spki: tuple[str, ...]  # base64 SHA-256 pins; () = no pinning


def _refuse(url: str | None, rule: str) -> SecurityError:
    where = f"{url!r}: " if url is not None else ""
    return SecurityError(f"refused {where}{rule}", url=url)


def _has_unsafe_chars(text: str) -> bool:
    # urlsplit silently deletes tab/CR/LF and clients differ on "\\", so such input is never "fixed up".
    if _SAFE_ASCII_RE.fullmatch(text):
        return False  # the usual URL: printable ASCII without a backslash, decided in C
    return any(c == "\\" or c.isspace() or unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in text)


_SAFE_ASCII_RE: Final = re.compile(r"[!-\[\]-~]*")  # 0x21-0x7E except the backslash (0x5C)


def _parse_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """inet_aton(3) forms ("2130706433", "0x7f.1", "0177.0.0.1"), because resolvers accept them."""
    parts = host.split(".")
    numbers: list[int] = []
    for part in parts:
        match = _IPV4_PART_RE.fullmatch(part)
        if match is None or len(parts) > 4:
            return None
        hexadecimal, octal = match.groups()
        numbers.append(int(hexadecimal[2:] or "0", 16) if hexadecimal else int(part, 8 if octal else 10))
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
        return None
    return ipaddress.IPv4Address(sum(n << (8 * (3 - i)) for i, n in enumerate(head)) + last)


def _ipv6_text(v6: ipaddress.IPv6Address) -> str:
    """RFC 5952 text, with an IPv4-mapped address's low 32 bits dotted ("::ffff:10.0.0.1", §5).

    Spelled out here because ``str()`` changed in Python 3.13 (3.11 and 3.12 print "::ffff:a00:1"),
    and the canonical host is compared and stored across a fleet that may mix Python versions.
    """
    mapped = v6.ipv4_mapped
    if mapped is None:
        return v6.compressed
    return f"::ffff:{mapped}"


def _canonicalize(host: str, url: str | None) -> tuple[str, _IPAddress | None]:
    if not host:
        raise _refuse(url, "empty host")
    if host.startswith("[") or ":" in host:
        inner = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if "%" in inner:
            raise _refuse(url, f"host {host!r}: IPv6 zone identifiers are not allowed in URLs")
        try:
            v6 = ipaddress.IPv6Address(inner)
        except ValueError as exc:
            raise _refuse(url, f"host {host!r} is not a valid IPv6 literal") from exc
        return _ipv6_text(v6), v6
    if "%" in host:
        raise _refuse(url, f"host {host!r}: percent-escapes are not allowed in a host")
    if "@" in host:
        raise _refuse(url, f"host {host!r}: userinfo is not allowed")
    if _has_unsafe_chars(host):
        raise _refuse(url, f"host {host!r} contains whitespace or control characters")
    lowered = host.lower()
    if _IDNA_DEVIATIONS.intersection(lowered):
        raise _refuse(url, f"host {host!r} has characters IDNA 2003 and 2008 map differently")
    try:
        name = lowered.encode("idna").decode("ascii").lower()
    except ValueError as exc:  # UnicodeError: bad label, prohibited character, too long
        raise _refuse(url, f"host {host!r} is not a valid IDNA hostname: {exc}") from exc
    name = name.removesuffix(".")
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL_RE.fullmatch(label) for label in labels):
        raise _refuse(url, f"host {host!r} is not a valid hostname (empty or invalid label)")
    if _NUMERIC_LABEL_RE.fullmatch(labels[-1]):
        v4 = _parse_ipv4(name)
        if v4 is None:
            raise _refuse(url, f"host {host!r} looks like an IPv4 address but is not a valid one")
        return str(v4), v4
    return name, None


def canonical_host(host: str) -> str:
    """The form of ``host`` that allowlists are matched against.

    Lowercase, IDNA A-labels (stdlib codec), one trailing dot removed; IP literals in any form a
    resolver accepts come back as the plain address ("0x7f.1" -> "127.0.0.1", "[::1]" -> "::1"),
    IPv6 in RFC 5952 form with an IPv4-mapped tail dotted ("[::FFFF:a00:1]" -> "::ffff:10.0.0.1")
    whichever Python version runs.

    Raises:
        SecurityError: empty labels, percent-escapes, userinfo, whitespace, invalid IDNA.
    """
    return _canonicalize(host, None)[0]


def host_allowed(host: str, allowed_domains: Sequence[str]) -> bool:
    """Whether a canonical host is one of ``allowed_domains`` or a subdomain on a label boundary.

    An empty allowlist allows every host. IP literals only match exactly ("0.0.1" must not admit
    "127.0.0.1" as a subdomain).
    """
    if not allowed_domains:
        return True
    host = host.lower().removesuffix(".")
    is_ip = _ip_or_none(host) is not None
    for domain in allowed_domains:
        domain = domain.lower().removesuffix(".")
        if domain and (host == domain or (not is_ip and host.endswith("." + domain))):
            return True
    return False


def _split_authority(netloc: str, url: str) -> str:
    """The host part of an authority without userinfo; the port is validated and dropped."""
    if "@" in netloc:
        raise _refuse(url, "userinfo in a URL is not allowed (it hides the real host)")
    if netloc.startswith("["):
        close = netloc.find("]")
        if close < 0:
            raise _refuse(url, "unterminated IPv6 literal")
        host, rest = netloc[: close + 1], netloc[close + 1 :]
        if rest and not rest.startswith(":"):
            raise _refuse(url, "garbage after IPv6 literal")
        port = rest[1:]
    else:
        host, _, port = netloc.partition(":")
    if not _PORT_RE.fullmatch(port) or (port and not 0 < int(port) <= 65535):
        raise _refuse(url, f"invalid port {port!r}")
    if not host:
        raise _refuse(url, "the URL has no host")
    return host


def check_url(url: str, policy: HopPolicy) -> str:
    """Check one hop's absolute URL against ``policy`` before any connection is made.

    Called for the initial URL and for every redirect target (after :func:`resolve_redirect`).

    Returns:
        The canonical host (see :func:`canonical_host`).

    Raises:
        SecurityError: bad scheme, plain http under ``require_https``, userinfo, no or invalid host,
            a host outside ``allowed_domains``, or a non-public IP literal.
    """
    if len(url) > MAX_URL_CHARS:
        raise SecurityError(f"refused {url[:80]!r}...: URL longer than {MAX_URL_CHARS} characters", url=url)
    if _has_unsafe_chars(url):
        raise _refuse(url, "whitespace, control characters or backslashes in the URL")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise _refuse(url, f"unparsable URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise _refuse(url, "only http and https URLs are fetched")
    if policy.require_https and parts.scheme != "https":
        raise _refuse(url, "plain http is not allowed (require_https)")
    host, ip = _canonicalize(_split_authority(parts.netloc, url), url)
    if not host_allowed(host, policy.allowed_domains):
        raise _refuse(url, f"host {host!r} is not in allowed_domains {list(policy.allowed_domains)}")
    if ip is not None:
        check_address(host, policy, url=url)
    elif not policy.allow_private_networks and (host == "localhost" or host.endswith(".localhost")):
        raise _refuse(url, f"host {host!r} is loopback by definition (RFC 6761); allow_private_networks is off")
    return host


def _ip_or_none(address: str) -> _IPAddress | None:
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        return None


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if any(ip in net for net in _V6_EMBEDDING_V4):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour  # 2002::/16


def is_public_address(address: str) -> bool:
    """Whether a connection to ``address`` leaves for the public internet.

    False for loopback, private, CGNAT, link-local (cloud metadata at 169.254.169.254), multicast,
    unspecified, reserved and documentation ranges, and for IPv6 forms embedding such an IPv4
    address (mapped, compatible, 6to4, NAT64). A zone id ("fe80::1%eth0") is ignored; anything
    unparsable is not public, so callers fail closed.
    """
    ip = _ip_or_none(address.strip("[]").partition("%")[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_v4(ip)
        if embedded is None:
            return ip in _V6_GLOBAL_UNICAST and not any(ip in net for net in _V6_BLOCKED) and ip.is_global
        ip = embedded
    if ip is None:
        return False
    return not any(ip in net for net in _V4_BLOCKED) and ip.is_global


def check_address(address: str, policy: HopPolicy, *, url: str) -> None:
    """Refuse a non-public address unless the policy opts into private networks.

    Raises:
        SecurityError: the address is not public and ``allow_private_networks`` is off.
    """
    if not policy.allow_private_networks and not is_public_address(address):
        raise _refuse(
            url,
            f"address {address} is not public (loopback, private, link-local or reserved); "
            "set allow_private_networks to allow it",
        )


def _spki_der(tbs: bytes) -> bytes:
    """The SubjectPublicKeyInfo TLV of a TBSCertificate (RFC 5280 §4.1), byte for byte.

    Pins hash the SPKI as sent; re-encoding ``public_key()`` is not byte-exact for every key type.
    """

    def element(pos: int) -> tuple[int, int, int]:  # (tag, content start, end)
        tag, length = tbs[pos], tbs[pos + 1]
        pos += 2
        if length & 0x80:
            count = length & 0x7F
            length = int.from_bytes(tbs[pos : pos + count], "big")
            pos += count
        return tag, pos, pos + length

    _, pos, _ = element(0)  # enter the TBSCertificate SEQUENCE
    if tbs[pos] == 0xA0:  # [0] EXPLICIT version
        pos = element(pos)[2]
    for _ in range(5):  # serialNumber, signature, issuer, validity, subject
        pos = element(pos)[2]
    return tbs[pos : element(pos)[2]]


def _spki_digest(der_certificate: bytes, url: str | None) -> bytes:
    try:
        certificate = x509.load_der_x509_certificate(der_certificate)
        spki = _spki_der(certificate.tbs_certificate_bytes)
    except (ValueError, TypeError, IndexError) as exc:
        raise _refuse(url, f"not a DER X.509 certificate ({exc})") from exc
    return hashlib.sha256(spki).digest()


def spki_sha256_b64(der_certificate: bytes) -> str:
    """The HPKP-style pin of a DER certificate: base64(SHA-256(SubjectPublicKeyInfo)).

    Same value as ``openssl x509 -pubkey | openssl pkey -pubin -outform der | openssl dgst -sha256
    -binary | base64``.

    Raises:
        SecurityError: the bytes are not a DER X.509 certificate.
    """
    return base64.b64encode(_spki_digest(der_certificate, None)).decode("ascii")


def _pin_digest(pin: str) -> bytes | None:
    try:
        return base64.b64decode(pin.encode("ascii"), validate=True)
    except (binascii.Error, ValueError):  # UnicodeEncodeError is a ValueError
        return None


def check_pin(der_certificate: bytes | None, policy: HopPolicy, *, url: str) -> None:
    """Refuse a leaf certificate whose SPKI pin is not among ``policy.pinned_spki``.

    Raises:
        SecurityError: pins are set and there is no certificate (plain http) or no pin matches.
    """
    if not policy.pinned_spki:
        return
    if der_certificate is None:
        raise _refuse(url, "pinned_spki is set but the connection has no TLS certificate")
    digest = _spki_digest(der_certificate, url)
    matched = False
    for pin in policy.pinned_spki:
        expected = _pin_digest(pin)
        # compare every pin, so timing says nothing about which one matched
        matched |= expected is not None and hmac.compare_digest(expected, digest)
    if not matched:
        actual = base64.b64encode(digest).decode("ascii")
        raise _refuse(url, f"certificate SPKI pin {actual} is not among pinned_spki")


def check_content_type(value: str | None, *, url: str) -> None:
    """Refuse responses that are not declared as JSON; a missing or empty header is accepted.

    Catches captive portals, login pages and CDN error pages served with status 200.

    Raises:
        SecurityError: not application/json, application/jwk-set+json or application/*+json.
    """
    if value is None or not value.strip():
        return
    media_type = value.partition(";")[0].strip().lower()
    if _JSON_TYPE_RE.fullmatch(media_type):
        return
    hint = ": probably an error page" if media_type in ("text/html", "application/xhtml+xml") else ""
    shown = media_type if media_type.isascii() and media_type.isprintable() and media_type else repr(value)
    raise _refuse(url, f"expected JSON, got {shown}{hint}")


def resolve_redirect(base_url: str, location: str) -> str:
    """Resolve a ``Location`` header against the current URL (RFC 3986 §5.2), dropping the fragment.

    The result still has to pass :func:`check_url`; this only refuses what cannot be resolved
    unambiguously.

    Raises:
        SecurityError: the Location has whitespace/control characters or cannot be parsed.
    """
    if _has_unsafe_chars(location):
        raise _refuse(base_url, f"redirect Location {location!r} contains whitespace or control characters")
    try:
        resolved = urljoin(base_url, location)
    except ValueError as exc:
        raise _refuse(base_url, f"redirect Location {location!r} cannot be resolved: {exc}") from exc
    return resolved.partition("#")[0]
