"""The ``longvid`` command line. Thin: every command calls the library."""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import warnings
from contextlib import contextmanager
from typing import Callable, Sequence

from longvid.errors import LongvidError
from longvid.progress import is_terminal

DTYPE_HELP = ("weights and memory in this dtype (default float32); bfloat16 needs native CPU bf16 "
              "(AVX512-BF16/AMX), else it runs in float32 with a note")


def _add_clip_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-T", "--clip-frames", type=int, default=16, help="frames per clip T (default 16)")
    parser.add_argument("--tau", type=int, default=4, help="sampling stride in frames (default 4)")
    parser.add_argument("--fps", type=float, default=None, help="sample at this rate instead of a frame stride")
    parser.add_argument("--tail", choices=("pad", "drop"), default="pad", help="last partial clip: pad or drop")


# -- info ------------------------------------------------------------------------------


def _check_clip_options(args: argparse.Namespace) -> None:
    """Clip options a user mistyped, as one-line errors that name the flag."""
    if args.clip_frames < 1:
        raise LongvidError(f"-T/--clip-frames must be >= 1, got {args.clip_frames}")
    if args.tau < 1:
        raise LongvidError(f"--tau must be >= 1, got {args.tau}")
    if args.fps is not None and not (math.isfinite(args.fps) and args.fps > 0):
        raise LongvidError(f"--fps must be a number > 0, got {args.fps:g}")


