"""A full disk as LMDB meets it: its write errors read as StorageFullError, and its lock file
given its blocks before LMDB maps it."""

from __future__ import annotations

import ctypes
import errno
import os

import lmdb

from .errors import CommitError, StorageError, StorageFullError

__all__ = ["storage_error", "full_disk", "back_lock_file", "free_bytes"]

# After a write stopped short for want of space, what is left is less than a block or two; this
# much allows for another process freeing a little meanwhile.
_FULL_BELOW = 1 << 20
_LIBC = ctypes.CDLL(None, use_errno=True)


def storage_error(exc: lmdb.Error, doing: str, path: str) -> StorageError:
    """An LMDB error of a write as a StorageError: StorageFullError when the disk or the map is full."""
    return full_disk(exc, doing, path) or CommitError(f"{doing} failed: {exc}")


def full_disk(exc: lmdb.Error, doing: str, path: str) -> StorageFullError | None:
    """``exc`` as a StorageFullError if it means the disk (or the map) is full, else None."""
    # py-lmdb raises DiskError for ENOSPC, MapFullError when the map (not the disk) is full.
    if isinstance(exc, (lmdb.MapFullError, lmdb.DiskError)):
        return StorageFullError(f"{doing} failed: no space left ({exc})")
    # LMDB reports a write that stopped short as EIO ("short write, filesystem full?" in
    # mdb_page_flush), not ENOSPC: on a full tmpfs, big events failed with "Input/output error"
    # (issue 20). Read it as a full disk when the disk is in fact full; any other EIO stays one.
    free = free_bytes(path) if getattr(exc, "code", None) == errno.EIO else None
    if free is not None and free < _FULL_BELOW:
        return StorageFullError(f"{doing} failed: no space left on device ({free:,} bytes free where the "
                                f"log is; LMDB reported the short write as {exc})")
    return None


def back_lock_file(path: str, max_readers: int) -> bool:
    """Give LMDB's lock file (its reader table) in directory ``path`` its disk blocks before LMDB
    maps it; False when the disk has no room for them."""
    # LMDB sizes lock.mdb with ftruncate, so it is sparse, and maps it: on a full filesystem its
    # first write to a page without a block killed the process with SIGBUS (issue 20: `tasklog
    # demo` on a full tmpfs exited 135). fallocate(2) allocates the holes without changing the
    # size or a byte, so processes that have the file mapped see no change. Not posix_fallocate:
    # where the filesystem cannot, glibc writes bytes instead, racing the live reader table.
    fallocate = getattr(_LIBC, "fallocate64", None)
    if fallocate is None:
        return True  # not Linux: as before
    fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    fd = os.open(os.path.join(path, "lock.mdb"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        # A new one gets the size LMDB would give it on 64-bit Linux: its header, then a 64-byte
        # slot a reader.
        size = os.fstat(fd).st_size or 128 + 64 * max_readers
        ok = fallocate(fd, 0, 0, size) == 0
        return ok or ctypes.get_errno() not in (errno.ENOSPC, errno.EDQUOT)  # else: unsupported, as before
    finally:
        os.close(fd)


def free_bytes(path: str) -> int | None:
    """Bytes an unprivileged writer may still use on the filesystem of ``path`` (None: unknown)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize
