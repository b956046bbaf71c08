"""Writing files so a reader never sees a half-written one, and only one process writes each."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

from longvid.errors import LongvidError


class FileLockedError(LongvidError):
    """Another process holds the lock on a file this one wants to write."""


def write_atomically(path: str, write: Callable[[str], None], suffix: str = "") -> None:
    """Call ``write(tmp)`` on a temporary name beside ``path``, then rename it to ``path``.

    ``suffix`` ends the temporary name (e.g. ``".npy"`` for writers that add one).
    The temporary file is removed if ``write`` fails.
    """
    tmp = f"{path}.tmp{os.getpid()}{suffix}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_lines_atomically(path: str, lines: Iterable[str]) -> None:
    """Write ``lines`` (UTF-8, consumed as they come) to ``path`` through :func:`write_atomically`,
    synced to disk."""
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(lines)
            f.flush()
            os.fsync(f.fileno())
    write_atomically(path, write)


def write_text_atomically(path: str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically, synced to disk."""
    write_lines_atomically(path, [text])


_held_locks: dict[str, int] = {}  # lock files this process holds -> nesting depth


@contextmanager
def exclusive_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` while the block runs, or raise :class:`FileLockedError`.

    The lock is ``flock`` on a file ``path + ".lock"`` that names the holder's pid and is
    removed on release (the kernel drops the lock if the process dies). Re-entrant within
    a process, so an entry point can take it early and the library again.
    """
    lock = os.path.abspath(os.fspath(path)) + ".lock"
    if lock in _held_locks:
        _held_locks[lock] += 1
        try:
            yield
        finally:
            _held_locks[lock] -= 1
        return
    fd = _acquire(lock, os.fspath(path))
    _held_locks[lock] = 1
    try:
        yield
    finally:
        del _held_locks[lock]
        try:
            os.remove(lock)  # while still locked: a process that opened it meanwhile sees it gone and retries
        except FileNotFoundError:
            pass
        os.close(fd)


def _acquire(lock: str, path: str) -> int:
    """An open, flock-ed descriptor of the lock file ``lock`` (written with our pid)."""
    import fcntl

    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            holder = f"another process (pid {pid})" if pid else "another process"
            raise FileLockedError(f"{path}: {holder} is writing it; wait for it to finish or choose another output") from None
        except BaseException:
            os.close(fd)
            raise
        if _is_current(fd, lock):
            break
        os.close(fd)  # the holder removed this lock file as we opened it: lock the new one
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _is_current(fd: int, lock: str) -> bool:
    """Whether ``fd`` is still the file named ``lock``."""
    try:
        named, opened = os.stat(lock), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)
