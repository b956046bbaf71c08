"""``longvid serve``: one batched model for many live streams over HTTP (or as Ray Serve replicas)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from longvid.errors import LongvidError


def cmd_serve(args: argparse.Namespace) -> int:
    import torch

    from longvid.ask import check_trained
    from longvid.data.labels import load_labels
    from longvid.loading import DEFAULT_STREAM_PRESET, load_stream_model, shipped_labels
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
    check_trained(args.model, args.checkpoint, args.allow_untrained, "serve", "--checkpoint FILE")
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


def add_parser(command: Callable[..., argparse.ArgumentParser]) -> None:
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
