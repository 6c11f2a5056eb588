"""The snapshot wire format shared by every store, and MemoryStore (the codec with a dict behind it)."""

from __future__ import annotations

import logging
import math

import anyio
import msgspec
import pytest

from jwks_cache import ConfigError, Snapshot, StoreError
from jwks_cache._models import SNAPSHOT_VERSION
from jwks_cache._stores import FileStore, MemoryStore, RedisStore, SharedStore, SnapshotStore
from jwks_cache._stores._codec import (
    MAC_SIZE,
    Rejections,
    check_hmac_key,
    check_names,
    decode,
    decode_notice,
    decode_or_none,
    encode,
    encode_notice,
)

KEY = b"0123456789abcdef0123456789abcdef"
SNAPSHOT = Snapshot(
    tenant="acme", provider="google", jwks_url="https://idp.example/jwks", body=b'{"keys":[]}',
    etag='W/"1"', last_modified="Wed, 21 Oct 2015 07:28:00 GMT", fetched_at=1_700_000_000.0,
    expires_at=1_700_000_300.0,
)  # fmt: skip


def _fields(**changes: object) -> dict[str, object]:
    return {**msgspec.structs.asdict(SNAPSHOT), **changes}


def test_round_trip_without_and_with_a_key() -> None:
    plain, signed = encode(SNAPSHOT, None), encode(SNAPSHOT, KEY)
    assert decode(plain, None, source="t") == SNAPSHOT
    assert decode(signed, KEY, source="t", expect=("acme", "google")) == SNAPSHOT
    assert signed[MAC_SIZE:] == plain  # MAC || payload
    assert msgspec.msgpack.decode(plain)["version"] == SNAPSHOT_VERSION  # always written


@pytest.mark.parametrize(
    ("data", "key", "message"),
    [
        pytest.param(encode(SNAPSHOT, KEY)[:-1] + b"\x00", KEY, "HMAC", id="tampered-payload"),
        pytest.param(bytes([encode(SNAPSHOT, KEY)[0] ^ 1]) + encode(SNAPSHOT, KEY)[1:], KEY, "HMAC", id="tampered-mac"),
        pytest.param(encode(SNAPSHOT, b"another key of 16+ bytes"), KEY, "HMAC", id="other-key"),
        pytest.param(encode(SNAPSHOT, None), KEY, "HMAC", id="unsigned"),
        pytest.param(b"short", KEY, "HMAC", id="shorter-than-a-mac"),
        pytest.param(encode(SNAPSHOT, KEY), None, "corrupt", id="signed-read-without-key"),
        pytest.param(b"", None, "corrupt", id="empty"),
        pytest.param(encode(SNAPSHOT, None)[:-4], None, "corrupt", id="truncated"),
        pytest.param(encode(SNAPSHOT, None) + b"\x00", None, "corrupt", id="trailing-bytes"),
        pytest.param(msgspec.msgpack.encode([1, 2]), None, "corrupt", id="not-a-map"),
        pytest.param(msgspec.msgpack.encode(_fields(body="text")), None, "corrupt", id="wrong-type"),
        pytest.param(msgspec.msgpack.encode(_fields(version=SNAPSHOT_VERSION + 1)), None, "newer", id="newer"),
        pytest.param(msgspec.msgpack.encode(_fields(version="1")), None, "corrupt", id="version-not-int"),
        pytest.param(msgspec.msgpack.encode(_fields(version=0)), None, "invalid format version", id="version-0"),
        pytest.param(msgspec.msgpack.encode(_fields(expires_at=math.inf)), None, "non-finite", id="inf"),
        pytest.param(msgspec.msgpack.encode(_fields(fetched_at=math.nan)), None, "non-finite", id="nan"),
    ],
)
def test_bad_data_is_a_store_error(data: bytes, key: bytes | None, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        decode(data, key, source="t")


def test_newer_format_is_refused_even_when_its_fields_changed_shape() -> None:
    future = {"version": SNAPSHOT_VERSION + 1, "tenant": ["now", "a", "list"], "body": 42}
    with pytest.raises(StoreError, match="newer"):
        decode(msgspec.msgpack.encode(future), None, source="t")


def test_unknown_fields_are_tolerated_and_missing_optional_ones_defaulted() -> None:
    extended = msgspec.msgpack.encode(_fields(future_field={"x": 1}))
    assert decode(extended, None, source="t") == SNAPSHOT
    minimal = msgspec.msgpack.encode({"tenant": "acme", "provider": "google", "jwks_url": "u", "body": b"{}"})
    snapshot = decode(minimal, None, source="t")
    assert (snapshot.etag, snapshot.expires_at, snapshot.version) == (None, 0.0, SNAPSHOT_VERSION)


def test_a_snapshot_naming_another_provider_is_refused() -> None:
    with pytest.raises(StoreError, match="belongs to 'acme/google'"):
        decode(encode(SNAPSHOT, KEY), KEY, source="t", expect=("acme", "okta"))


def test_decode_or_none_logs_a_store_error_at_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="jwks_cache"):
        assert decode_or_none(b"junk", None, source="somewhere") is None
    (record,) = caplog.records
    assert (record.name, record.levelno) == ("jwks_cache", logging.WARNING)
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], StoreError)
    assert "somewhere" in record.getMessage()


