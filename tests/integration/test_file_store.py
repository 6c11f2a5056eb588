"""FileStore on a real file system: atomic writes, hostile files, concurrent writers, big directories."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import anyio
import anyio.to_thread
import msgspec
import pytest

from jwks_cache import ConfigError, Snapshot, StoreError
from jwks_cache._stores import FileStore, SnapshotStore
from jwks_cache._stores._codec import encode

KEY = b"k" * 32


def make_snapshot(provider: str = "google", *, tenant: str = "acme", body: bytes = b'{"keys":[]}') -> Snapshot:
    now = time.time()
    return Snapshot(
        tenant=tenant, provider=provider, jwks_url=f"https://idp.example/{provider}", body=body,
        etag='"v1"', last_modified="Wed, 21 Oct 2015 07:28:00 GMT", fetched_at=now, expires_at=now + 300,
    )  # fmt: skip


async def test_round_trip_creates_a_private_directory(tmp_path: Path) -> None:
    directory = tmp_path / "nested" / "snapshots"
    with anyio.fail_after(10):
        async with FileStore(directory) as store:
            assert isinstance(store, SnapshotStore)
            assert await store.load("acme", "google") is None  # no directory yet: simply absent
            assert await store.load_all() == []
            saved = make_snapshot()
            await store.save(saved)
            assert await store.load("acme", "google") == saved
            assert [path.name for path in directory.iterdir()] == ["acme~google.jwks"]
            assert stat.S_IMODE(directory.stat().st_mode) == 0o700
            await store.delete("acme", "google")
            await store.delete("acme", "google")  # absent is fine
            assert await store.load("acme", "google") is None
            assert list(directory.iterdir()) == []


async def test_save_replaces_and_load_all_returns_every_provider(tmp_path: Path) -> None:
    with anyio.fail_after(10):
        store = FileStore(tmp_path)
        await store.save(make_snapshot("a", body=b"old"))
        await store.save(make_snapshot("a", body=b"new"))
        await store.save(make_snapshot("b_2", tenant="other-tenant"))
        loaded = await store.load_all()
    assert [(s.tenant, s.provider, s.body) for s in loaded] == [
        ("acme", "a", b"new"),
        ("other-tenant", "b_2", b'{"keys":[]}'),
    ]


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


async def test_corrupt_truncated_foreign_and_misplaced_files_are_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = make_snapshot("good")
    payload = encode(make_snapshot("truncated"), None)
    newer = msgspec.msgpack.encode({**msgspec.structs.asdict(make_snapshot("newer")), "version": 2, "extra": [1]})
    _write(tmp_path / "acme~good.jwks", encode(good, None))
    _write(tmp_path / "acme~garbage.jwks", os.urandom(200))
    _write(tmp_path / "acme~empty.jwks", b"")
    _write(tmp_path / "acme~truncated.jwks", payload[: len(payload) // 2])
    _write(tmp_path / "acme~newer.jwks", newer)
    _write(tmp_path / "acme~copied.jwks", encode(good, None))  # names another provider inside
    _write(tmp_path / "no-separator.jwks", encode(good, None))
    _write(tmp_path / "bad name~x.jwks", encode(good, None))
    _write(tmp_path / ".acme~good.jwks.123.tmp", b"half a write")  # a writer in flight
    _write(tmp_path / "README.txt", b"not ours")
    (tmp_path / "acme~dir.jwks").mkdir()

    with anyio.fail_after(10):
        store = FileStore(tmp_path)
        with caplog.at_level(logging.WARNING, logger="jwks_cache"):
            for provider in ("garbage", "empty", "truncated", "newer", "copied"):
                assert await store.load("acme", provider) is None, provider
            loaded = await store.load_all()
        with pytest.raises(StoreError, match="cannot read"):
            await store.load("acme", "dir")  # an I/O failure, not bad data
    assert loaded == [good]
    refused = [record for record in caplog.records if record.name == "jwks_cache"]
    assert all(record.levelno == logging.WARNING for record in refused)
    assert all(isinstance(record.exc_info and record.exc_info[1], StoreError) for record in refused)
    assert any("newer" in record.getMessage() for record in refused)
    assert len(refused) == 5 + 8  # five direct loads; in load_all the five, two bad names and the directory


async def test_hmac_store_ignores_unsigned_tampered_and_foreign_key_files(tmp_path: Path) -> None:
    with anyio.fail_after(10):
        signed, unsigned, other = (
            FileStore(tmp_path, hmac_key=KEY),
            FileStore(tmp_path),
            FileStore(tmp_path, hmac_key=b"o" * 16),
        )
        good = make_snapshot("good")
        await signed.save(good)
        await unsigned.save(make_snapshot("unsigned"))
        await signed.save(make_snapshot("tampered"))
        path = tmp_path / "acme~tampered.jwks"
        data = bytearray(path.read_bytes())
        data[-5] ^= 0x01  # one bit of the body
        path.write_bytes(bytes(data))

        assert await signed.load("acme", "good") == good
        assert await signed.load("acme", "unsigned") is None
        assert await signed.load("acme", "tampered") is None
        assert await other.load("acme", "good") is None
        assert await unsigned.load("acme", "good") is None  # a MAC in front is not a snapshot
        assert await signed.load_all() == [good]


async def test_concurrent_writers_never_leave_a_torn_file(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    snapshots = [make_snapshot(body=bytes([index]) * (1000 + 37 * index)) for index in range(2)]
    reads = 0

    async def writer(snapshot: Snapshot) -> None:
        for _ in range(200):
            await store.save(snapshot)

    async def reader() -> None:
        nonlocal reads
        while not done.is_set():
            assert await store.load("acme", "google") in snapshots
            reads += 1

    with anyio.fail_after(60):
        await store.save(snapshots[0])
        done = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            async with anyio.create_task_group() as writers:
                for snapshot in snapshots:
                    writers.start_soon(writer, snapshot)
            done.set()
        assert await store.load("acme", "google") in snapshots
    assert reads > 0
    assert [path.name for path in tmp_path.iterdir()] == ["acme~google.jwks"]  # no temp files left


_WRITER_SCRIPT = textwrap.dedent(
    """
    import sys, time, anyio
    from jwks_cache import Snapshot
    from jwks_cache._stores import FileStore

    async def main(directory, marker):
        store = FileStore(directory)
        body = marker.encode() * (2000 + 500 * int(marker))
        snapshot = Snapshot(tenant="acme", provider="google", jwks_url="https://idp.example/", body=body,
                            fetched_at=time.time(), expires_at=time.time() + 300)
        for _ in range(200):
            await store.save(snapshot)

    anyio.run(main, sys.argv[1], sys.argv[2])
    """
)


async def test_two_processes_writing_the_same_provider(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    bodies = {b"1" * 2500, b"2" * 3000}
    reads = 0
    with anyio.fail_after(120):
        processes = [
            await anyio.open_process([sys.executable, "-c", _WRITER_SCRIPT, str(tmp_path), marker]) for marker in "12"
        ]
        try:
            while any(process.returncode is None for process in processes):
                snapshot = await store.load("acme", "google")
                assert snapshot is None or snapshot.body in bodies  # absent until the first write lands
                reads += 1
        finally:
            for process in processes:
                await process.wait()
                await process.aclose()
        assert [process.returncode for process in processes] == [0, 0]
        final = await store.load("acme", "google")
    assert final is not None
    assert final.body in bodies
    assert reads > 0


def _fill(directory: Path, count: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        snapshot = make_snapshot(f"p{index}", tenant=f"t{index % 7}")
        (directory / f"{snapshot.tenant}~{snapshot.provider}.jwks").write_bytes(encode(snapshot, KEY))


async def test_load_all_reads_ten_thousand_snapshots(tmp_path: Path) -> None:
    with anyio.fail_after(60):  # generous: the point is one worker-thread call, not a benchmark
        await anyio.to_thread.run_sync(_fill, tmp_path, 10_000)
        loaded = await FileStore(tmp_path, hmac_key=KEY).load_all()
    assert len(loaded) == 10_000
    assert len({(snapshot.tenant, snapshot.provider) for snapshot in loaded}) == 10_000


async def test_io_failures_raise_store_error(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_bytes(b"")
    store = FileStore(not_a_directory / "snapshots")
    with anyio.fail_after(10):
        with pytest.raises(StoreError, match="cannot write"):
            await store.save(make_snapshot())
        with pytest.raises(StoreError, match="cannot read"):
            await store.load("acme", "google")
        with pytest.raises(StoreError, match="cannot list"):
            await store.load_all()


async def test_names_outside_the_registration_alphabet_are_refused(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    with anyio.fail_after(10):
        for tenant, provider in [("../etc", "passwd"), ("acme", "a/b"), ("acme", "x~y"), ("", "p")]:
            with pytest.raises(StoreError, match="invalid tenant/provider"):
                await store.load(tenant, provider)
            with pytest.raises(StoreError, match="invalid tenant/provider"):
                await store.save(make_snapshot(provider, tenant=tenant))
    assert list(tmp_path.iterdir()) == []


def test_hmac_key_is_validated() -> None:
    with pytest.raises(ConfigError, match="hmac_key"):
        FileStore("/nonexistent", hmac_key=b"short")
    with pytest.raises(ConfigError, match="hmac_key"):
        FileStore("/nonexistent", hmac_key="a string key of enough length")  # type: ignore[arg-type]


def _symlink_or_skip(target: Path | str, link: Path) -> None:
    try:
        os.symlink(target, link)
    except (OSError, NotImplementedError) as exc:  # Windows without the privilege
        pytest.skip(f"cannot create symlinks here: {exc}")


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
async def test_symlinks_under_snapshot_names_are_not_followed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    directory, elsewhere = tmp_path / "snapshots", tmp_path / "elsewhere"
    directory.mkdir(mode=0o700)
    elsewhere.mkdir()
    good, linked = make_snapshot("good"), make_snapshot("linked")
    _write(directory / "acme~good.jwks", encode(good, None))
    _write(elsewhere / "acme~linked.jwks", encode(linked, None))  # valid, but not in the directory
    _symlink_or_skip(elsewhere / "acme~linked.jwks", directory / "acme~linked.jwks")
    _symlink_or_skip("/dev/zero", directory / "acme~zero.jwks")  # endless: once read to a MemoryError

    store = FileStore(directory)
    with anyio.fail_after(5), caplog.at_level(logging.WARNING, logger="jwks_cache"):
        assert await store.load_all() == [good]
        for provider in ("linked", "zero"):
            with pytest.raises(StoreError, match=r"acme~.*\.jwks: it is a symbolic link \(not followed\)"):
                await store.load("acme", provider)
    refused = [record.getMessage() for record in caplog.records if record.name == "jwks_cache"]
    assert len(refused) == 2
    assert all("symbolic link (not followed)" in message for message in refused)
    for name in ("acme~linked.jwks", "acme~zero.jwks"):
        assert any(name in message for message in refused), name


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
async def test_fifos_and_devices_under_snapshot_names_are_skipped_without_blocking(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = make_snapshot("good")
    _write(tmp_path / "acme~good.jwks", encode(good, None))
    fifo = tmp_path / "acme~idp.jwks"
    os.mkfifo(fifo)  # with no writer, a blocking open never returns
    unblocked = False

    async def unblock_a_stuck_reader() -> None:
        # the worker thread cannot be cancelled: if a regression blocks on the FIFO, a writer that
        # opens and closes it lets the test fail on the assertion below instead of hanging for ever
        nonlocal unblocked
        await anyio.sleep(2)
        unblocked = True
        while True:
            with contextlib.suppress(OSError):  # ENXIO: nobody is waiting to read, as it should be
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            await anyio.sleep(0.1)

    store = FileStore(tmp_path)
    with anyio.fail_after(5), caplog.at_level(logging.WARNING, logger="jwks_cache"):
        async with anyio.create_task_group() as tg:
            tg.start_soon(unblock_a_stuck_reader)
            loaded = await store.load_all()
            finished_first = not unblocked
            with pytest.raises(StoreError, match=r"acme~idp\.jwks: it is not a regular file"):
                await store.load("acme", "idp")
            tg.cancel_scope.cancel()
    assert finished_first, "load_all waited for a writer on the FIFO"
    assert loaded == [good]
    refused = [record.getMessage() for record in caplog.records if record.name == "jwks_cache"]
    assert len(refused) == 1
    assert "acme~idp.jwks: it is not a regular file" in refused[0]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
async def test_load_all_warns_once_about_a_directory_others_can_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "shared"
    good = make_snapshot("good")
    with anyio.fail_after(10):
        store = FileStore(directory)
        await store.save(good)
        with caplog.at_level(logging.WARNING, logger="jwks_cache"):
            assert await store.load_all() == [good]  # private, as the store makes it: no warning
        assert [record for record in caplog.records if record.name == "jwks_cache"] == []
        for mode in (0o770, 0o757, 0o1777):
            directory.chmod(mode)
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="jwks_cache"):
                assert await store.load_all() == [good]  # still loaded: a warning, not a refusal
            warnings = [record for record in caplog.records if record.name == "jwks_cache"]
            assert len(warnings) == 1, oct(mode)
            assert warnings[0].levelno == logging.WARNING
            assert str(directory) in warnings[0].getMessage()
            assert "writable by group or others" in warnings[0].getMessage()
        directory.chmod(0o700)


async def test_entering_the_store_removes_the_temp_files_of_interrupted_saves_and_nothing_else(
    tmp_path: Path,
) -> None:
    directory, elsewhere = tmp_path / "snapshots", tmp_path / "elsewhere"
    directory.mkdir(mode=0o700)
    elsewhere.mkdir()
    snapshot = make_snapshot("google")
    _write(directory / "acme~google.jwks", encode(snapshot, None))
    hour_ago = time.time() - 3600

    def temp_file(provider: str) -> Path:
        """A temp file named as a save names its own (a process killed mid-save leaves it)."""
        fd, name = tempfile.mkstemp(prefix=f".acme~{provider}.jwks.", suffix=".tmp", dir=directory)
        os.close(fd)
        return Path(name)

    crashed = [temp_file("google"), temp_file("github")]
    for path in crashed:
        os.utime(path, (hour_ago, hour_ago))
    in_progress = temp_file("google")  # another process sharing the directory, writing right now
    foreign = [directory / name for name in (".other.tmp", "notes.tmp", ".acme~google.jwks.x.tmp.bak", ".x~y.tmp")]
    for path in foreign:
        path.write_bytes(b"not ours")
        os.utime(path, (hour_ago, hour_ago))
    target = elsewhere / "precious"
    target.write_bytes(b"keep me")
    planted = directory / ".acme~planted.jwks.abcdefgh.tmp"
    _symlink_or_skip(target, planted)
    os.utime(planted, (hour_ago, hour_ago), follow_symlinks=False)
    a_directory = directory / ".acme~dir.jwks.abcdefgh.tmp"
    a_directory.mkdir()
    os.utime(a_directory, (hour_ago, hour_ago))

    with anyio.fail_after(5):
        async with FileStore(directory) as store:
            assert not any(path.exists() for path in crashed)
            assert await store.load_all() == [snapshot]
    assert in_progress.exists()  # younger than a minute: left to its writer
    assert all(path.exists() for path in foreign)
    assert planted.is_symlink() and target.read_bytes() == b"keep me"
    assert a_directory.is_dir()
