"""FileStore: one file per provider in a private directory, written atomically.

Every blocking call runs in a worker thread through ``anyio.to_thread.run_sync``, which waits for the
thread even when the caller is cancelled: a save is either fully replaced or not at all. Writers
never share a temp file (``mkstemp``), and ``os.replace`` is atomic, so two processes writing the same
provider leave the last complete snapshot, never a torn one. A process killed mid-save leaves its
temp file behind; entering the store removes those older than a minute (younger ones may belong
to another process writing into the same directory right now).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
import time
from pathlib import Path
from typing import Final, Self

import anyio.lowlevel
import anyio.to_thread

from .._errors import StoreError
from .._models import Snapshot
from . import _codec
from ._protocol import ClosesOnExit

__all__ = ["FileStore"]

_SUFFIX: Final = ".jwks"
_SEPARATOR: Final = "~"  # outside both name alphabets, so the split is unambiguous
_DIR_MODE: Final = 0o700  # key sets are public, but their freshness metadata is operational data
# never follow a planted symlink, never wait on a FIFO (O_NONBLOCK), never leak the fd into children
_OPEN_FLAGS: Final = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_BINARY", 0)
    | getattr(os, "O_CLOEXEC", 0)
)
_SYMLINK_ERRNOS: Final = frozenset({errno.ELOOP, errno.EMLINK})  # O_NOFOLLOW: Linux/macOS, FreeBSD
_READ_CHUNK: Final = 1024 * 1024  # bytes per read once the file turned out longer than its size said
_TEMP_PREFIX: Final = "."
_TEMP_SUFFIX: Final = ".tmp"
_TEMP_RANDOM: Final = re.compile(r"[A-Za-z0-9_]{1,32}")  # mkstemp's random part ("abc...z0-9_", 8 today)
# a temp file untouched this long is a dead writer's: a live one writes and renames it within a save
# (one fsync'd file of at most a few MB), and the margin covers a slow disk and a process paused for a while
_STALE_TEMP_SECONDS: Final = 60.0


class FileStore(ClosesOnExit):
    """A :class:`SnapshotStore` on the local file system: the embedded default for one host.

    Files are named ``{tenant}~{provider}.jwks``; temporary files start with a dot and are never
    read, and entering the store (``async with``, as the Registry does) removes those a crash left
    behind once they are a minute old. Corrupt, truncated, foreign-version or tampered files are
    logged and ignored.
    """

    def __init__(self, directory: str | os.PathLike[str], *, hmac_key: bytes | None = None) -> None:
        """Use ``directory`` for snapshots; it is created (mode 0o700) on the first save.

        Creation is deferred so that an unwritable path degrades persistence to logged
        ``StoreError``s at run time instead of failing the service at construction.

        Args:
            directory: where the snapshot files live; shared safely by several processes.
            hmac_key: when set (at least 16 bytes), snapshots are signed and unsigned or altered
                files are ignored.

        Raises:
            ConfigError: ``hmac_key`` is not bytes or is too short.
        """
        self._directory = Path(directory)
        self._hmac_key = _codec.check_hmac_key(hmac_key)

    def __repr__(self) -> str:
        return f"FileStore({str(self._directory)!r})"

    async def __aenter__(self) -> Self:
        """Open the store: remove the temporary files of saves a crash interrupted (never raises)."""
        await anyio.to_thread.run_sync(self._sweep_stale_temps_sync)
        return self

    @property
    def directory(self) -> Path:
        """Where the snapshot files live."""
        return self._directory

    def path_for(self, tenant: str, provider: str) -> Path:
        """The file holding the provider's snapshot."""
        _codec.check_names(tenant, provider)
        return self._directory / f"{tenant}{_SEPARATOR}{provider}{_SUFFIX}"

    async def load(self, tenant: str, provider: str) -> Snapshot | None:
        """The provider's snapshot, or ``None`` if absent or unusable (logged).

        Raises:
            StoreError: the file exists but cannot be read.
        """
        path = self.path_for(tenant, provider)
        return await anyio.to_thread.run_sync(self._load_sync, path, (tenant, provider))

    async def save(self, snapshot: Snapshot) -> None:
        """Atomically replace the provider's file with ``snapshot``.

        Raises:
            StoreError: the directory or file cannot be written.
        """
        path = self.path_for(snapshot.tenant, snapshot.provider)
        data = _codec.encode(snapshot, self._hmac_key)
        await anyio.to_thread.run_sync(self._save_sync, path, data)

    async def delete(self, tenant: str, provider: str) -> None:
        """Remove the provider's file, if any.

        Raises:
            StoreError: the file exists but cannot be removed.
        """
        path = self.path_for(tenant, provider)
        await anyio.to_thread.run_sync(self._delete_sync, path)

    async def load_all(self) -> list[Snapshot]:
        """Every usable snapshot in the directory, read in one worker-thread call.

        Raises:
            StoreError: the directory exists but cannot be listed.
        """
        return await anyio.to_thread.run_sync(self._load_all_sync)

    async def aclose(self) -> None:
        """Nothing is held open between calls."""
        await anyio.lowlevel.checkpoint()

    # -- worker-thread side -------------------------------------------------------------------

    def _read(self, path: Path, rejections: _codec.Rejections | None = None) -> bytes | None:
        """The file's bytes; ``None`` when absent or too large to be a snapshot (logged).

        Only a regular file is read, and at most one byte past the limit: a symlink (to ``/dev/zero``,
        say), a FIFO or a device planted under a snapshot's name is refused, never followed or waited on.

        Raises:
            StoreError: the file cannot be opened or read, is a symbolic link or is not a regular file.
        """
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno in _SYMLINK_ERRNOS and os.path.islink(path):
                raise StoreError(f"cannot read snapshot {path}: it is a symbolic link (not followed)") from exc
            raise StoreError(f"cannot read snapshot {path}: {exc}") from exc
        try:
            status = os.fstat(fd)
            if not stat.S_ISREG(status.st_mode):
                raise StoreError(f"cannot read snapshot {path}: it is not a regular file")
            data = _read_bounded(fd, status.st_size) if status.st_size <= _codec.MAX_SNAPSHOT_BYTES else None
        except OSError as exc:
            raise StoreError(f"cannot read snapshot {path}: {exc}") from exc
        finally:
            os.close(fd)
        if data is not None and len(data) <= _codec.MAX_SNAPSHOT_BYTES:
            return data
        error = StoreError(f"snapshot {path} is larger than {_codec.MAX_SNAPSHOT_BYTES} bytes")
        (rejections or _codec.Rejections()).add(error)
        return None

    def _load_sync(
        self, path: Path, expect: tuple[str, str], rejections: _codec.Rejections | None = None
    ) -> Snapshot | None:
        data = self._read(path, rejections)
        if data is None:
            return None
        return _codec.decode_or_none(data, self._hmac_key, source=str(path), expect=expect, rejections=rejections)

    def _save_sync(self, path: Path, data: bytes) -> None:
        try:
            self._directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f"{_TEMP_PREFIX}{path.name}.", suffix=_TEMP_SUFFIX, dir=self._directory)
            try:
                with os.fdopen(fd, "wb") as file:
                    file.write(data)
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            self._fsync_directory()
        except OSError as exc:
            raise StoreError(f"cannot write snapshot {path}: {exc}") from exc

    def _delete_sync(self, path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
            self._fsync_directory()
        except FileNotFoundError:
            return  # the directory itself is gone: nothing to delete
        except OSError as exc:
            raise StoreError(f"cannot delete snapshot {path}: {exc}") from exc

    def _fsync_directory(self) -> None:
        """Make the rename itself durable; without it a crash can resurrect the old file."""
        if os.name != "posix":
            return
        fd = os.open(self._directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _load_all_sync(self) -> list[Snapshot]:
        try:
            self._warn_if_writable_by_others()
            with os.scandir(self._directory) as entries:
                names = sorted(entry.name for entry in entries)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreError(f"cannot list snapshot directory {self._directory}: {exc}") from exc
        snapshots: list[Snapshot] = []
        rejections = _codec.Rejections()
        for name in names:
            if name.startswith(".") or not name.endswith(_SUFFIX):
                continue  # temp files of writers in flight, and whatever else shares the directory
            path = self._directory / name
            try:
                snapshot = self._load_sync(path, _names_of(path), rejections)
            except StoreError as exc:
                rejections.add(exc)
                continue
            if snapshot is not None:
                snapshots.append(snapshot)
        rejections.summarize()
        return snapshots

    def _sweep_stale_temps_sync(self) -> None:
        """Unlink our own temp files (by name: nothing else sharing the directory) left by dead writers.

        Only regular files, judged without following symlinks, and only those untouched for
        ``_STALE_TEMP_SECONDS``: another process may be writing into the same directory now, and
        removing its temp file would fail its save. Errors are logged: a sweep never stops a start-up.
        """
        cutoff = time.time() - _STALE_TEMP_SECONDS
        try:
            with os.scandir(self._directory) as entries:
                stale = [
                    entry.path for entry in entries if _is_temp_name(entry.name) and _untouched_since(entry, cutoff)
                ]
        except FileNotFoundError:
            return  # nothing saved yet
        except OSError as exc:
            _codec.log.warning("cannot list snapshot directory %s for stale temporary files: %s", self._directory, exc)
            return
        for temp in stale:
            try:
                os.unlink(temp)
            except FileNotFoundError:
                continue  # another process swept it first
            except OSError as exc:
                _codec.log.warning("cannot remove stale temporary file %s: %s", temp, exc)

    def _warn_if_writable_by_others(self) -> None:
        """Log once per ``load_all`` when group or others may write the directory: they could plant files."""
        if os.name != "posix":
            return  # Windows reports synthetic permission bits; its ACLs are not checked here
        mode = stat.S_IMODE(os.stat(self._directory).st_mode)
        if mode & 0o022:
            _codec.log.warning(
                "snapshot directory %s is writable by group or others (mode %o): they could plant files"
                " there; make it private (chmod 700)",
                self._directory,
                mode,
            )


def _read_bounded(fd: int, size: int) -> bytes:
    """At most ``MAX_SNAPSHOT_BYTES + 1`` bytes of ``fd``, a regular file of ``size`` bytes at fstat.

    One read of one byte more than expected usually does it: a regular file returns a short read
    only at its end, so a short first read needs no second one (restore reads ten thousand files).
    """
    limit = _codec.MAX_SNAPSHOT_BYTES + 1
    request = min(size + 1, limit)
    chunk = os.read(fd, request)
    if len(chunk) < request:
        return chunk
    chunks, total = [chunk], len(chunk)  # the file grew since fstat: read on, up to the limit
    while total < limit:
        chunk = os.read(fd, min(_READ_CHUNK, limit - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def _is_temp_name(name: str) -> bool:
    """Whether ``name`` is one ``_save_sync`` gives its temp files: ``.{tenant}~{provider}.jwks.{random}.tmp``."""
    if not (name.startswith(_TEMP_PREFIX) and name.endswith(_TEMP_SUFFIX)):
        return False
    target, dot, random_part = name[len(_TEMP_PREFIX) : -len(_TEMP_SUFFIX)].rpartition(".")
    if not dot or not target.endswith(_SUFFIX) or _TEMP_RANDOM.fullmatch(random_part) is None:
        return False
    try:
        _names_of(Path(target))
    except StoreError:
        return False
    return True


def _untouched_since(entry: os.DirEntry[str], cutoff: float) -> bool:
    """A regular file (a symlink is not followed, and left alone) last modified before ``cutoff``."""
    try:
        return entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff
    except OSError:
        return False  # gone meanwhile, or unreadable: not ours to judge


def _names_of(path: Path) -> tuple[str, str]:
    """``(tenant, provider)`` from a snapshot file's name; StoreError for a name we never write."""
    tenant, separator, provider = path.name[: -len(_SUFFIX)].partition(_SEPARATOR)
    if not separator:
        raise StoreError(f"snapshot file {path} is not named tenant{_SEPARATOR}provider{_SUFFIX}")
    _codec.check_names(tenant, provider)
    return tenant, provider
