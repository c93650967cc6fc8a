"""`BlobStore` on a local directory: atomic, crash-safe writes that never leave the root.

Every write goes to a hidden temporary file in the target directory, is fsynced, and then
appears under its key in one step: a hard link for create-only writes (fails if the key
exists, so nothing is clobbered), a rename for overwrites. Readers therefore see either
no file or the whole file, never a partial one.

Temporary files are named `.{name}.{pid}@{host}.{token}.tmp` and created with mode 0666
less the umask (ordinary 0644 under umask 022), like any file the process creates. A
writer killed mid-write (or between linking the key and removing its temporary file)
leaves its temporary file behind; the first write (or create-only attempt on an existing
key) of a process into a directory sweeps the temporary files there whose writer is dead
(same host, pid gone) or that are older than `STALE_TEMP_S` (any host, or names without
a pid), so a killed run's leftovers do not outlive the next run that writes the same
partition.
`audit` reports the temporary files and the files without ordinary permissions it finds.
"""

from __future__ import annotations

import builtins
import hashlib
import os
import re
import secrets
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from seamless_assets.errors import StoreError

from .blobs import TEMP_SUFFIX, BlobFinding, validate_key

STALE_TEMP_S = 3600  # no write holds its temporary file for an hour
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_TEMP_NAME = re.compile(r"^\..+\.(?P<pid>[0-9]+)@(?P<host>[0-9a-f]{8})\.[0-9a-f]+\.tmp$")
_MAX_SWEPT_DIRS = 100_000


