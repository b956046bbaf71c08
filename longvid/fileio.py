"""Writing files so a reader never sees a half-written one."""

from __future__ import annotations

import os
from typing import Callable, Iterable


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