def cmd_info(args: argparse.Namespace) -> int:
    from longvid.video import probe

    _check_clip_options(args)
    info = probe(args.video, count_frames=args.count)
    clips = info.num_clips(args.clip_frames, args.tau, args.fps, args.tail)
    sampling = f"{args.fps:g} fps" if args.fps else f"T={args.clip_frames}, tau={args.tau}"
    if args.json:
        record = dict(vars(info))
        record.update(clips=clips, clip_frames=args.clip_frames, tau=args.tau, sample_fps=args.fps, tail=args.tail)
        print(json.dumps(record))
        return 0
    counted = "counted" if info.frames_counted else "header"
    resolution = f"{info.width}x{info.height}"
    if info.rotation:
        coded = f"{info.height}x{info.width}" if info.rotation % 180 else resolution
        resolution += f" (as displayed; coded {coded}, rotation {info.rotation})"
    rows = [
        ("file", info.path),
        ("duration", f"{info.duration:.3f} s"),
        ("fps", f"{info.fps:.3f}"),
        ("frames", f"{info.num_frames} ({counted})"),
        ("resolution", resolution),
        ("codec", info.codec),
        ("audio", "yes" if info.has_audio else "no"),
        (f"clips ({sampling}, {args.tail})", str(clips)),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


# -- clips -----------------------------------------------------------------------------


def cmd_clips(args: argparse.Namespace) -> int:
    from longvid.video import ClipReader

    _check_clip_options(args)
    if args.size < 1:
        raise LongvidError(f"--size must be >= 1, got {args.size}")
    if not (math.isfinite(args.start) and args.start >= 0):
        raise LongvidError(f"--start must be a time >= 0 seconds, got {args.start:g}")
    if args.end is not None and not (math.isfinite(args.end) and args.end > args.start):
        raise LongvidError(f"--end must be a time after --start ({args.start:g} s), got {args.end:g}")
    reader = ClipReader(
        args.video,
        clip_frames=args.clip_frames,
        stride=args.tau,
        fps=args.fps,
        tail=args.tail,
        short_side=args.size,
        crop=args.size,
        start=args.start,
        end=args.end,
        background=True,
    )
    clips = 0
    for clip in reader:
        c, t, h, w = clip.frames.shape
        print(
            f"clip {clip.index:4d}  {clip.start:8.3f}-{clip.end:8.3f} s  frames ({c}, {t}, {h}, {w})"
            f"  valid {clip.num_valid:2d}  mean {clip.frames.mean().item():+.3f}"
        )
        clips += 1
    if clips == 0 and args.tail == "drop":
        sampling = f"{args.fps:g} fps" if args.fps else f"tau={args.tau}"
        where = "the video" if args.start == 0 and args.end is None else "--start/--end"
        raise LongvidError(f"{args.video}: not one whole clip of T={args.clip_frames} ({sampling}) in {where}; "
                           f"--tail pad yields the partial one")
    if clips == 0:
        raise LongvidError(f"{args.video}: no video frames between {args.start:g} s and {args.end:g} s")
    return 0


# -- demo-video / demo -----------------------------------------------------------------


def cmd_demo_video(args: argparse.Namespace) -> int:
    from longvid.data.synth import SynthSpec, demo_sample, write_demo_video

    count = write_demo_video(args.out, seconds=args.seconds, fps=args.fps, width=args.width, height=args.height, seed=args.seed)
    print(f"wrote {args.out}: {count} frames, {args.width}x{args.height} at {args.fps:g} fps")
    sample = demo_sample(args.seconds, seed=args.seed)
    start, end = sample.target
    print(f"cue: the {sample.answer} flashes at {start:.2f}-{end:.2f} s, {sample.distance} clips "
          f"({SynthSpec().clip_seconds:g} s each) before the last clip")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    os.makedirs(args.out, exist_ok=True)
    video = os.path.join(args.out, "demo.mp4")
    common = dict(clip_frames=16, tau=4, fps=None, tail="pad")
    cmd_demo_video(argparse.Namespace(out=video, seconds=args.seconds, fps=30.0, width=160, height=120, seed=0))
    print()
    cmd_info(argparse.Namespace(video=video, count=False, json=False, **common))
    print()
    cmd_clips(argparse.Namespace(video=video, size=224, start=0.0, end=None, **common))
    return 0


# -- ask -------------------------------------------------------------------------------


TRAINED_PARTS = {"malmm": "Q-Former, its queries and the LLM projection", "rewind": "memory, projections and LoRA adapters"}


def cmd_ask(args: argparse.Namespace) -> int:
    from longvid.precision import resolve_dtype

    _check_ask_args(args)
    args.torch_dtype, note = resolve_dtype(args.dtype, args.device or "cpu")
    if note:
        print(f"longvid: {note}", file=sys.stderr)
    if args.model == "rewind":
        return _ask_rewind(args)
    return _ask_malmm(args)


def _check_ask_args(args: argparse.Namespace) -> None:
    """Every ``ask`` option checked before an encoder or LLM loads."""
    if (not args.encoder or not args.llm) and _rewind_record(args) is None:
        raise LongvidError(f"ask --model {args.model} needs --encoder and --llm (local paths or hub ids)")
    if args.checkpoint is None and not args.allow_untrained:
        raise LongvidError(f"ask --model {args.model} needs trained weights (--weights FILE): without them the "
                           f"{TRAINED_PARTS[args.model]} are random and the answer is noise "
                           f"(--allow-untrained runs it anyway)")
    if args.model == "rewind" and args.checkpoint is not None and not args.allow_untrained:
        _check_trained("rewind_paper", args.checkpoint, False, "ask", "--weights FILE")
    for flag, value in (("--frames", args.frames), ("--keep-every", args.keep_every), ("--max-new-tokens", args.max_new_tokens)):
        if value < 1:
            raise LongvidError(f"{flag} must be >= 1, got {value}")
    if args.fps is not None and not args.fps > 0:
        raise LongvidError(f"--fps must be > 0, got {args.fps:g}")
    if args.time is not None and not args.time >= 0:
        raise LongvidError(f"--time must be >= 0 seconds, got {args.time:g}")


def _check_trained(preset: str | None, checkpoint: str | None, allow_untrained: bool, command: str, flag: str) -> None:
    """An MA-LMM or ReWind preset answers only with trained weights: a ``checkpoint``, and (ReWind
    weights with their JSON record) one that went through a training stage; else a one-line error
    unless ``allow_untrained``."""
    from longvid.registry import family_of

    if allow_untrained or preset is None or family_of(preset) == "memvit":
        return
    family = family_of(preset)
    if checkpoint is None:
        raise LongvidError(f"{command} --model {preset} needs trained weights ({flag}): without them the "
                           f"{TRAINED_PARTS[family]} are random and the answers are noise (--allow-untrained runs it anyway)")
    if family == "rewind":
        from longvid.rewind.weights import trained_stages

        if trained_stages(checkpoint) == []:
            raise LongvidError(f"{checkpoint}: its record says these ReWind weights were never trained (no stage); "
                               f"--allow-untrained runs them anyway")


def _rewind_record(args: argparse.Namespace) -> dict | None:
    """The JSON record beside ``ask --model rewind --weights FILE`` (its preset, encoder and LLM), if any."""
    from longvid.rewind.weights import config_path, read_weights_config

    if args.model != "rewind" or args.checkpoint is None or not os.path.isfile(config_path(args.checkpoint)):
        return None
    record = read_weights_config(args.checkpoint)
    if args.preset is not None and args.preset != record["preset"]:
        raise LongvidError(f"{args.checkpoint} holds {record['preset']} weights, not --preset {args.preset}")
    return record


def _ask_rewind(args: argparse.Namespace) -> int:
    from longvid.ask import ask_rewind
    from longvid.precision import for_inference
    from longvid.rewind import build_model
    from longvid.rewind.weights import load_weights

    if _rewind_record(args) is not None:  # the frozen parts it names, unless --encoder/--llm give local copies
        model = load_weights(args.checkpoint, encoder=args.encoder, llm=args.llm, device=args.device)
    else:
        model = build_model(args.preset or "rewind_paper", encoder=args.encoder, llm=args.llm, checkpoint=args.checkpoint,
                            device=args.device)
    model = for_inference(model, args.torch_dtype)
    answer = ask_rewind(args.video, args.question, model, until=args.time, keep_every=args.keep_every,
                        spill_dir=args.spill_dir, max_new_tokens=args.max_new_tokens)
    if args.json:
        print(json.dumps(vars(answer)))
        return 0
    print(answer.text)
    when = f"up to {args.time:g} s" if args.time is not None else "whole video"
    times = ", ".join(f"{t:g}" for t in answer.selected_times)
    print(
        f"[{args.model}: {answer.frames_seen} frames ({when}), {answer.memory_tokens} memory tokens, "
        f"{answer.llm_input_tokens} LLM input tokens, selected frames at [{times}] s, "
        f"memory {answer.memory_bytes} B, feature buffer {answer.buffer_ram_bytes} B RAM + {answer.buffer_disk_bytes} B disk]",
        file=sys.stderr,
    )
    return 0


def _ask_malmm(args: argparse.Namespace) -> int:
    from longvid.ask import ask_malmm, load_malmm
    from longvid.precision import for_inference

    model = load_malmm(args.preset or "malmm_qa", args.encoder, args.llm, args.qformer_tokenizer or None, args.checkpoint, device=args.device)
    model = for_inference(model, args.torch_dtype)
    answer = ask_malmm(args.video, args.question, model, until=args.time, num_frames=args.frames, fps=args.fps)
    if args.json:
        print(json.dumps(vars(answer)))
        return 0
    print(answer.text)
    print(
        f"[malmm: {answer.frames_seen} frames, memory {answer.memory_tokens} tokens / {answer.memory_bytes} B, "
        f"{answer.llm_input_tokens} LLM input tokens]",
        file=sys.stderr,
    )
    return 0


# -- stream ----------------------------------------------------------------------------


def cmd_stream(args: argparse.Namespace) -> int:
    import torch

    from longvid.answers import ask_settings_for
    from longvid.precision import for_inference, resolve_dtype
    from longvid.predict import DEFAULT_STREAM_PRESET, expand_videos, load_labels, load_stream_model, locked_output, run_stream, settings_for, shipped_labels
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


# -- serve -----------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    import torch

    from longvid.predict import DEFAULT_STREAM_PRESET, load_labels, load_stream_model, shipped_labels
    from longvid.serve.app import ServeSettings
    from longvid.serve.engine import LiveEngine, live_settings_for
    from longvid.serve.run import TOKEN_VARIABLE, check_serve_options, serve

    token = args.token or os.environ.get(TOKEN_VARIABLE) or None
    schemes = [s.strip().lower() for s in args.allow_scheme.split(",") if s.strip()]
    check_serve_options(args.host, token, schemes, args.allow_dir, args.state_dir, args.port, args.max_streams)
    for flag, value in (("--open-timeout", args.open_timeout), ("--read-timeout", args.read_timeout), ("--save-every", args.save_every)):
        if not value > 0:
            raise LongvidError(f"{flag} must be > 0 seconds, got {value}")
    for flag, value, least in (("--queue-size", args.queue_size, 1), ("--reconnect", args.reconnect, 0), ("--max-body", args.max_body, 256),
                               ("-T/--clip-frames", args.clip_frames, 1), ("--tau", args.tau, 1), ("--size", args.size, 1),
                               ("--topk", args.topk, 1), ("--threads", args.threads, 1), ("--workers", args.workers, 1)):
        if value is not None and value < least:
            raise LongvidError(f"{flag} must be >= {least}, got {value}")
    if args.fps is not None and not args.fps > 0:
        raise LongvidError(f"--fps must be > 0, got {args.fps}")
    _check_trained(args.model, args.checkpoint, args.allow_untrained, "serve", "--checkpoint FILE")
    if args.ray:
        return _serve_ray(args, token, schemes)
    labels = load_labels(args.labels) if args.labels else None
    if args.threads or args.workers > 1:
        torch.set_num_threads(args.threads or 1)  # --workers: one torch thread per forward unless told
    log = None if args.quiet else (lambda message: print(f"longvid: {message}", file=sys.stderr, flush=True))
    model, note = load_stream_model(args.model, args.checkpoint, encoder=args.encoder, llm=args.llm)
    if labels is None and args.checkpoint is None and "shipped" in note:
        labels = shipped_labels(args.model or DEFAULT_STREAM_PRESET)
    asks = hasattr(model, "answer")
    capacity = 1 if args.lag == "drop" else args.queue_size
    settings = live_settings_for(model, clip_frames=args.clip_frames, stride=args.tau, size=args.size,
                                 fps=(args.fps or 1.0) if asks else None, capacity=capacity, open_timeout=args.open_timeout,
                                 read_timeout=args.read_timeout, reconnect=args.reconnect)
    engine = LiveEngine(model, settings, capacity=args.max_streams, labels=labels, topk=args.topk, device=args.device,
                        reset_on_reconnect=args.reset_on_reconnect, workers=args.workers)
    if log:
        log(f"model {type(model).__name__} ({note}) on {args.device}")
    serve_settings = ServeSettings(token=token, schemes=tuple(schemes), allow_dir=args.allow_dir, max_body=args.max_body,
                                   state_dir=args.state_dir, save_every=args.save_every, model_name=args.model or DEFAULT_STREAM_PRESET)
    serve(engine, serve_settings, host=args.host, port=args.port, log=log)
    if log:
        log(f"stopped: {engine.total_clips} clips, {engine.total_dropped} dropped")
    return 0


def _serve_ray(args: argparse.Namespace, token: str | None, schemes: list[str]) -> int:
    """``longvid serve --ray``: the engine as Ray Serve replicas sharing ``--state-dir``."""
    if args.state_dir is None:
        raise LongvidError("--ray needs --state-dir FOLDER on storage every replica can reach (streams move through it)")
    if args.replicas < 1:
        raise LongvidError(f"--replicas must be >= 1, got {args.replicas}")
    if args.labels or args.encoder or args.llm:
        raise LongvidError("--ray serves a preset or --checkpoint with its own labels (no --labels/--encoder/--llm)")
    try:
        import ray  # noqa: F401
        from ray import serve  # noqa: F401
    except ImportError:
        raise LongvidError("longvid serve --ray needs Ray Serve: pip install 'longvid[ray]'") from None
    from longvid.serve.ray_serve import run_ray

    settings = {"capacity": 1 if args.lag == "drop" else args.queue_size, "open_timeout": args.open_timeout,
                "read_timeout": args.read_timeout, "reconnect": args.reconnect}
    settings.update({k: v for k, v in (("clip_frames", args.clip_frames), ("stride", args.tau), ("size", args.size),
                                       ("fps", args.fps)) if v is not None})
    options = {"model": args.model, "checkpoint": args.checkpoint, "settings": settings, "capacity": args.max_streams,
               "state_dir": os.path.abspath(args.state_dir), "save_every": args.save_every, "threads": args.threads,
               "workers": args.workers,
               "reset_on_reconnect": args.reset_on_reconnect, "token": token, "schemes": schemes,
               "allow_dir": args.allow_dir, "max_body": args.max_body}
    log = None if args.quiet else (lambda message: print(f"longvid: {message}", file=sys.stderr, flush=True))
    run_ray(options, args.host, args.port, args.replicas, log=log)
    return 0


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
        _check_trained(args.model, args.checkpoint, args.allow_untrained, "stream", "--checkpoint FILE")
        if args.save_scores or args.aggregate != "none":
            raise LongvidError("--save-scores/--aggregate are for classification models, not --ask")


# -- train / eval ----------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from longvid.engine.config import load_config
    from longvid.runs import is_lmm_preset, train_lmm
    from longvid.memvit.run import train

    if is_lmm_preset(args.config):  # MA-LMM / ReWind runs: their own configs, logs and metrics
        train_lmm(args.config, args.overrides, resume=args.resume, progress=not args.quiet)
        return 0
    config = load_config(args.config, args.overrides)
    history = train(config, resume=args.resume, progress=not args.quiet)
    if history:
        losses = [r["loss"] for r in history if r["loss"] == r["loss"]]  # NaN: a step whose clips only built memory
        last = f"last loss {losses[-1]:.4f}" if losses else "no loss yet (every clip so far only built memory)"
        print(f"trained {history[-1]['step']} steps; {last}; checkpoints in {config.out_dir}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from longvid.engine.config import load_config
    from longvid.runs import eval_lmm, is_lmm_preset
    from longvid.memvit.run import evaluate_checkpoint

    if is_lmm_preset(args.config):  # writes out_dir/metrics.json and prints its table
        if args.dtype != "float32":
            raise LongvidError(f"--dtype {args.dtype} is for MeMViT eval configs, not {args.config}")
        metrics = eval_lmm(args.config, args.overrides, args.checkpoint, progress=not args.quiet, predictions=args.predictions)
        if args.json:
            print(json.dumps(metrics))
        return 0
    config = load_config(args.config, args.overrides)
    if args.compile:
        from longvid.core.stream_input import quiet_compile_logs

        quiet_compile_logs()
    if args.predictions and not os.path.isdir(os.path.dirname(os.path.abspath(args.predictions))):
        raise LongvidError(f"--predictions {args.predictions}: its folder does not exist")
    import torch

    from longvid.precision import resolve_dtype

    if args.dtype != "float32" and config.model == "toy":
        raise LongvidError(f"--dtype {args.dtype} is for MeMViT models, not model=toy")
    dtype, dtype_note = resolve_dtype(args.dtype, "cuda" if torch.cuda.is_available() else "cpu")  # the device eval runs on
    if dtype_note and not args.quiet:
        print(f"longvid: {dtype_note}", file=sys.stderr)
    metrics = evaluate_checkpoint(config, args.checkpoint or config.out_dir, args.pooling, progress=not args.quiet,
                                  predictions=args.predictions, dtype=dtype, compile=args.compile,
                                  channels_last=args.channels_last)  # fmt: skip
    if args.json:
        print(json.dumps(metrics))
        return 0
    width = max(len(k) for k in metrics)
    print(f"{'metric':<{width}}  value")
    print("\n".join(f"{k:<{width}}  {v:6.2f}" for k, v in metrics.items()))
    print(f"metrics written to {os.path.join(config.out_dir, 'metrics.json')}" + (f"; predictions to {args.predictions}" if args.predictions else ""))
    return 0


# -- models ----------------------------------------------------------------------------


def cmd_models(args: argparse.Namespace) -> int:
    from longvid.registry import list_models

    found = list_models()
    if args.json:
        print(json.dumps([vars(info) for info in found]))
        return 0
    width = max(len(info.name) for info in found)
    for info in found:
        print(f"{info.name:<{width}}  {info.description}")
    return 0


# -- flops -----------------------------------------------------------------------------


def cmd_flops(args: argparse.Namespace) -> int:
    from longvid.memvit.flops import model_cost
    from longvid.memvit import get_config

    blocks = None
    if args.memory_blocks == "all":
        blocks = tuple(range(get_config(args.preset).depth))
    elif args.memory_blocks is not None:
        try:
            blocks = tuple(int(b) for b in args.memory_blocks.split(",") if b.strip())
        except ValueError:
            raise LongvidError(f"--memory-blocks takes comma-separated block indices or 'all', got {args.memory_blocks!r}") from None
    cost = model_cost(args.preset, clip_frames=args.clip_frames, size=args.size, memory_len=args.memory, sampler=args.sampler, memory_blocks=blocks, num_classes=args.num_classes)
    if args.json:
        print(json.dumps(cost.as_dict()))
        return 0
    memory = f"M={cost.memory_len}, {cost.sampler}, {len(cost.memory_blocks)} blocks" if cost.memory_len else "none"
    rows = [
        ("model", cost.preset),
        ("clip", f"{cost.clip_frames}x{cost.size}x{cost.size}, batch 1"),
        ("memory", memory),
        ("params", f"{cost.params:,}"),
        ("GFLOPs", f"{cost.gflops:.2f} (steady state, 1 multiply-add = 1 FLOP)"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


# -- parser ----------------------------------------------------------------------------


# -- bench -------------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    if args.seeds is not None and args.what not in ("recall", "rewind"):
        raise LongvidError("--seeds is an option of bench (recall) and bench rewind only")
    if args.seed is not None and (args.what != "recall" or args.seeds is not None):
        raise LongvidError("--seed is an option of bench (recall), without --seeds")
    if args.workers is not None and args.what != "recall":
        raise LongvidError("--workers is an option of bench (recall) only")
    torch.set_num_threads(1)  # tiny tensors, one model at a time: one thread is much faster than two busy ones (and the recorded figures are single-threaded)
    if args.what == "scaling":
        from longvid.memvit.scaling import run_scaling

        run_scaling(args.preset, size=args.size, out_dir=args.out)
        return 0
    if args.what == "malmm":
        return _bench_malmm(args)
    if args.what == "rewind":
        return _bench_rewind(args)
    from longvid.bench.run import MODES, run_bench, save_demo_weights

    if args.quick and args.full:
        raise LongvidError("choose one of --quick and --full")
    if args.workers is not None and args.workers < 1:
        raise LongvidError(f"--workers must be >= 1, got {args.workers}")
    seeds = _seed_list(args.seeds) if args.seeds is not None else (args.seed or 0,)
    if args.seed is not None and args.seed < 0:
        raise LongvidError(f"--seed must be >= 0, got {args.seed}")
    mode = "quick" if args.quick else "full" if args.full else "default"
    results = run_bench(MODES[mode], seeds=seeds, out_dir=args.out, progress=not args.quiet, workers=args.workers)
    if args.save_weights:
        path = save_demo_weights(results, args.save_weights)
        print(f"saved {path}")
    return 0


def _bench_malmm(args: argparse.Namespace) -> int:
    from dataclasses import asdict, replace

    import torch

    from longvid.malmm.bench import MALMMBenchSpec, format_table, run_malmm_bench

    if args.full or args.save_weights:
        raise LongvidError("bench malmm takes --quick, --out and --quiet only")
    spec = MALMMBenchSpec()
    if args.quick:  # a smoke run: too little training for the memory margin
        spec = replace(spec, train_videos=128, test_videos=64, train=replace(spec.train, epochs=3))
    log = None if args.quiet else (lambda message: print(f"longvid: {message}", file=sys.stderr))
    torch.manual_seed(spec.train.seed)  # the recorded figures start from this global RNG state
    rows = run_malmm_bench(spec, log=log)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "malmm_recall.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"spec": asdict(spec), "rows": rows}, f, indent=1)
    print(format_table(rows))
    print(f"wrote {path}", file=sys.stderr)
    return 0


def _bench_rewind(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from longvid.rewind.bench import RewindBenchSpec, format_table, run_rewind_bench

    if args.full or args.save_weights:
        raise LongvidError("bench rewind takes --quick, --seeds, --out and --quiet only")
    spec = RewindBenchSpec()
    if args.seeds is not None:
        spec = replace(spec, qa_seeds=_seed_list(args.seeds))
    if args.quick:  # a smoke run: too little training for the margins
        spec = replace(spec, train_videos=32, qa_train_videos=32, test_videos=16, qa_test_videos=16,
                       stage1=replace(spec.stage1, steps=10), stage2=replace(spec.stage2, steps=20),
                       qa_stage2=replace(spec.qa_stage2, steps=20), qa_explore_steps=10)
    log = None if args.quiet else (lambda message: print(f"longvid: {message}", file=sys.stderr))
    tables = run_rewind_bench(spec, out_dir=args.out, log=log)
    for name, rows in tables.items():
        print(f"ReWind {name}\n{format_table(rows)}\n")
    print(f"wrote {os.path.join(args.out, 'rewind.json')}, {os.path.join(args.out, 'rewind.md')}", file=sys.stderr)
    return 0


def _seed_list(text: str) -> tuple[int, ...]:
    """``"0,1,2"`` -> ``(0, 1, 2)``; a clear error for anything else."""
    try:
        seeds = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise LongvidError(f"--seeds takes comma-separated integers, e.g. 0,1,2, not {text!r}") from None
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise LongvidError(f"--seeds must be distinct integers >= 0, got {text!r}")
    return seeds


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

    sub = command("info", cmd_info, "Print a video's duration, fps, frames, resolution, codec and clip count.")
    sub.add_argument("video")
    _add_clip_options(sub)
    sub.add_argument("--count", action="store_true", help="decode the whole video to count frames exactly")
    sub.add_argument("--json", action="store_true", help="print one JSON object")

    sub = command("clips", cmd_clips, "Stream a video through the clip reader and print each clip.")
    sub.add_argument("video")
    _add_clip_options(sub)
    sub.add_argument("--size", type=int, default=224, help="short-side resize and center crop (default 224)")
    sub.add_argument("--start", type=float, default=0.0, help="start time in seconds")
    sub.add_argument("--end", type=float, default=None, help="end time in seconds")

    sub = command("demo-video", cmd_demo_video, "Write a generated recall video: moving shapes and one brief coloured cue.")
    sub.add_argument("out", help="output video path (.mp4)")
    sub.add_argument("--seconds", type=float, default=20.0)
    sub.add_argument("--fps", type=float, default=16.0, help="frame rate (default 16: with the default stride 4, the 4 frames/s the shipped recall model sees)")
    sub.add_argument("--width", type=int, default=160)
    sub.add_argument("--height", type=int, default=120)
    sub.add_argument("--seed", type=int, default=0)

    sub = command("ask", cmd_ask, "Watch a video online and answer a question about it (MA-LMM or ReWind).")
    sub.add_argument("video")
    sub.add_argument("question")
    sub.add_argument("--model", choices=("malmm", "rewind"), default="malmm", help="which system answers (default malmm)")
    sub.add_argument("--preset", default=None, help="model preset (default malmm_qa / rewind_paper)")
    sub.add_argument("--encoder", "--vision", dest="encoder", default=None,
                     help="image encoder: path or hub id of a CLIP/SigLIP/AutoModel vision tower")
    sub.add_argument("--llm", default=None, help="language model: path or hub id of a causal LM")
    sub.add_argument("--checkpoint", "--weights", dest="checkpoint", default=None,
                     help="trained weights (.safetensors; for MA-LMM also released .pth names)")
    sub.add_argument("--allow-untrained", action="store_true",
                     help="run without --weights (random trained parts: for smoke tests, the answer is noise)")
    sub.add_argument("--time", type=float, default=None, help="breakpoint mode: answer at T seconds, seeing only video up to T")
    sub.add_argument("--frames", type=int, default=20, help="malmm: frames sampled uniformly over the video (default 20)")
    sub.add_argument("--fps", type=float, default=None, help="malmm: sample at this rate instead (long videos, online)")
    sub.add_argument("--qformer-tokenizer", default="bert-base-uncased", help="malmm: Q-Former instruction tokenizer ('' for none)")
    sub.add_argument("--keep-every", type=int, default=1, help="rewind: feature buffer keeps every k-th frame (default 1: all)")
    sub.add_argument("--spill-dir", default=None, help="rewind: feature buffer spills to memory-mapped files in this folder")
    sub.add_argument("--max-new-tokens", type=int, default=32)
    sub.add_argument("--device", default=None, help="torch device (default cpu)")
    sub.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help=DTYPE_HELP)
    sub.add_argument("--json", action="store_true", help="print one JSON object")

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

    sub = command("serve", cmd_serve, "Serve one batched model for many live streams over HTTP (the serve extra: FastAPI + uvicorn).")
    sub.add_argument("--model", default=None, help="model preset (default memvit_tiny_recall with its shipped demo weights)")
    sub.add_argument("--checkpoint", default=None, help="weights: longvid .safetensors or official MeMViT .pyth")
    sub.add_argument("--labels", default=None, help="class names: .txt (one a line), .csv or .json label map")
    sub.add_argument("--encoder", default=None, help="MA-LMM/ReWind: image encoder path or hub id")
    sub.add_argument("--llm", default=None, help="MA-LMM/ReWind: language model path or hub id")
    sub.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; any other needs a token)")
    sub.add_argument("--port", type=int, default=8000)
    sub.add_argument("--token", default=None, help="bearer token every API request must carry (or the LONGVID_TOKEN variable)")
    sub.add_argument("--max-streams", type=int, default=8, help="live streams at once: the batch the model holds (default 8)")
    sub.add_argument("--allow-scheme", default="udp,rtp,rtsp,rtsps,rtmp,rtmps,srt,http,https",
                     help="comma-separated URL schemes a source may use (default: udp,rtp,rtsp,rtsps,rtmp,rtmps,srt,http,https)")
    sub.add_argument("--allow-dir", default=None, help="local video files may be sources only under this folder (default: none)")
    sub.add_argument("--state-dir", default=None, help="save each stream's memory here periodically; a restart resumes the streams")
    sub.add_argument("--save-every", type=float, default=30.0, help="--state-dir: seconds between saves (default 30)")
    sub.add_argument("--max-body", type=int, default=16384, help="request body limit in bytes (default 16384)")
    sub.add_argument("--lag", choices=("drop", "queue"), default="drop", help="when the model is behind: keep the newest clip, or queue (bounded)")
    sub.add_argument("--queue-size", type=int, default=8, help="--lag queue: clips that may wait per stream (default 8)")
    sub.add_argument("--open-timeout", type=float, default=10.0, help="seconds to wait for a source to open (default 10)")
    sub.add_argument("--read-timeout", type=float, default=5.0, help="seconds without data before a source counts as lost (default 5)")
    sub.add_argument("--reconnect", type=int, default=3, metavar="N", help="reconnect up to N times after a loss (default 3)")
    sub.add_argument("--reset-on-reconnect", action="store_true", help="start a stream's memory afresh after a reconnection")
    sub.add_argument("-T", "--clip-frames", type=int, default=None, help="frames per clip (default: the model's)")
    sub.add_argument("--tau", type=int, default=None, help="sampling stride in frames (default: the model's)")
    sub.add_argument("--fps", type=float, default=None, help="LMMs: frames read per second (default 1)")
    sub.add_argument("--size", type=int, default=None, help="short side and center crop (default: the model's)")
    sub.add_argument("--topk", type=int, default=5, help="labels per clip (default 5)")
    sub.add_argument("--device", default="cpu", help="torch device (default cpu)")
    sub.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    sub.add_argument("--workers", type=int, default=1,
                     help="split each step's streams into this many forwards run at once, one torch thread each unless "
                          "--threads (default 1; on CPU with a small model, one per core is fastest)")
    sub.add_argument("--allow-untrained", action="store_true",
                     help="serve an MA-LMM/ReWind preset without trained weights (its answers are noise)")
    sub.add_argument("--ray", action="store_true", help="run as a Ray Serve application (the ray extra; RAY_ADDRESS joins a cluster): "
                     "replicas of the engine, streams pinned by id, moved through --state-dir when a replica goes away")
    sub.add_argument("--replicas", type=int, default=2, help="--ray: engine replicas (default 2)")
    sub.add_argument("--quiet", action="store_true", help="no log lines")

    sub = command("demo", cmd_demo, "Write a demo video, print its info and stream its clips.")
    sub.add_argument("--out", default="longvid-demo", help="output folder (default longvid-demo/)")
    sub.add_argument("--seconds", type=float, default=20.0)

    sub = command("train", cmd_train, "Train a memory model on sequential clip streams, or MA-LMM on its data sets (use torchrun for several processes).")
    sub.add_argument("config", help="a training preset (see longvid.train.PRESETS), a JSON file of config fields, or an MA-LMM run preset (malmm_lvu, malmm_tiny_lvu, ...)")
    sub.add_argument("overrides", nargs="*", help="config fields as key=value, e.g. lr=0.01 progressive=1,2,3")
    sub.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in out_dir")
    sub.add_argument("--quiet", action="store_true", help="no progress bar")

    sub = command("eval", cmd_eval, "Evaluate a checkpoint on the config's validation videos.")
    sub.add_argument("config", help="a training preset or a JSON file of config fields")
    sub.add_argument("overrides", nargs="*", help="config fields as key=value")
    sub.add_argument("--checkpoint", help="checkpoint path or folder (default: the latest in out_dir)")
    sub.add_argument("--pooling", choices=("mean", "last"), default="mean", help="video score: mean of clip logits or the last clip's")
    sub.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help=DTYPE_HELP + " (MeMViT configs)")
    sub.add_argument("--json", action="store_true", help="print one JSON object")
    sub.add_argument("--predictions", metavar="FILE", help="write the official submission file to FILE: EPIC challenge JSON, AVA detection CSV; "
                     "MA-LMM/ReWind presets: every sample's prediction as JSONL")
    sub.add_argument("--compile", action="store_true", help="torch.compile the model (falls back to eager, with a line, when compiling fails)")
    sub.add_argument("--channels-last", action="store_true", help="3-D convolutions in the channels-last-3d layout")
    sub.add_argument("--quiet", action="store_true", help="no progress bar")

    sub = command("models", cmd_models, "List every model preset of every family, one line each.")
    sub.add_argument("--json", action="store_true", help="print one JSON list")

    sub = command("flops", cmd_flops, "Print a model preset's parameters and GFLOPs per clip at steady state.")
    sub.add_argument("preset", help="model preset, e.g. memvit16_16x4")
    sub.add_argument("-T", "--clip-frames", type=int, default=None, help="frames per clip (default: the preset's)")
    sub.add_argument("--size", type=int, default=None, help="crop size (default: the preset's)")
    sub.add_argument("--memory", type=int, default=None, help="memory length M (0: no memory)")
    sub.add_argument("--sampler", default=None, help="memory sampler: consecutive, all or gapN")
    sub.add_argument("--memory-blocks", default=None, help="blocks that read memory: comma-separated indices or 'all'")
    sub.add_argument("--num-classes", type=int, default=None, help="classifier size (default: the preset's)")
    sub.add_argument("--json", action="store_true", help="print one JSON object")

    sub = command("bench", cmd_bench, "The long-range memory benchmark: train and compare memory vs more frames on recall "
                  "('scaling': the cost study of a full-size preset, no training).")  # fmt: skip
    sub.add_argument("what", nargs="?", choices=("recall", "scaling", "malmm", "rewind"), default="recall",
                     help="recall (default), scaling, malmm (MA-LMM vs no memory on QA recall), or rewind "
                          "(ReWind: grounding vs uniform frames, QA with vs without frame selection)")
    sub.add_argument("--quick", action="store_true", help="recall: a smaller run (d = 1, 2; fewer models); malmm, rewind: a ~2-minute smoke run")
    sub.add_argument("--full", action="store_true", help="recall: the thorough run (longer distances, more data)")
    sub.add_argument("--out", default="bench-results", help="results folder (default bench-results/)")
    sub.add_argument("--save-weights", default=None, metavar="PATH", help="recall: save the MeMViT with the longest reach (first seed) as PATH (.safetensors)")
    sub.add_argument("--preset", default="memvit16_16x4", help="scaling: model preset (default memvit16_16x4)")
    sub.add_argument("--size", type=int, default=None, help="scaling: spatial size (default: the preset's crop size)")
    sub.add_argument("--seed", type=int, default=None, metavar="S", help="recall: the run's seed (default 0)")
    sub.add_argument("--seeds", default=None, metavar="LIST",
                     help="recall: run every seed, e.g. 0,1,2, and report mean and min per cell; "
                          "rewind: QA table averaged over these runs (default 0)")
    sub.add_argument("--workers", type=int, default=None, metavar="N",
                     help="recall: rows trained at once in separate processes (default: 2 if 2 cores are free to use, else 1)")
    sub.add_argument("--quiet", action="store_true", help="no progress bars")
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


if __name__ == "__main__":
    sys.exit(main())
