"""Progress reporting that suits where the output goes.

On a terminal: a tqdm bar. Anywhere else (a pipe, a log file, CI): one plain line
every ``interval`` seconds and one at the end, so logs hold a readable record instead
of thousands of carriage-return updates. Every long job (train, eval, stream, bench)
reports through :func:`progress`.
"""

from __future__ import annotations

import sys
import time
from typing import IO


class PlainProgress:
    """A tqdm-like counter that prints ``desc: n/total unit (rate/s) key=value`` lines,
    at most one every ``interval`` seconds, and a last one on :meth:`close`."""

    def __init__(self, total: int | None, desc: str, unit: str, file: IO[str], interval: float = 5.0):
        self.total = total
        self.desc = desc
        self.unit = unit
        self.file = file
        self.interval = interval
        self.n = 0
        self.postfix = ""
        self.started = time.perf_counter()
        self.printed_at = self.started
        self.printed_n = -1
        self.closed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if now - self.printed_at >= self.interval:
            self._print(now)

    def set_postfix(self, **values) -> None:
        self.postfix = " ".join(f"{k}={v}" for k, v in values.items())

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def write(self, message: str) -> None:
        print(message, file=self.file, flush=True)

    def close(self) -> None:
        if not self.closed and self.n != self.printed_n:
            self._print(time.perf_counter())
        self.closed = True

    def _print(self, now: float) -> None:
        elapsed = now - self.started
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        rate = self.n / elapsed if elapsed > 0 else 0.0
        tail = f" {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {count} {self.unit} ({rate:.2f} {self.unit}/s, {elapsed:.0f} s){tail}", file=self.file, flush=True)
        self.printed_at = now
        self.printed_n = self.n

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(total: int | None = None, desc: str = "", unit: str = "it", enabled: bool = True,
             file: IO[str] | None = None, interval: float = 5.0, leave: bool = True):
    """A progress reporter with ``update``, ``set_postfix``, ``set_postfix_str``, ``write``,
    ``close`` and a ``total`` attribute, or None when ``enabled`` is False.

    tqdm on a terminal ``file`` (default stderr); :class:`PlainProgress` lines otherwise.
    """
    if not enabled:
        return None
    file = file if file is not None else sys.stderr
    if is_terminal(file):
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, file=file, dynamic_ncols=True, leave=leave)
    return PlainProgress(total, desc, unit, file, interval)


def is_terminal(file: IO[str]) -> bool:
    """Whether ``file`` is a terminal (False for pipes, files and closed or odd streams)."""
    try:
        return file.isatty()
    except (AttributeError, ValueError):
        return False
