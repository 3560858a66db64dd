"""One owner per SQLite data folder: the lock file that ``matcher serve`` (and ``restore``,
``rotate-key``) hold while they run.

Why: two servers on one SQLite folder each keep their own in-memory index and neither sees
the other's enrollments (each follows only the changes it was told about), so a second server
must be refused, not started silently. The lock is ``flock`` on ``<folder>/matcher.lock``: the
kernel releases it when the process ends, however it ends (kill -9 included), so a stale file
never locks anyone out. The file holds the owner's pid and command, for the message only.
(Several replicas on one bank are for the PostgreSQL store, which has no such folder.)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from matcher.errors import Unavailable

__all__ = ["LOCK_FILENAME", "FolderLock"]

LOCK_FILENAME = "matcher.lock"


class FolderLock:
    """An exclusive hold on a data folder, released by ``release`` or when the process ends.

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> first = FolderLock.acquire(folder, "matcher serve")
    >>> FolderLock.acquire(folder, "matcher restore")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    matcher.errors.Unavailable: the data folder ... is in use by matcher serve (pid ...)...
    >>> first.release()
    >>> FolderLock.acquire(folder, "matcher restore").release()
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, data_dir: str | os.PathLike[str], what: str) -> FolderLock:
        """Take the folder's lock for ``what`` (e.g. ``"matcher serve"``), or raise
        ``Unavailable`` naming the process that holds it."""
        folder = Path(data_dir)
        path = folder / LOCK_FILENAME
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise Unavailable(f"cannot lock the data folder {folder}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise Unavailable(
                f"the data folder {folder} is in use by {holder}: stop it first, or give "
                f"another --data (lock file {path})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{what} (pid {os.getpid()})\n".encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        """Let go of the lock (idempotent)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
