"""Hop-by-hop transport policy: hostile URLs, hosts, addresses, pins and content types."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ipaddress
from urllib.parse import urlsplit

import httpx
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import strategies as st

from jwks_cache._errors import SecurityError
from jwks_cache._http._policy import (
    HopPolicy,
    canonical_host,
    check_address,
    check_content_type,
    check_pin,
    check_url,
    host_allowed,
    is_public_address,
    resolve_redirect,
    spki_sha256_b64,
)

STRICT = HopPolicy(require_https=True, allowed_domains=(), allow_private_networks=False, pinned_spki=())
LAX = HopPolicy(require_https=False, allowed_domains=(), allow_private_networks=True, pinned_spki=())
ONLY_EXAMPLE = HopPolicy(
    require_https=True, allowed_domains=("example.com",), allow_private_networks=False, pinned_spki=()
)


# --- canonical_host ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("example.com", "example.com"),
        ("EXAMPLE.Com", "example.com"),
        ("example.com.", "example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.example.", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com", "example.com"),  # fullwidth: NFKC
        ("example。com", "example.com"),  # ideographic full stop is a dot to IDNA
        ("a_b.example.com", "a_b.example.com"),
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0X7F.0.0.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("10.1.258", "10.1.1.2"),
        ("0x", "0.0.0.0"),
        ("\uff11\uff12\uff17.\uff10.\uff10.\uff11", "127.0.0.1"),  # fullwidth digits still end up an IP literal
        ("[::1]", "::1"),
        ("[0:0:0:0:0:0:0:1]", "::1"),
        # RFC 5952 §5: an IPv4-mapped address keeps its IPv4 part dotted, on every Python version
        # (str() of one prints "::ffff:a00:1" before 3.13 and "::ffff:10.0.0.1" from 3.13 on)
        ("[::FFFF:10.0.0.1]", "::ffff:10.0.0.1"),
        ("[::ffff:a00:1]", "::ffff:10.0.0.1"),
        ("[0:0:0:0:0:FFFF:0A00:0001]", "::ffff:10.0.0.1"),
        ("[::ffff:0.0.0.0]", "::ffff:0.0.0.0"),
        ("[::ffff:0:10.0.0.1]", "::ffff:0:a00:1"),  # SIIT-translated: not mapped, so plain hex
        ("[::10.0.0.1]", "::a00:1"),  # IPv4-compatible (deprecated): plain hex
        ("[64:ff9b::10.0.0.1]", "64:ff9b::a00:1"),  # NAT64 well-known prefix: plain hex
        ("[2001:DB8:0:0:1:0:0:1]", "2001:db8::1:0:0:1"),  # RFC 5952 §4.2.3: the first longest run
        ("[2001:db8:0:1:1:1:1:1]", "2001:db8:0:1:1:1:1:1"),  # §4.2.2: a single 0 is not shortened
        ("::1", "::1"),
    ],
)
def test_canonical_host(host: str, expected: str) -> None:
    assert canonical_host(host) == expected


@pytest.mark.parametrize(
    "host",
    [
        "",
        ".",
        "..",
        "example.com..",
        "a..example.com",
        ".example.com",
        "exa%6dple.com",
        "user@example.com",
        "example .com",
        "example.com\t",
        "exam\nple.com",
        "example.com\x00",
        "exa\u200bmple.com",  # zero-width space
        "faß.de",  # IDNA 2003 says fass.de, IDNA 2008 says xn--fa-hia.de
        "βόλος.com",  # final sigma, another IDNA deviation
        "a\u200db.com",
        "-example.com",
        "example-.com",
        "x" * 64 + ".com",
        ".".join(["a" * 63] * 4),  # 255 chars
        "exa$mple.com",
        "example.com/",
        "example.com:443",
        "1.2.3.4.5",
        "256.0.0.1",
        "1.2.3.256",
        "1.2.65536",
        "4294967296",
        "08.0.0.1",
        "0x1g.0.0.1",
        "example.0x1",  # ends in a number, so it is an (invalid) IPv4 address, as in WHATWG
        "[::1",
        "[1.2.3.4]",
        "[fe80::1%25eth0]",
        "[v1.abc]",
        "[::1]x",
    ],
)
def test_canonical_host_refuses(host: str) -> None:
    with pytest.raises(SecurityError):
        canonical_host(host)


# --- host_allowed -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "allowed", "expected"),
    [
        ("anything.test", (), True),
        ("example.com", ("example.com",), True),
        ("a.example.com", ("example.com",), True),
        ("a.b.example.com", ("example.com",), True),
        ("evil-example.com", ("example.com",), False),
        ("evilexample.com", ("example.com",), False),
        ("example.com.evil.com", ("example.com",), False),
        ("example.co", ("example.com",), False),
        ("com", ("example.com",), False),
        ("example.com", ("a.example.com",), False),
        ("login.example.org", ("example.com", "example.org"), True),
        ("example.com.", ("example.com",), True),
        ("EXAMPLE.com", ("example.com",), True),
        ("127.0.0.1", ("0.0.1",), False),  # IP literals never match as "subdomains"
        ("127.0.0.1", ("127.0.0.1",), True),
        ("example.com", ("",), False),
    ],
)
def test_host_allowed(host: str, allowed: tuple[str, ...], expected: bool) -> None:
    assert host_allowed(host, allowed) is expected


# --- check_url --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "policy", "host"),
    [
        ("https://example.com/.well-known/jwks.json", STRICT, "example.com"),
        ("HTTPS://EXAMPLE.COM./jwks", STRICT, "example.com"),
        ("https://example.com:8443/jwks?x=1#frag", STRICT, "example.com"),
        ("https://example.com:/jwks", STRICT, "example.com"),
        ("https://login.example.com/jwks", ONLY_EXAMPLE, "login.example.com"),
        ("https://bücher.example/jwks", STRICT, "xn--bcher-kva.example"),
        ("https://8.8.8.8/jwks", STRICT, "8.8.8.8"),
        ("https://[2606:4700:4700::1111]:443/jwks", STRICT, "2606:4700:4700::1111"),
        ("https://good.com/path@evil.com", STRICT, "good.com"),
        ("https://good.com/?next=http://evil.com", STRICT, "good.com"),
        ("http://example.com/jwks", LAX, "example.com"),
        ("http://127.0.0.1:8080/jwks", LAX, "127.0.0.1"),
        ("http://[::1]:8080/jwks", LAX, "::1"),
        ("http://localhost:8080/jwks", LAX, "localhost"),
    ],
)
def test_check_url_accepts(url: str, policy: HopPolicy, host: str) -> None:
    assert check_url(url, policy) == host


@pytest.mark.parametrize(
    ("url", "policy", "rule"),
    [
        ("http://example.com/jwks", STRICT, "require_https"),
        ("ftp://example.com/jwks", LAX, "only http and https"),
        ("file:///etc/passwd", LAX, "only http and https"),
        ("javascript:alert(1)", LAX, "only http and https"),
        ("example.com/jwks", LAX, "only http and https"),
        ("//example.com/jwks", LAX, "only http and https"),
        ("https://good.com@evil.com/", STRICT, "userinfo"),
        ("https://user:pass@example.com/", STRICT, "userinfo"),
        ("https://good.com:443@evil.com/", STRICT, "userinfo"),
        ("https://good.com%40evil.com/", STRICT, "percent-escapes"),
        ("https://evil.com\\@good.com/", STRICT, "backslash"),
        ("https://evil.com\\.good.com/", STRICT, "backslash"),
        ("https://exa\tmple.com/", STRICT, "whitespace"),
        ("https://example.com/\r\nHost: evil", STRICT, "whitespace"),
        (" https://example.com/", STRICT, "whitespace"),
        ("https:///jwks", STRICT, "no host"),
        ("https://:443/jwks", STRICT, "no host"),
        ("https://example.com:99999/", STRICT, "invalid port"),
        ("https://example.com:0/", STRICT, "invalid port"),
        ("https://example.com:+443/", STRICT, "invalid port"),
        ("https://example.com:44a/", STRICT, "invalid port"),
        ("https://example.com:1:2/", STRICT, "invalid port"),
        ("https://[::1/", STRICT, "IPv6"),
        ("https://[::1]evil.com/", STRICT, "IPv6"),
        ("https://evil-example.com/", ONLY_EXAMPLE, "allowed_domains"),
        ("https://example.com.evil.com/", ONLY_EXAMPLE, "allowed_domains"),
        ("https://8.8.8.8/", ONLY_EXAMPLE, "allowed_domains"),
        ("https://127.0.0.1/", STRICT, "not public"),
        ("https://127.0.0.1./", STRICT, "not public"),
        ("https://2130706433/", STRICT, "not public"),
        ("https://0x7f.1/", STRICT, "not public"),
        ("https://0177.0.0.1/", STRICT, "not public"),
        ("https://127.1/", STRICT, "not public"),
        ("https://0/", STRICT, "not public"),
        ("https://169.254.169.254/latest/meta-data/", STRICT, "not public"),
        ("https://0xa9fea9fe/", STRICT, "not public"),  # 169.254.169.254
        ("https://10.0.0.1/", STRICT, "not public"),
        ("https://[::1]/", STRICT, "not public"),
        ("https://[::]/", STRICT, "not public"),
        ("https://[::ffff:10.0.0.1]/", STRICT, "not public"),
        ("https://[::ffff:169.254.169.254]/", STRICT, "not public"),
        ("https://[fd00:ec2::254]/", STRICT, "not public"),
        ("https://[fe80::1]/", STRICT, "not public"),
        ("https://localhost/", STRICT, "RFC 6761"),
        ("https://api.localhost/", STRICT, "RFC 6761"),
        ("https://1.2.3.4.5/", STRICT, "IPv4"),
        ("https://faß.de/", STRICT, "IDNA"),
        ("https://" + "a" * 9000 + ".com/", STRICT, "longer than"),
    ],
)
def test_check_url_refuses(url: str, policy: HopPolicy, rule: str) -> None:
    with pytest.raises(SecurityError) as info:
        check_url(url, policy)
    assert rule in str(info.value)
    assert info.value.url == url


def test_check_url_names_a_mapped_address_in_canonical_form() -> None:
    with pytest.raises(SecurityError, match=r"address ::ffff:10\.0\.0\.1 is not public"):
        check_url("https://[::ffff:a00:1]/jwks", STRICT)


def test_check_url_refusal_names_the_url() -> None:
    with pytest.raises(SecurityError, match=r"'http://example\.com/jwks'.*require_https"):
        check_url("http://example.com/jwks", STRICT)


@given(st.text(max_size=200))
def test_check_url_raises_only_security_error(text: str) -> None:
    for candidate in (text, "https://" + text, "http://" + text + "/jwks"):
        try:
            host = check_url(candidate, STRICT)
        except SecurityError:
            continue
        assert host == canonical_host(host)  # the returned host is already canonical


_HOSTILE_PIECES = st.sampled_from(
    ["example.com", "good.com", "@", ":", "[", "]", "::1", "::ffff:", "10.0.0.1", "0x7f", "127", "0177", ".",
     "%2e", "%40", "\\", "/", "?", "#", "\t", " ", "\u3002", "\uff0e", "\uff20", "xn--", "b\u00fccher", "\u00df",
     "localhost", "169.254.169.254", "2130706433", "8080", "-", "_"]
)  # fmt: skip


@given(
    st.sampled_from(["https://", "http://", "HTTPS://", "https:", "https:/", "//", ""]),
    st.lists(_HOSTILE_PIECES, max_size=8).map("".join),
    st.sampled_from(["", "/", "/jwks", "?x", "#f", ":443/"]),
)
def test_check_url_on_hostile_compositions(scheme: str, authority: str, tail: str) -> None:
    url = scheme + authority + tail
    try:
        host = check_url(url, ONLY_EXAMPLE)
    except SecurityError:
        return
    assert host == "example.com" or host.endswith(".example.com")
    assert "@" not in urlsplit(url).netloc


@given(
    st.sampled_from(["https://", "http://"]),
    st.lists(_HOSTILE_PIECES | st.text(max_size=3), max_size=8).map("".join),
    st.sampled_from(["", "/jwks", "?x", "#f", ":8443/"]),
)
def test_httpx_connects_to_the_host_that_was_checked(scheme: str, authority: str, tail: str) -> None:
    url = scheme + authority + tail
    try:
        host = check_url(url, LAX)
    except SecurityError:
        return
    try:
        client_host = httpx.URL(url).raw_host.decode("ascii")  # what the client connects to
    except httpx.InvalidURL:
        return  # the client refuses it too: nothing is fetched
    assert canonical_host(client_host) == host


@given(st.text(alphabet="0123456789abcdefx.:[]%", max_size=40))
def test_ip_literal_hosts_are_never_accepted_unless_public(text: str) -> None:
    try:
        host = check_url(f"https://{text}/", STRICT)
    except SecurityError:
        return
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return  # a hostname: the fetch layer checks what it resolves to
    assert is_public_address(host)


@given(st.text(max_size=100), st.text(max_size=100))
def test_resolve_redirect_and_canonical_host_raise_only_security_error(base: str, location: str) -> None:
    with contextlib.suppress(SecurityError):
        resolve_redirect("https://example.com/a/b", location)
    with contextlib.suppress(SecurityError):
        resolve_redirect(base, location)
    with contextlib.suppress(SecurityError):
        canonical_host(location)
    assert isinstance(is_public_address(location), bool)


# --- addresses --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "0.0.0.0",
        "0.1.2.3",
        "10.0.0.1",
        "10.255.255.255",
        "100.64.0.1",
        "100.127.255.254",
        "127.0.0.1",
        "127.255.0.1",
        "169.254.0.1",
        "169.254.169.254",
        "172.16.0.1",
        "172.31.255.255",
        "192.0.0.1",
        "192.0.0.170",
        "192.0.2.1",
        "192.88.99.1",
        "192.168.1.1",
        "198.18.0.1",
        "198.19.255.255",
        "198.51.100.7",
        "203.0.113.9",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "::",
        "::1",
        "fe80::1",
        "fe80::1%eth0",
        "[fe80::1%eth0]",
        "fec0::1",
        "fc00::1",
        "fd12:3456:789a::1",
        "ff02::1",
        "ff0e::1",
        "100::1",
        "2001:db8::1",
        "2001::1",  # Teredo
        "3fff::1",
        "4000::1",  # outside 2000::/3
        "64:ff9b:1::a00:1",  # local-use NAT64
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "::ffff:192.168.0.1",
        "::ffff:0:10.0.0.1",  # SIIT-translated
        "::127.0.0.1",  # IPv4-compatible
        "::10.0.0.1",
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "2002:a00:1::1",  # 6to4 of 10.0.0.1
        "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b::10.0.0.1",
        "64:ff9b::169.254.169.254",
        "",
        "not-an-ip",
        "example.com",
        "127.1",  # not an address literal here: callers pass resolver output
        "1.2.3.4.5",
    ],
)
def test_non_public_addresses(address: str) -> None:
    assert is_public_address(address) is False
    with pytest.raises(SecurityError, match="not public"):
        check_address(address, STRICT, url="https://idp.example/jwks")
    check_address(address, LAX, url="https://idp.example/jwks")


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "93.184.216.34",
        "100.63.255.255",
        "100.128.0.0",
        "172.32.0.1",
        "192.167.255.255",
        "198.20.0.1",
        "223.255.255.254",
        "2606:4700:4700::1111",
        "2001:4860:4860::8888",
        "[2001:4860:4860::8888]",
        "::ffff:8.8.8.8",
        "2002:808:808::1",  # 6to4 of 8.8.8.8
        "64:ff9b::8.8.8.8",
    ],
)
def test_public_addresses(address: str) -> None:
    assert is_public_address(address) is True
    check_address(address, STRICT, url="https://idp.example/jwks")


# --- SPKI pins --------------------------------------------------------------------------------


def _leaf_der(key_type: trustme.KeyType) -> bytes:
    ca = trustme.CA(key_type=key_type)
    pem = ca.issue_cert("idp.example").cert_chain_pems[0].bytes()
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def _expected_pin(der: bytes) -> str:
    spki = (
        x509.load_der_x509_certificate(der)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def _pinned(*pins: str) -> HopPolicy:
    return HopPolicy(require_https=True, allowed_domains=(), allow_private_networks=False, pinned_spki=pins)


@pytest.fixture(scope="module", params=[trustme.KeyType.ECDSA, trustme.KeyType.RSA], ids=["ecdsa", "rsa"])
def leaf(request: pytest.FixtureRequest) -> bytes:
    return _leaf_der(request.param)


@pytest.fixture(scope="module")
def other_leaf() -> bytes:
    return _leaf_der(trustme.KeyType.ECDSA)


def test_spki_pin_matches_public_key_info(leaf: bytes) -> None:
    pin = spki_sha256_b64(leaf)
    assert pin == _expected_pin(leaf)
    assert len(base64.b64decode(pin, validate=True)) == 32


@pytest.mark.parametrize("der", [b"", b"not a certificate", b"\x30\x03\x02\x01\x01"])
def test_spki_pin_of_invalid_der_is_refused(der: bytes) -> None:
    with pytest.raises(SecurityError, match="certificate"):
        spki_sha256_b64(der)


def test_check_pin_accepts_a_matching_pin(leaf: bytes, other_leaf: bytes) -> None:
    url = "https://idp.example/jwks"
    check_pin(leaf, _pinned(spki_sha256_b64(leaf)), url=url)
    check_pin(leaf, _pinned(spki_sha256_b64(other_leaf), spki_sha256_b64(leaf)), url=url)  # backup pin
    check_pin(None, STRICT, url=url)  # no pins: nothing to check, even over plain http
    check_pin(b"garbage", STRICT, url=url)


@pytest.mark.parametrize("bad_pin", ["", "not base64!", base64.b64encode(b"\0" * 32).decode(), "ü"])
def test_check_pin_refuses_a_wrong_pin(leaf: bytes, bad_pin: str) -> None:
    with pytest.raises(SecurityError, match="not among pinned_spki") as info:
        check_pin(leaf, _pinned(bad_pin), url="https://idp.example/jwks")
    assert info.value.url == "https://idp.example/jwks"


def test_check_pin_refuses_another_certificate(leaf: bytes, other_leaf: bytes) -> None:
    with pytest.raises(SecurityError, match="not among pinned_spki"):
        check_pin(other_leaf, _pinned(spki_sha256_b64(leaf)), url="https://idp.example/jwks")


def test_check_pin_refuses_a_missing_certificate(leaf: bytes) -> None:
    with pytest.raises(SecurityError, match="no TLS certificate"):
        check_pin(None, _pinned(spki_sha256_b64(leaf)), url="http://idp.example/jwks")


def test_check_pin_refuses_invalid_der_when_pinned(leaf: bytes) -> None:
    with pytest.raises(SecurityError, match="certificate") as info:
        check_pin(b"garbage", _pinned(spki_sha256_b64(leaf)), url="https://idp.example/jwks")
    assert info.value.url == "https://idp.example/jwks"


# --- content type -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON;charset=UTF-8",
        " application/json ",
        "application/jwk-set+json",
        "application/jwk-set+json; charset=utf-8",
        "application/ld+json",
        "application/vnd.example.keys+json",
    ],
)
def test_json_content_types_are_accepted(value: str | None) -> None:
    check_content_type(value, url="https://idp.example/jwks")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("text/html", "expected JSON, got text/html: probably an error page"),
        ("text/html; charset=utf-8", "expected JSON, got text/html: probably an error page"),
        ("TEXT/HTML", "probably an error page"),
        ("text/plain", "expected JSON, got text/plain"),
        ("application/xml", "expected JSON, got application/xml"),
        ("application/octet-stream", "expected JSON"),
        ("application/jsonp", "expected JSON"),
        ("application/json-seq", "expected JSON"),
        ("application/+json", "expected JSON"),
        ("text/json", "expected JSON"),
        ("application/json, text/html", "expected JSON"),
        (";charset=utf-8", "expected JSON"),
    ],
)
def test_other_content_types_are_refused(value: str, message: str) -> None:
    with pytest.raises(SecurityError, match=message) as info:
        check_content_type(value, url="https://idp.example/jwks")
    assert info.value.url == "https://idp.example/jwks"


# --- redirects --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("https://other.example/keys", "https://other.example/keys"),
        ("/keys", "https://idp.example/keys"),
        ("keys", "https://idp.example/a/keys"),
        ("../keys", "https://idp.example/keys"),
        ("../../../keys", "https://idp.example/keys"),
        ("?v=2", "https://idp.example/a/b?v=2"),
        ("//cdn.example/keys", "https://cdn.example/keys"),
        ("/keys#frag", "https://idp.example/keys"),
        ("#frag", "https://idp.example/a/b"),
        ("", "https://idp.example/a/b"),
        ("http://evil.example/", "http://evil.example/"),  # check_url decides, not this
        ("HTTPS://Other.Example/K", "https://Other.Example/K"),
    ],
)
def test_resolve_redirect(location: str, expected: str) -> None:
    assert resolve_redirect("https://idp.example/a/b#old", location) == expected


@pytest.mark.parametrize(
    "location",
    ["https://evil\t.example/", "/keys\r\nSet-Cookie: x", "https://evil.example\\@idp.example/", " /keys", "/k\x00"],
)
def test_resolve_redirect_refuses_ambiguous_locations(location: str) -> None:
    with pytest.raises(SecurityError, match="Location"):
        resolve_redirect("https://idp.example/a/b", location)


def test_redirect_to_metadata_service_is_refused_on_the_hop() -> None:
    target = resolve_redirect("https://idp.example/jwks", "http://169.254.169.254/latest/meta-data/")
    with pytest.raises(SecurityError, match="require_https"):
        check_url(target, STRICT)
    lax_public_only = HopPolicy(require_https=False, allowed_domains=(), allow_private_networks=False, pinned_spki=())
    with pytest.raises(SecurityError, match="not public"):
        check_url(target, lax_public_only)
