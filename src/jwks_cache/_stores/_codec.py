"""The one wire format of every store: msgpack of :class:`Snapshot`, optionally behind an HMAC.

With a key the stored bytes are ``HMAC-SHA256(key, payload) || payload``. The MAC covers the whole
encoded snapshot, tenant and provider included, and ``decode`` checks those against the names asked
for, so a valid snapshot copied onto another provider's slot is still refused. Decoding never raises
for bad bytes in the store-facing helper: a poisoned or half-written store must not take lookups down.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
from typing import Final

import msgspec

from .._config import PROVIDER_NAME, TENANT_NAME
from .._errors import ConfigError, StoreError
from .._jose._nesting import json_problem, msgpack_problem
from .._models import SNAPSHOT_VERSION, Snapshot

__all__ = [
    "MAC_SIZE",
    "MAX_SNAPSHOT_BYTES",
    "Rejections",
    "check_hmac_key",
    "check_names",
    "decode",
    "decode_notice",
    "decode_or_none",
    "encode",
    "encode_notice",
    "log_ignored",
]

log = logging.getLogger("jwks_cache")

MAC_SIZE: Final = 32  # bytes of HMAC-SHA256
MIN_HMAC_KEY_BYTES: Final = 16
#: A stored snapshot larger than this is treated as corrupt rather than read into memory.
MAX_SNAPSHOT_BYTES: Final = 64 * 1024 * 1024

# The registration rules of ProviderConfig; stores rely on them to build file names and Redis keys.

_ENCODER: Final = msgspec.msgpack.Encoder()
_SNAPSHOT_DECODER: Final = msgspec.msgpack.Decoder(Snapshot)


class _Envelope(msgspec.Struct):
    """Only the version, read first so a newer format is reported as such, not as corruption."""

    version: int = SNAPSHOT_VERSION


_ENVELOPE_DECODER: Final = msgspec.msgpack.Decoder(_Envelope)


def check_hmac_key(hmac_key: object) -> bytes | None:
    """Validate a store's ``hmac_key`` at construction, where a typo is cheapest to report."""
    if hmac_key is None:
        return None
    if not isinstance(hmac_key, bytes | bytearray | memoryview):
        raise ConfigError(f"hmac_key must be bytes (got {type(hmac_key).__name__})")
    if len(hmac_key) < MIN_HMAC_KEY_BYTES:
        raise ConfigError(f"hmac_key must be at least {MIN_HMAC_KEY_BYTES} bytes (got {len(hmac_key)})")
    return bytes(hmac_key)


def check_names(tenant: str, provider: str) -> None:
    """Refuse names outside the registration alphabet: they become file names and Redis keys."""
    if TENANT_NAME.fullmatch(tenant) is None or PROVIDER_NAME.fullmatch(provider) is None:
        raise StoreError(f"invalid tenant/provider name for a snapshot: {tenant!r}/{provider!r}")


def _mac(hmac_key: bytes, payload: bytes) -> bytes:
    return hmac.new(hmac_key, payload, hashlib.sha256).digest()


def encode(snapshot: Snapshot, hmac_key: bytes | None) -> bytes:
    """The bytes a store writes for ``snapshot``."""
    check_names(snapshot.tenant, snapshot.provider)
    payload = _ENCODER.encode(snapshot)
    return payload if hmac_key is None else _mac(hmac_key, payload) + payload