def test_rejections_log_the_first_few_then_a_count(caplog: pytest.LogCaptureFixture) -> None:
    rejections = Rejections(limit=3)
    with caplog.at_level(logging.WARNING, logger="jwks_cache"):
        for index in range(10):
            assert decode_or_none(b"junk", None, source=f"s{index}", rejections=rejections) is None
        rejections.summarize()
    assert rejections.count == 10
    assert len(caplog.records) == 4
    assert "7 more" in caplog.records[-1].getMessage()


@pytest.mark.parametrize("key", [b"", b"x" * 15, "a text key of 16+ chars", 42])
def test_weak_or_mistyped_hmac_keys_are_config_errors(key: object) -> None:
    with pytest.raises(ConfigError, match="hmac_key"):
        check_hmac_key(key)


def test_hmac_key_accepts_bytes_like_and_none() -> None:
    assert check_hmac_key(None) is None
    assert check_hmac_key(bytearray(KEY)) == KEY


@pytest.mark.parametrize(
    ("tenant", "provider"),
    [("", "p"), ("t", ""), ("a_b", "p"), ("t", "a/b"), ("..", "p"), ("t", "x~y"), ("t" * 65, "p"), ("t", "é")],
)
def test_names_outside_the_registration_alphabet_are_refused(tenant: str, provider: str) -> None:
    with pytest.raises(StoreError, match="invalid tenant/provider"):
        check_names(tenant, provider)
    with pytest.raises(StoreError, match="invalid tenant/provider"):
        encode(msgspec.structs.replace(SNAPSHOT, tenant=tenant, provider=provider), None)


def test_notices_round_trip_and_skip_their_origin() -> None:
    notice = encode_notice(SNAPSHOT, "me")
    assert decode_notice(notice, skip_origin="other") == ("acme", "google")
    assert decode_notice(notice.decode(), skip_origin="other") == ("acme", "google")  # decoding clients
    assert decode_notice(notice, skip_origin="me") is None


@pytest.mark.parametrize(
    "data", [b"junk", b"[1]", b'{"tenant":"../x","provider":"p","fetched_at":1}', b'{"tenant":"t"}', 42, None]
)
def test_malformed_notices_are_ignored(data: object) -> None:
    assert decode_notice(data, skip_origin="me") is None


def test_every_store_satisfies_the_protocols() -> None:
    assert isinstance(MemoryStore(), SnapshotStore)
    assert isinstance(FileStore("/nonexistent"), SnapshotStore)
    redis_store = RedisStore("redis://127.0.0.1:1/0", shared=True)
    assert isinstance(redis_store, SharedStore)
    assert redis_store.shared
    assert not isinstance(MemoryStore(), SharedStore)


async def test_memory_store_round_trip() -> None:
    with anyio.fail_after(5):
        async with MemoryStore() as store:
            assert await store.load("acme", "google") is None
            await store.save(SNAPSHOT)
            other = msgspec.structs.replace(SNAPSHOT, provider="okta")
            await store.save(other)
            assert await store.load("acme", "google") == SNAPSHOT
            assert await store.load_all() == [SNAPSHOT, other]
            await store.delete("acme", "google")
            await store.delete("acme", "google")
            assert await store.load("acme", "google") is None
            assert await store.load_all() == [other]
        assert await store.load("acme", "okta") == other  # survives close: usable across "restarts"


async def test_memory_store_with_a_key_ignores_tampered_entries() -> None:
    with anyio.fail_after(5):
        store = MemoryStore(hmac_key=KEY)
        await store.save(SNAPSHOT)
        raw = store._raw()
        raw[("acme", "google")] = raw[("acme", "google")][:-1] + b"!"
        raw[("acme", "okta")] = encode(msgspec.structs.replace(SNAPSHOT, provider="okta"), None)
        assert await store.load("acme", "google") is None
        assert await store.load("acme", "okta") is None
        assert await store.load_all() == []
