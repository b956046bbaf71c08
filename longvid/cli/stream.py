"""``longvid stream VIDEO...``: a memory model online over videos or live sources, one JSON line per clip or answer."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from longvid.cli.common import DTYPE_HELP
from longvid.errors import LongvidError


def cmd_stream(args: argparse.Namespace) -> int:
    import torch

    from longvid.answers import ask_settings_for
    from longvid.precision import for_inference, resolve_dtype
    from longvid.data.labels import load_labels
    from longvid.loading import DEFAULT_STREAM_PRESET, load_stream_model, shipped_labels
    from longvid.outputs import locked_output
    from longvid.predict import expand_videos, run_stream, settings_for
    from longvid.core.stream_input import apply_split, model_work, prepare_model, quiet_compile_logs
    from longvid.engine.distributed import setup

    _check_stream_args(args)
    videos = expand_videos(args.videos)
    if not videos:
        raise LongvidError("no videos given")
    live = _check_live_args(args, videos)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LongvidError("--device cuda: no CUDA device is available")
    dtype, dtype_note = resolve_dtype(args.dtype, device)
    labels = load_labels(args.labels) if args.labels else None
    if args.compile:
        quiet_compile_logs()
    dist_info = setup(device)
    device = dist_info.device if device.startswith("cuda") else torch.device(device)
    prefix = f"longvid[rank {dist_info.rank}]" if dist_info.enabled else "longvid"
    log = None if args.quiet else (lambda message: print(f"{prefix}: {message}", file=sys.stderr))
    with locked_output(args.out, dist_info.rank, dist_info.world_size):  # before the model loads: a busy --out fails at once
        model, note = load_stream_model(args.model, args.checkpoint, encoder=args.encoder, llm=args.llm)
        asks = hasattr(model, "answer")
        if asks != bool(args.ask):
            raise LongvidError(f"--model {args.model} answers questions: give --ask QUESTION" if asks else
                               "--ask needs a model that answers questions (an MA-LMM or ReWind preset, see longvid models)")
        if labels is None and args.checkpoint is None and "shipped" in note:
            labels = shipped_labels(args.model or DEFAULT_STREAM_PRESET)
        model = for_inference(model, dtype, device)
        model = prepare_model(model, compile=args.compile, channels_last=args.channels_last, log=log)
        if log and dist_info.is_main and dtype_note:
            log(dtype_note)
        if asks:
            ask = ask_settings_for(model, args.ask, every=args.every, at=_times(args.at), fps=args.fps,
                                   step_frames=args.clip_frames, size=args.size)
            settings = None
        else:
            ask = None
            settings = settings_for(model, clip_frames=args.clip_frames, stride=args.tau, size=args.size, topk=args.topk,
                                    aggregate=args.aggregate == "video", decode_threads=args.decode_threads,
                                    prefetch=args.prefetch, channels_last=args.channels_last)
        split = apply_split(model_work(model, settings.clip_frames, settings.size) if settings else None, args.threads)
        if log and dist_info.is_main:
            decode = args.decode_threads if args.decode_threads is not None else split.decode_threads
            threads = "" if live else f"; decoding {decode or 'auto'} thread(s) {args.prefetch or split.prefetch} clips ahead"
            log(f"model {type(model).__name__} ({note}) on {device}, {dtype}, {split.torch_threads} thread(s){threads}".replace("torch.", ""))
        if live:
            return _stream_live(args, model, videos, labels, device, dtype, log)
        summary = run_stream(model, videos, out=args.out, settings=settings, labels=labels, batch_streams=args.batch_streams,
                             device=device, dtype=dtype, resume=args.resume, save_scores=args.save_scores,
                             progress=not args.quiet, log=log, ask=ask)
    if log and dist_info.is_main:
        done = f"{summary.answers} answers" if asks else f"{summary.clips} clips"
        log(f"{summary.done} videos done, {summary.failed} failed, {summary.skipped} skipped (already complete), "
            f"{done} in {summary.seconds:.1f} s")
    return 1 if summary.failed else 0


def _check_live_args(args: argparse.Namespace, videos: list[str]) -> bool:
    """Whether the run is live (every input a live source); the live options checked."""
    from longvid.video.live import is_live_source

    live = [v for v in videos if is_live_source(v)]
    if live and len(live) != len(videos):
        raise LongvidError(f"{live[0]}: live sources cannot be mixed with video files in one run")
    given = [flag for flag, value in (("--lag", args.lag), ("--queue-size", args.queue_size), ("--reconnect", args.reconnect),
                                      ("--reset-on-reconnect", args.reset_on_reconnect or None),
                                      ("--max-seconds", args.max_seconds)) if value is not None]
    if not live:
        if given:
            raise LongvidError(f"{given[0]} is for live sources (udp://, rtsp://, http(s)://, -, /dev/videoN)")
        return False
    if videos.count("-") > 1:
        raise LongvidError("- (stdin) can be given once")
    if args.resume or args.save_scores or args.aggregate != "none" or args.at:
        raise LongvidError("--resume/--save-scores/--aggregate/--at are for video files, not live sources")
    if args.decode_threads is not None or args.prefetch is not None:
        raise LongvidError("--decode-threads/--prefetch are for video files, not live sources")
    for flag, value in (("--open-timeout", args.open_timeout), ("--read-timeout", args.read_timeout), ("--max-seconds", args.max_seconds)):
        if value is not None and not value > 0:
            raise LongvidError(f"{flag} must be > 0 seconds, got {value}")
    for flag, value in (("--queue-size", args.queue_size), ("--reconnect", args.reconnect)):
        if value is not None and value < (1 if flag == "--queue-size" else 0):
            raise LongvidError(f"{flag} must be >= {1 if flag == '--queue-size' else 0}, got {value}")
    if (args.lag or "drop") == "drop" and args.queue_size is not None:
        raise LongvidError("--queue-size is for --lag queue (--lag drop keeps only the newest clip)")
    return True


def _stream_live(args: argparse.Namespace, model, sources: list[str], labels, device, dtype, log) -> int:
    """``longvid stream`` on live sources: until they end, --max-seconds, or SIGINT/SIGTERM."""
    import signal
    import threading

    from longvid.serve.engine import live_settings_for
    from longvid.serve.live_stream import run_live

    asks = hasattr(model, "answer")
    capacity = 1 if (args.lag or "drop") == "drop" else (args.queue_size or 8)
    settings = live_settings_for(model, clip_frames=args.clip_frames, stride=args.tau, size=args.size,
                                 fps=args.fps if asks else None, capacity=capacity, open_timeout=args.open_timeout,
                                 read_timeout=args.read_timeout, reconnect=args.reconnect or 0)
    stop = threading.Event()
    caught = []

    def on_signal(signum, frame):
        caught.append(signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        summary = run_live(model, sources, settings, out=args.out, labels=labels, topk=args.topk, ask=tuple(args.ask or ()),
                           every=args.every, reset_on_reconnect=args.reset_on_reconnect, max_seconds=args.max_seconds,
                           device=device, dtype=dtype, stop=stop, log=log)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if log:
        why = f" (stopped by {caught[0]})" if caught else ""
        done = f"{summary.answers} answers" if asks else f"{summary.clips} clips"
        log(f"{summary.done} live sources done, {summary.failed} failed{why}; {done}, {summary.dropped} clips dropped, "
            f"max latency {summary.max_latency:.2f} s, in {summary.seconds:.1f} s")
    return 1 if summary.failed else 0


def _times(text: str | None) -> tuple[float, ...]:
    """``"20,40.5"`` -> ``(20.0, 40.5)``; a clear error for anything else."""
    if not text:
        return ()
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise LongvidError(f"--at takes comma-separated seconds, e.g. 20,40.5, not {text!r}") from None


def _check_stream_args(args: argparse.Namespace) -> None:
    """Every ``stream`` option checked before a model loads or a video opens."""
    from longvid.answers import AskSettings
    from longvid.ask import check_trained

    for flag, value in (("-T/--clip-frames", args.clip_frames), ("--tau", args.tau), ("--size", args.size),
                        ("--topk", args.topk), ("--batch-streams", args.batch_streams), ("--threads", args.threads),
                        ("--prefetch", args.prefetch)):
        if value is not None and value < 1:
            raise LongvidError(f"{flag} must be >= 1, got {value}")
    if args.decode_threads is not None and args.decode_threads < 0:
        raise LongvidError(f"--decode-threads must be >= 0 (0: FFmpeg chooses), got {args.decode_threads}")
    if args.out is not None and os.path.isdir(args.out):
        raise LongvidError(f"--out {args.out}: is a folder; give the JSON lines file to write")
    if args.resume and args.out is None:
        raise LongvidError("--resume needs --out FILE (the output whose complete videos it skips)")
    if args.save_scores is not None and os.path.exists(args.save_scores) and not os.path.isdir(args.save_scores):
        raise LongvidError(f"--save-scores {args.save_scores}: is a file; give a folder (one .npy per video goes there)")
    if not args.ask and (args.every is not None or args.at is not None):
        raise LongvidError("--every/--at say when to answer: give the question with --ask")
    if args.ask:
        AskSettings(tuple(args.ask), every=args.every, at=_times(args.at), fps=args.fps)  # checks them
        check_trained(args.model, args.checkpoint, args.allow_untrained, "stream", "--checkpoint FILE")
        if args.save_scores or args.aggregate != "none":
            raise LongvidError("--save-scores/--aggregate are for classification models, not --ask")


def add_parser(command: Callable[..., argparse.ArgumentParser]) -> None:
    sub = command("stream", cmd_stream, "Run a memory model online over videos: one JSON line per clip (MeMViT) "
                  "or per answer (MA-LMM, ReWind with --ask).")
    sub.add_argument("videos", nargs="+", metavar="VIDEO", help="video files, glob patterns, or .txt files listing videos")
    sub.add_argument("--model", default=None, help="model preset (default memvit_tiny_recall with its shipped demo weights, or the checkpoint's own config)")
    sub.add_argument("--checkpoint", default=None, help="weights: longvid .safetensors or official MeMViT .pyth")
    sub.add_argument("--labels", default=None, help="class names: .txt (one a line), .csv or .json label map")
    sub.add_argument("--out", default=None, help="JSON lines output file (default stdout); written incrementally")
    sub.add_argument("--resume", action="store_true", help="skip videos already complete in --out")
    sub.add_argument("--save-scores", default=None, metavar="DIR", help="write each video's (clips, classes) scores as DIR/<name>.npy")
    sub.add_argument("--topk", type=int, default=5, help="labels per clip (default 5)")
    sub.add_argument("--aggregate", choices=("none", "video"), default="none", help="'video': add a per-video line averaging clip scores")
    sub.add_argument("--batch-streams", type=int, default=1, help="videos processed at once as independent streams (default 1)")
    sub.add_argument("-T", "--clip-frames", type=int, default=None, help="frames per clip (default: the model's)")
    sub.add_argument("--tau", type=int, default=None, help="sampling stride in frames (default: the preset's, 4 for 16x4)")
    sub.add_argument("--size", type=int, default=None, help="short side and center crop (default: the model's crop size)")
    sub.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    sub.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32", help=DTYPE_HELP + "; float16: CUDA only")
    sub.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the thread split's, see --decode-threads)")
    sub.add_argument("--decode-threads", type=int, default=None, metavar="N",
                     help="FFmpeg threads of the decoding process (0: FFmpeg chooses; default: the split for this machine's cores)")
    sub.add_argument("--prefetch", type=int, default=None, metavar="N", help="clips decoded ahead of the model (default 2)")
    sub.add_argument("--compile", action="store_true", help="torch.compile the model (falls back to eager, with a line, when compiling fails)")
    sub.add_argument("--channels-last", action="store_true", help="3-D convolutions and the input in the channels-last-3d layout")
    sub.add_argument("--ask", action="append", default=None, metavar="QUESTION",
                     help="MA-LMM/ReWind: a question answered from the stream's memory (repeatable)")
    sub.add_argument("--every", type=float, default=None, metavar="SECONDS", help="--ask: answer every SECONDS of stream time")
    sub.add_argument("--at", default=None, metavar="T1,T2", help="--ask: answer at these stream times (seconds)")
    sub.add_argument("--fps", type=float, default=1.0, help="--ask: frames read per second of video (default 1)")
    sub.add_argument("--encoder", default=None, help="MA-LMM/ReWind: image encoder path or hub id (default: the preset's)")
    sub.add_argument("--llm", default=None, help="MA-LMM/ReWind: language model path or hub id (default: the preset's)")
    sub.add_argument("--lag", choices=("drop", "queue"), default=None,
                     help="live: when the model is behind, drop clips (keep the newest, default) or queue them (bounded, then drop)")
    sub.add_argument("--queue-size", type=int, default=None, help="live, --lag queue: clips that may wait (default 8)")
    sub.add_argument("--open-timeout", type=float, default=10.0, help="live: seconds to wait for a source to open (default 10)")
    sub.add_argument("--read-timeout", type=float, default=5.0, help="live: seconds without data before a source counts as lost (default 5)")
    sub.add_argument("--reconnect", type=int, default=None, metavar="N", help="live: reconnect up to N times after a loss, with backoff (default 0)")
    sub.add_argument("--reset-on-reconnect", action="store_true", help="live: start the memory afresh after a reconnection (default: keep it)")
    sub.add_argument("--max-seconds", type=float, default=None, help="live: stop after this many seconds of stream time")
    sub.add_argument("--allow-untrained", action="store_true",
                     help="--ask: run an MA-LMM/ReWind preset without trained weights (its answers are noise)")
    sub.add_argument("--quiet", action="store_true", help="no progress bar or log lines")