def decode(
    data: bytes,
    hmac_key: bytes | None,
    *,
    source: str,
    expect: tuple[str, str] | None = None,
) -> Snapshot:
    """Verify and decode stored bytes.

    Args:
        data: what the store read.
        hmac_key: the store's key; with one, unsigned or tampered data is refused.
        source: where the bytes came from (file path, Redis key), for the error message.
        expect: ``(tenant, provider)`` the caller looked up; a snapshot naming another is refused.

    Raises:
        StoreError: the data is corrupt, truncated, from a newer format, or fails the MAC.
    """
    if len(data) > MAX_SNAPSHOT_BYTES:
        raise StoreError(f"snapshot {source} is larger than {MAX_SNAPSHOT_BYTES} bytes")
    payload = data
    if hmac_key is not None:
        mac, payload = data[:MAC_SIZE], data[MAC_SIZE:]
        if len(mac) < MAC_SIZE or not hmac.compare_digest(mac, _mac(hmac_key, payload)):
            raise StoreError(f"snapshot {source} failed its HMAC check")
    problem = msgpack_problem(payload)  # the decoders recurse even into fields they skip
    if problem is not None:
        raise StoreError(f"snapshot {source} is corrupt: it {problem}")
    try:
        version = _ENVELOPE_DECODER.decode(payload).version
    except msgspec.DecodeError as exc:
        raise StoreError(f"snapshot {source} is corrupt: {exc}") from exc
    if version > SNAPSHOT_VERSION:
        raise StoreError(f"snapshot {source} has format version {version}, newer than {SNAPSHOT_VERSION}")
    if version < 1:
        raise StoreError(f"snapshot {source} has an invalid format version {version}")
    try:
        snapshot = _SNAPSHOT_DECODER.decode(payload)
    except msgspec.DecodeError as exc:
        raise StoreError(f"snapshot {source} is corrupt: {exc}") from exc
    if not (math.isfinite(snapshot.fetched_at) and math.isfinite(snapshot.expires_at)):
        raise StoreError(f"snapshot {source} has non-finite times")
    if expect is not None and (snapshot.tenant, snapshot.provider) != expect:
        found = f"{snapshot.tenant}/{snapshot.provider}"
        raise StoreError(f"snapshot {source} belongs to {found!r}, not {expect[0]}/{expect[1]}")
    return snapshot


def log_ignored(error: StoreError) -> None:
    """The one way a store reports data it refused: WARNING on ``jwks_cache``, with the error attached."""
    log.warning("ignoring stored snapshot: %s", error, exc_info=error)


class Rejections:
    """Logs the first few snapshots a batch refuses, then only counts: a wrong key must not flood logs."""

    def __init__(self, limit: int = 10) -> None:
        self.count = 0
        self._limit = limit

    def add(self, error: StoreError) -> None:
        self.count += 1
        if self.count <= self._limit:
            log_ignored(error)

    def summarize(self) -> None:
        if self.count > self._limit:
            log.warning("ignoring stored snapshots: %d more refused", self.count - self._limit)


def decode_or_none(
    data: bytes,
    hmac_key: bytes | None,
    *,
    source: str,
    expect: tuple[str, str] | None = None,
    rejections: Rejections | None = None,
) -> Snapshot | None:
    """:func:`decode`, but bad data is logged (through ``rejections`` in a batch) and becomes ``None``."""
    try:
        return decode(data, hmac_key, source=source, expect=expect)
    except StoreError as exc:
        (rejections or Rejections()).add(exc)
        return None


class _Notice(msgspec.Struct, frozen=True):
    """A change notice: small, and JSON so that clients decoding responses to str read it too."""

    tenant: str
    provider: str
    fetched_at: float
    origin: str = ""  # the publishing store instance, so it can skip its own notices


def encode_notice(snapshot: Snapshot, origin: str) -> bytes:
    """The message announcing that ``snapshot`` was just stored by ``origin``."""
    return msgspec.json.encode(_Notice(snapshot.tenant, snapshot.provider, snapshot.fetched_at, origin))


def decode_notice(data: object, *, skip_origin: str) -> tuple[str, str] | None:
    """A notice's ``(tenant, provider)``; ``None`` for malformed ones and for those from ``skip_origin``.

    Notices are not signed: the worst a forged one does is make listeners re-read a snapshot, which
    is itself verified.
    """
    if not isinstance(data, bytes | str) or json_problem(data) is not None:
        return None
    try:
        notice = msgspec.json.decode(data, type=_Notice)
        check_names(notice.tenant, notice.provider)
    except (msgspec.DecodeError, StoreError):
        return None
    if notice.origin == skip_origin:
        return None
    return notice.tenant, notice.provider
