"""The one nesting bound: the recursion-free scans, and every parser refusing deep input with its own error.

Deep input used to raise RecursionError out of msgspec, json and tomllib (ending whole task groups);
each parser now asks jwks_cache._jose._nesting first and refuses with the error it uses for any other
malformed input.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path

import msgspec
import pytest

from jwks_cache import ConfigError, InvalidJwksError, Snapshot, StoreError, TokenError
from jwks_cache._asgi._fields import decode_registration
from jwks_cache._asgi._plumbing import HttpProblem
from jwks_cache._cli._serve import load_serve_config
from jwks_cache._jose._jwks import parse_jwks
from jwks_cache._jose._jws import check_claims, parse_jws
from jwks_cache._jose._nesting import (
    MAX_DEPTH,
    MAX_MSGPACK_VALUES,
    TOO_DEEP,
    json_problem,
    msgpack_problem,
    toml_problem,
)
from jwks_cache._stores import FileStore
from jwks_cache._stores._codec import decode, decode_notice, decode_or_none, encode, encode_notice

SNAPSHOT = Snapshot(tenant="acme", provider="idp", jwks_url="https://idp.example/jwks", body=b'{"keys":[]}')
#: deeper than any decoder's recursion limit, in well under a megabyte
ABYSS = 100_000


def arrays(depth: int, leaf: bytes = b"1") -> bytes:
    return b"[" * depth + leaf + b"]" * depth


def objects(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def msgpack_arrays(depth: int) -> bytes:
    return b"\x91" * depth + b"\xc0"  # fixarrays of one element around a nil


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


HEADER = b64(b'{"alg":"RS256"}')


# --- the scans ---------------------------------------------------------------------------------


@pytest.mark.parametrize("nest", [arrays, objects])
def test_json_depth_at_the_bound_passes_and_one_more_is_refused(nest: object) -> None:
    assert callable(nest)
    assert json_problem(nest(MAX_DEPTH)) is None
    assert json_problem(nest(MAX_DEPTH + 1)) == TOO_DEEP == f"nests deeper than {MAX_DEPTH} levels"
    assert json_problem(nest(MAX_DEPTH + 1).decode()) == TOO_DEEP  # str input too


def test_json_matches_what_the_decoder_would_build() -> None:
    """The scan and msgspec agree on depth for documents mixing arrays, objects and strings."""
    tree: object = "x"
    for level in range(MAX_DEPTH + 5):
        tree = [tree, "]]"] if level % 2 else {"k[": tree, "{": "}"}
        document = json.dumps(tree).encode()
        assert (json_problem(document) is None) == (level + 1 <= MAX_DEPTH), level


@pytest.mark.parametrize(
    "document",
    [
        b'["' + b"[" * 100 + b'"]',  # brackets inside a string
        b'{"k": "' + b"{" * 100 + b'"}',
        b'["\\"' + b"[" * 100 + b'"]',  # an escaped quote does not end the string
        b'["\\\\\\"' + b"[" * 100 + b'"]',  # nor does one after an escaped backslash
        b'["\\u005b' * 50 + b'"]',  # a \u escape of "[" is not a bracket
        b"[" + b"[]," * 100_000 + b"[]]",  # huge but flat
        b"[" + b'"a",' * 100_000 + b"1]",
    ],
)
def test_json_brackets_in_strings_and_wide_documents_do_not_count(document: bytes) -> None:
    assert json_problem(document) is None


@pytest.mark.parametrize(
    "document",
    [
        b'["\\\\"' + b"[" * 40,  # an escaped backslash, then the string ends: these are real
        b'["a", "b"' + b", [" * 40,
        b"[" * 40,  # truncated: never closed, but the decoder would descend all the same
        b"\xff\xfe\x00" + b"{" * 40,  # not UTF-8: refused without raising
        b'"unterminated' + b"\\" + b"]" * 5 + b'"' + b"[" * 40,
    ],
)
def test_json_real_brackets_count_even_in_malformed_input(document: bytes) -> None:
    assert json_problem(document) == TOO_DEEP


def test_json_truncated_inside_a_string_is_left_to_the_decoder() -> None:
    assert json_problem(b'["' + b"[" * 40) is None  # an unterminated string: msgspec refuses it flat
    assert json_problem(b"") is None
    assert json_problem(b"\\") is None


@pytest.mark.parametrize("build", [arrays, lambda n: b"[" * n, objects])
def test_a_million_levels_are_refused_fast_and_without_recursion(build: object) -> None:
    assert callable(build)
    document = build(1_000_000)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(100)  # a recursive scan would fail at once
    try:
        started = time.perf_counter()
        assert json_problem(document) == TOO_DEEP
        assert msgpack_problem(msgpack_arrays(1_000_000)) == TOO_DEEP
        assert toml_problem(b"x = " + document) == TOO_DEEP
        assert time.perf_counter() - started < 5  # linear C passes: well under a second on a laptop
    finally:
        sys.setrecursionlimit(limit)


def test_msgpack_depth_at_the_bound_passes_and_one_more_is_refused() -> None:
    assert msgpack_problem(msgpack_arrays(MAX_DEPTH)) is None
    assert msgpack_problem(msgpack_arrays(MAX_DEPTH + 1)) == TOO_DEEP
    nested: object = 1
    for level in range(MAX_DEPTH - 1):  # maps and arrays alike, inside one more map
        nested = {"k": nested} if level % 2 else [nested]
    assert msgpack_problem(msgspec.msgpack.encode({"x": nested})) is None
    assert msgpack_problem(msgspec.msgpack.encode({"x": [nested]})) == TOO_DEEP


@pytest.mark.parametrize(
    "data",
    [
        msgspec.msgpack.encode({"body": b"\x91" * 1000, "s": "\x80" * 500, "e": msgspec.msgpack.Ext(1, b"\x91" * 99)}),
        msgspec.msgpack.encode([[[]] * 50] * 50),  # wide
        b"\xdd\xff\xff\xff\xff" + b"\x90" * 40,  # a count far beyond the data: ends with the data
        b"\xdc\x00\x01" + b"\xc1" + b"\x91" * 40,  # a byte that is never msgpack: the decoder stops there
        b"\xc6\xff\xff\xff\xff" + b"\x91" * 40,  # a bin longer than the data: nothing else to read
        msgspec.msgpack.encode(SNAPSHOT),
    ],
)
def test_msgpack_payloads_and_wide_or_truncated_data_pass(data: bytes) -> None:
    assert msgpack_problem(data) is None


def test_msgpack_walks_a_bounded_number_of_values() -> None:
    many = msgspec.msgpack.encode([[]] * (MAX_MSGPACK_VALUES + 1))
    assert msgpack_problem(many) == f"holds more than {MAX_MSGPACK_VALUES} values"
    assert msgpack_problem(msgspec.msgpack.encode([[]] * (MAX_MSGPACK_VALUES - 2))) is None


@pytest.mark.parametrize(
    "text",
    [
        "# " + "[" * 100,
        'x = "' + "[" * 100 + '"',
        "x = '" + "{" * 100 + "'",
        'x = """\n' + "[" * 100 + '\n"""',
        "x = '''\n" + "[" * 100 + "\n'''",
        'x = "\\"' + "[" * 100 + '"',
        "[[a]]\n" * 100 + "[b.c]\n" * 100,
        "x = " + "[" * MAX_DEPTH + "]" * MAX_DEPTH,
    ],
)
def test_toml_strings_comments_and_headers_do_not_nest(text: str) -> None:
    assert toml_problem(text.encode()) is None


def test_toml_inline_nesting_is_refused() -> None:
    assert toml_problem(b"x = " + arrays(MAX_DEPTH + 1)) == TOO_DEEP
    assert toml_problem(b"x = " + b"{a = " * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1)) == TOO_DEEP


# --- every parser, with its own error --------------------------------------------------------


@pytest.mark.parametrize("deep", [arrays(ABYSS), b'{"keys": [], "x": ' + objects(40) + b"}"])
def test_jwks(deep: bytes) -> None:
    with pytest.raises(InvalidJwksError, match=rf"^\$: nests deeper than {MAX_DEPTH} levels$") as info:
        parse_jwks(deep, url="https://idp.example/jwks")
    assert info.value.url == "https://idp.example/jwks"


@pytest.mark.parametrize("deep", [arrays(5_000), b'{"alg": "RS256", "x": ' + objects(40) + b"}"])
def test_jws_header(deep: bytes) -> None:
    with pytest.raises(TokenError, match=f"header {TOO_DEEP}") as info:
        parse_jws(f"{b64(deep)}.{b64(b'{}')}.{b64(b'sig')}")
    assert info.value.reason == "malformed"


@pytest.mark.parametrize("deep", [arrays(5_000), b'{"sub": "a", "x": ' + objects(40) + b"}"])
def test_jws_claims(deep: bytes) -> None:
    parsed = parse_jws(f"{HEADER}.{b64(deep)}.{b64(b'sig')}")
    with pytest.raises(TokenError, match=f"payload {TOO_DEEP}") as info:
        check_claims(parsed, now=0.0, leeway=0.0, audience=None, issuer=None)
    assert info.value.reason == "malformed_claims"


def test_claims_at_the_bound_are_accepted() -> None:
    claims = b'{"sub": "a", "x": ' + objects(MAX_DEPTH - 1) + b"}"
    parsed = parse_jws(f"{HEADER}.{b64(claims)}.{b64(b'sig')}")
    assert check_claims(parsed, now=0.0, leeway=0.0, audience=None, issuer=None)["sub"] == "a"


@pytest.mark.parametrize("form", [bytes, lambda b: b.decode()])
def test_notice(form: object) -> None:
    assert callable(form)
    valid = encode_notice(SNAPSHOT, "peer")
    deep = valid[:-1] + b',"x":' + arrays(ABYSS) + b"}"
    assert decode_notice(form(valid), skip_origin="me") == ("acme", "idp")
    assert decode_notice(form(deep), skip_origin="me") is None


def _deep_snapshot(depth: int) -> bytes:
    """A valid snapshot with one more (unknown) field holding ``depth`` nested arrays."""
    plain = encode(SNAPSHOT, None)
    return bytes([plain[0] + 1]) + plain[1:] + b"\xa5extra" + msgpack_arrays(depth)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, ABYSS])
def test_snapshot(depth: int, caplog: pytest.LogCaptureFixture) -> None:
    assert decode(_deep_snapshot(MAX_DEPTH - 1), None, source="s") == SNAPSHOT  # unknown fields are fine
    with pytest.raises(StoreError, match=f"^snapshot s is corrupt: it {TOO_DEEP}$"):
        decode(_deep_snapshot(depth), None, source="s")
    assert decode_or_none(_deep_snapshot(depth), None, source="s") is None
    assert TOO_DEEP in caplog.text


async def test_file_store_ignores_a_deep_snapshot(tmp_path: Path) -> None:
    async with FileStore(tmp_path) as store:
        store.path_for("acme", "idp").write_bytes(_deep_snapshot(ABYSS))
        assert await store.load("acme", "idp") is None
        assert await store.load_all() == []


@pytest.mark.parametrize("deep", [arrays(ABYSS), b'{"labels": {"a": "b"}, "x": ' + objects(40) + b"}"])
def test_control_plane_body(deep: bytes) -> None:
    with pytest.raises(HttpProblem) as info:
        decode_registration(deep, "acme", "idp")
    assert info.value.status == 400
    assert TOO_DEEP in info.value.detail


def test_serve_config(tmp_path: Path) -> None:
    path = tmp_path / "serve.toml"
    path.write_bytes(b"[registry]\nx = " + arrays(ABYSS))
    with pytest.raises(ConfigError, match=f"serve.toml: not valid TOML: it {TOO_DEEP}$"):
        load_serve_config(path)
    path.write_bytes(b"[registry]\nx = '\xff'\n")
    with pytest.raises(ConfigError, match="serve.toml: not valid TOML: not UTF-8"):
        load_serve_config(path)