def current_umask() -> int:
    """The process umask, read without changing it where Linux exposes it."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # racy only where /proc is missing
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_temp(name: str, age_s: float) -> bool:
    """Whether a temporary file `name` of that age belongs to no live writer."""
    if age_s >= STALE_TEMP_S:
        return True
    match = _TEMP_NAME.match(name)
    return bool(match and match["host"] == _HOST and not _pid_alive(int(match["pid"])))


class LocalDirectoryBlobStore:
    """Blobs as files under `root`; keys are '/'-separated paths relative to it.

    The root must be on a filesystem with hard links (any local POSIX filesystem).
    `fsync=False` trades crash durability for speed (tests, scratch directories).
    """

    # A segment's publish here is ~2.4 ms of Python holding the GIL around GIL-free
    # encoding and fsyncs: 2 writers keep the disk busy, 4 contended with a run's fetching
    # event loop (the year backfill took 0.5 s longer).
    concurrent_writes = 2

    def __init__(self, root: str | Path, *, fsync: bool = True) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._root = str(self.root)
        self.fsync = fsync
        self._swept: set[str] = set()

    def __repr__(self) -> str:
        return f"LocalDirectoryBlobStore({str(self.root)!r})"

    def _path(self, key: str, *, allow_prefix: bool = False) -> str:
        # Validated keys cannot leave the root (no absolute, '..', '\\' or NUL); plain
        # string joins keep this hot path cheap (a year read touches ~1,100 keys).
        validate_key(key, allow_prefix=allow_prefix)
        return os.path.join(self._root, *[part for part in key.split("/") if part])

    @contextmanager
    def _io(self, key: str, action: str) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise StoreError(f"cannot {action} {self.uri(key)}: {exc}") from exc

    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        with self._io(key, "read"):
            try:
                with open(path, "rb") as handle:
                    return handle.read()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                return None

    def exists(self, key: str) -> bool:
        return os.path.isfile(self._path(key))

    def put_if_absent(self, key: str, data: bytes) -> bool:
        path = Path(self._path(key))
        if path.exists():  # a writer killed between link and unlink left its temp file here
            self._sweep(path.parent)
            return False
        with self._io(key, "create"):
            temp = self._write_temp(path, data)
            try:
                os.link(temp, path)  # atomic create-only: fails if the key exists
            except FileExistsError:
                return False
            finally:
                temp.unlink()
            self._sync_dir(path.parent)
        return True

    def put(self, key: str, data: bytes) -> None:
        path = Path(self._path(key))
        with self._io(key, "write"):
            temp = self._write_temp(path, data)
            try:
                os.replace(temp, path)
            except BaseException:
                temp.unlink(missing_ok=True)
                raise
            self._sync_dir(path.parent)

    def list(self, prefix: str) -> builtins.list[str]:
        self._path(prefix, allow_prefix=True)
        start = self._path(prefix.rpartition("/")[0], allow_prefix=True)
        keys: builtins.list[str] = []
        for directory, subdirs, files in os.walk(start):
            relative = Path(directory).relative_to(self.root).as_posix()
            base = "" if relative == "." else relative + "/"
            # Prune hidden directories and those that cannot hold a matching key.
            subdirs[:] = sorted(
                d
                for d in subdirs
                if not d.startswith(".")
                and (base + d + "/").startswith(prefix[: len(base + d + "/")])
            )
            keys.extend(
                base + name
                for name in files
                if not name.startswith(".") and (base + name).startswith(prefix)
            )
        return sorted(keys)

    def uri(self, key: str) -> str:
        return Path(self._path(key, allow_prefix=True)).as_uri()

    def audit(self) -> builtins.list[BlobFinding]:
        """Temporary files left under the root, and files whose mode is not 0666 less the
        umask (what any file this process creates gets)."""
        expected = 0o666 & ~current_umask()
        now, found = time.time(), []
        for directory, _, files in os.walk(self._root):
            for name in files:
                path = os.path.join(directory, name)
                try:
                    info = os.stat(path)
                except FileNotFoundError:
                    continue
                uri = Path(path).as_uri()
                if name.startswith(".") and name.endswith(TEMP_SUFFIX):
                    age = now - info.st_mtime
                    state = "stale" if stale_temp(name, age) else "possibly in use"
                    detail = f"temporary file of an interrupted write, {age:.0f} s old ({state})"
                    found.append(BlobFinding("temp_file", uri, detail))
                elif info.st_mode & 0o777 != expected:
                    detail = f"mode {info.st_mode & 0o777:04o}, expected {expected:04o} (umask)"
                    found.append(BlobFinding("permissions", uri, detail))
        return sorted(found)

    def _first_visit(self, directory: Path) -> bool:
        """Whether this store visits `directory` for the first time (then it has now)."""
        key = str(directory)
        if key in self._swept:
            return False
        if len(self._swept) >= _MAX_SWEPT_DIRS:
            self._swept.clear()
        self._swept.add(key)
        return True

    def _sweep(self, directory: Path) -> None:
        """Remove stale temporary files in `directory`, once per directory and store."""
        if not self._first_visit(directory):
            return
        now = time.time()
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX):
                try:
                    if stale_temp(entry.name, now - entry.stat().st_mtime):
                        os.unlink(entry.path)
                except FileNotFoundError:
                    continue

    def _directory_for(self, path: Path) -> None:
        """Make `path`'s directory exist, its stale temporary files swept (`_sweep`): a
        directory this call creates holds none (a segment's, on every publish)."""
        directory = path.parent
        try:
            os.mkdir(directory)
        except FileExistsError:
            self._sweep(directory)
            return
        except FileNotFoundError:
            directory.mkdir(parents=True, exist_ok=True)
            self._sweep(directory)
            return
        self._first_visit(directory)

    def _write_temp(self, path: Path, data: bytes) -> Path:
        self._directory_for(path)
        name = path.parent / f".{path.name}.{os.getpid()}@{_HOST}.{secrets.token_hex(6)}.tmp"
        # O_EXCL with mode 0666: the kernel applies the umask (mkstemp would force 0600).
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                if self.fsync:
                    os.fsync(handle.fileno())
        except BaseException:
            name.unlink(missing_ok=True)
            raise
        return name

    def _sync_dir(self, directory: Path) -> None:
        """Persist the new directory entry, so a crash cannot lose a sealed file."""
        if not self.fsync:
            return
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
