"""`BlobStore` on a local directory: atomic, crash-safe writes that never leave the root.

Every write goes to a hidden temporary file in the target directory, is fsynced, and then
appears under its key in one step: a hard link for create-only writes (fails if the key
exists, so nothing is clobbered), a rename for overwrites. Readers therefore see either
no file or the whole file, never a partial one.
"""

from __future__ import annotations

import builtins
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from seamless_assets.errors import StoreError

from .blobs import validate_key


class LocalDirectoryBlobStore:
    """Blobs as files under `root`; keys are '/'-separated paths relative to it.

    The root must be on a filesystem with hard links (any local POSIX filesystem).
    `fsync=False` trades crash durability for speed (tests, scratch directories).
    """

    def __init__(self, root: str | Path, *, fsync: bool = True) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._root = str(self.root)
        self.fsync = fsync

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
        if path.exists():
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

    def _write_temp(self, path: Path, data: bytes) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                if self.fsync:
                    os.fsync(handle.fileno())
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
        return Path(name)

    def _sync_dir(self, directory: Path) -> None:
        """Persist the new directory entry, so a crash cannot lose a sealed file."""
        if not self.fsync:
            return
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
