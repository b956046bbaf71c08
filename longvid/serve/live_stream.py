"""The ``longvid stream`` job on live sources: every source a stream of one batched model,
one JSON line per record, written and flushed as it is made.

Records (each with ``"video"``, the source): clip labels with ``start``/``end`` (stream
time) and ``latency`` (seconds from the clip's last frame arriving to its record);
``{"dropped": n, "from", "to"}`` for clips dropped while the model was behind;
``{"status": "lost"|"reconnected"}`` for the connection; answers (``--ask``); and a closing
``{"status": "done"|"error", "clips", "dropped", ...}`` per source.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from longvid.serve.engine import LiveEngine, LiveStream
from longvid.video.live import LiveSettings
from longvid.video.types import VideoError


@dataclass
class LiveSummary:
    sources: int = 0
    done: int = 0
    failed: int = 0
    clips: int = 0
    dropped: int = 0
    answers: int = 0
    seconds: float = 0.0
    max_latency: float = 0.0


def run_live(model, sources: Sequence[str], settings: LiveSettings, out: str | None = None,
             labels: Sequence[str] | None = None, topk: int = 5, ask: Sequence[str] = (), every: float | None = None,
             reset_on_reconnect: bool = False, max_seconds: float | None = None, device=None, dtype=None,
             stop: threading.Event | None = None, log: Callable[[str], None] | None = None) -> LiveSummary:
    """Watch ``sources`` live until they end, fail, ``max_seconds`` of stream time pass, or
    ``stop`` is set (then each stream closes with a ``"stopped"`` done record)."""
    stop = stop or threading.Event()
    summary = LiveSummary(sources=len(sources))
    started = time.monotonic()
    sink_file = open(out, "w", encoding="utf-8") if out is not None else sys.stdout

    def sink(stream: LiveStream, record: dict) -> None:
        record = {k: v for k, v in record.items() if k != "stream"}
        sink_file.write(json.dumps(record, allow_nan=False) + "\n")
        sink_file.flush()
        summary.clips += "clip" in record
        summary.answers += "answer" in record
        if "from" in record:  # a gap
            summary.dropped += record["dropped"]
        if "latency" in record:
            summary.max_latency = max(summary.max_latency, record["latency"])
        if record.get("status") == "done":
            summary.done += 1
        elif record.get("status") == "error":
            summary.failed += 1
            if log:
                log(f"{record['video']}: {record.get('error')}")

    try:
        engine = LiveEngine(model, settings, capacity=len(sources), labels=labels, topk=topk, device=device,
                            dtype=dtype, reset_on_reconnect=reset_on_reconnect, max_seconds=max_seconds, sink=sink,
                            keep_records=0)  # every record is in the output: none kept in memory
        for source in sources:
            if stop.is_set():
                break
            try:
                engine.add(source, ask=ask, every=every)
                if log:
                    log(f"{source}: live")
            except VideoError as err:
                sink_file.write(json.dumps({"video": source, "status": "error", "error": err.reason}) + "\n")
                sink_file.flush()
                summary.failed += 1
                if log:
                    log(f"{source}: {err.reason}")
        while engine.live() and not stop.is_set():
            engine.step(timeout=0.1)
        engine.stop_all("stopped")
    finally:
        if out is not None:
            sink_file.close()
    summary.seconds = time.monotonic() - started
    return summary
