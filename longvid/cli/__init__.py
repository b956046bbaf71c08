"""The ``longvid`` command line: one module per command (its ``cmd_*`` function and its
``add_parser``); this one builds the parser and runs a command. Thin: every command calls the library."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import warnings
from contextlib import contextmanager
from typing import Callable, Sequence

from longvid.cli import ask, bench, clips, demo, flops, info, models, serve, stream, train
from longvid.errors import LongvidError
from longvid.progress import is_terminal


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (and the usual exit status 2): ``--help`` shows the usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="longvid", description="Long video understanding with memory.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, handler: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(handler=handler)
        return sub

    info.add_parser(command)
    clips.add_parser(command)
    demo.add_demo_video_parser(command)
    ask.add_parser(command)
    stream.add_parser(command)
    serve.add_parser(command)
    demo.add_demo_parser(command)
    train.add_parser(command)
    models.add_parser(command)
    flops.add_parser(command)
    bench.add_parser(command)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("longvid")
    except PackageNotFoundError:
        return "unknown"


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"longvid: warning: {message}", file=sys.stderr)


def _hide_library_progress_bars() -> None:
    """``--quiet`` also hides the bars transformers and huggingface_hub draw when saving and loading models."""
    try:
        from huggingface_hub.utils import disable_progress_bars
        from transformers.utils import logging as transformers_logging
    except ImportError:  # the optional LLM dependencies are not installed: nothing draws them
        return
    disable_progress_bars()
    transformers_logging.disable_progress_bar()


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv``; ``key=value`` overrides of ``train``/``eval`` may come before or after
    their options (argparse alone takes them only in one run)."""
    args, extra = parser.parse_known_args(argv)
    if hasattr(args, "overrides"):
        args.overrides = [*args.overrides, *(item for item in extra if _is_override(item))]
        extra = [item for item in extra if not _is_override(item)]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _is_override(item: str) -> bool:
    return "=" in item and not item.startswith("-")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = _parse(parser, argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    if getattr(args, "quiet", False) or not is_terminal(sys.stderr):  # no carriage-return bars in log files
        _hide_library_progress_bars()
    with _stop_on_signals() as received:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("default")
                warnings.showwarning = _show_warning
                return args.handler(args)
        except LongvidError as err:
            print(f"longvid: error: {err}", file=sys.stderr)
            return 1
        except (ValueError, FileNotFoundError, IsADirectoryError, PermissionError) as err:
            print(f"longvid: error: {err}", file=sys.stderr)
            return 1
        except (KeyboardInterrupt, InterruptedError):  # InterruptedError: a library swallowed the handler's exception
            signum = received[-1] if received else signal.SIGINT
            print("longvid: interrupted" if signum == signal.SIGINT else f"longvid: stopped by {signal.Signals(signum).name}",
                  file=sys.stderr)
            return 128 + signum
        except BrokenPipeError:
            sys.stderr.close()
            return 0


@contextmanager
def _stop_on_signals():
    """Ctrl-C (SIGINT) and SIGTERM stop the command by raising KeyboardInterrupt where it runs
    (finished work is flushed on the way out); yields the list of signals received, so
    :func:`main` exits 128 + the signal (130, 143). Ignored signals stay ignored (``cmd &``
    in a script, ``nohup``); the previous handlers come back on exit."""
    received: list[int] = []

    def stop(signum, frame) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) is not signal.SIG_IGN:
                previous[signum] = signal.signal(signum, stop)
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
