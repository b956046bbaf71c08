"""The engine's figures in the Prometheus text format (``GET /metrics``)."""

from __future__ import annotations


def prometheus_text(engine, uptime: float) -> str:
    """Streams, clips (total and per second of uptime), drops, steps and the latency histogram."""
    streams = engine.live()
    lines = [
        "# HELP longvid_streams Live streams.", "# TYPE longvid_streams gauge",
        f"longvid_streams {len(streams)}",
        "# HELP longvid_stream_capacity Streams the batched model can hold.", "# TYPE longvid_stream_capacity gauge",
        f"longvid_stream_capacity {engine.stepper.capacity}",
        "# HELP longvid_clips_total Clips stepped through the model.", "# TYPE longvid_clips_total counter",
        f"longvid_clips_total {engine.total_clips}",
        "# HELP longvid_clips_per_second Clips stepped per second since the server started.",
        "# TYPE longvid_clips_per_second gauge",
        f"longvid_clips_per_second {engine.total_clips / max(uptime, 1e-9):.6f}",
        "# HELP longvid_dropped_clips_total Clips dropped because the model was behind.",
        "# TYPE longvid_dropped_clips_total counter",
        f"longvid_dropped_clips_total {engine.total_dropped}",
        "# HELP longvid_steps_total Batched forward passes.", "# TYPE longvid_steps_total counter",
        f"longvid_steps_total {engine.steps}",
        "# HELP longvid_latency_seconds From a clip's last frame arriving to its record.",
        "# TYPE longvid_latency_seconds histogram",
    ]
    cumulative = 0
    for bound, count in zip(engine.latency_buckets, engine.latency_counts):
        cumulative += count
        lines.append(f'longvid_latency_seconds_bucket{{le="{bound:g}"}} {cumulative}')
    total = sum(engine.latency_counts)
    lines += [f'longvid_latency_seconds_bucket{{le="+Inf"}} {total}',
              f"longvid_latency_seconds_sum {engine.latency_sum:.6f}", f"longvid_latency_seconds_count {total}"]
    for stream in streams:
        lines.append(f'longvid_stream_clips{{stream="{stream.id}"}} {stream.clips}')
        lines.append(f'longvid_stream_dropped{{stream="{stream.id}"}} {stream.dropped}')
    return "\n".join(lines) + "\n"
