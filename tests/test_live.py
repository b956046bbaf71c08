"""Live sources: the bounded clip buffer, the stream clock, `longvid stream` on a live
MPEG-TS stream over UDP and on a pipe, the drop policy under a slow model, reconnection."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import av
import longvid
import pytest
import torch

from conftest import longvid_script
from live_sources import Pusher, SlowModel, free_tcp_port, free_udp_port, push_mpegts, write_mpegts
from longvid.serve.engine import LiveEngine
from longvid.video.live import ClipBuffer, Gap, LiveClip, LiveReader, LiveSettings, StreamEvent, is_live_source

SMALL = LiveSettings(clip_frames=4, stride=2, size=32, read_timeout=2.0, open_timeout=10.0)


def clip(index: int, seconds: float = 0.5) -> LiveClip:
    return LiveClip(torch.zeros(3, 1, 2, 2), index, index * seconds, (index + 1) * seconds, torch.zeros(1), 1)


def test_live_sources_are_recognised():
    for source in ("udp://127.0.0.1:5000?pkt_size=1316", "rtsp://cam/1", "srt://h:1", "https://x/live.m3u8", "-", "/dev/video0"):
        assert is_live_source(source)
    for source in ("clip.mp4", "/data/v.mkv", "ftp://x/y.mp4"):
        assert not is_live_source(source)


def test_clip_buffer_drops_oldest_clips_as_one_gap_and_keeps_events():
    buffer = ClipBuffer(capacity=2)
    buffer.put(clip(0))
    buffer.put(clip(1))
    buffer.put(StreamEvent("lost", "x"))
    for index in range(2, 6):
        buffer.put(clip(index))
        assert buffer.clips <= 2  # bounded however many arrive
    items = [buffer.get(0) for _ in range(len(buffer))]
    assert buffer.get(0) is None
    # clips 0..3 dropped oldest first; 0-1 before the event and 2-3 after it are two gaps
    assert [type(i).__name__ for i in items] == ["Gap", "StreamEvent", "Gap", "LiveClip", "LiveClip"]
    assert (items[0].count, items[0].start, items[0].end) == (2, 0.0, 1.0)
    assert (items[2].count, items[2].start, items[2].end) == (2, 1.0, 2.0)
    assert [i.index for i in items[3:]] == [4, 5]
    assert buffer.dropped == 4


def test_stream_time_goes_on_through_a_restarted_sender():
    now = [100.0]
    reader = LiveReader("udp://127.0.0.1:1", SMALL, clock=lambda: now[0])
    assert reader._on_stream_clock(0.0) == 0.0
    now[0] += 1.0
    assert reader._on_stream_clock(1.0) == 1.0
    now[0] += 3.0  # the sender restarted 3 s later with its clock back at 0
    assert reader._on_stream_clock(0.0) == pytest.approx(4.0)
    now[0] += 0.5
    assert reader._on_stream_clock(0.5) == pytest.approx(4.5)


def _records(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.endswith("\n")]


def _check_clip_accounting(records: list[dict]) -> None:
    """Every clip up to the last one is either stepped or inside one dropped gap, in order,
    and stream time only goes forward."""
    clips = [r for r in records if "clip" in r]
    dropped = sum(r["dropped"] for r in records if "dropped" in r and "status" not in r)
    assert clips and len(clips) + dropped == clips[-1]["clip"] + 1
    ends = [r["end"] if "clip" in r else r["to"] for r in records if "clip" in r or "to" in r]
    assert ends == sorted(ends)


def test_stream_reads_a_live_udp_stream_with_latency_and_stops_cleanly_on_sigterm(tmp_path):
    url = f"udp://127.0.0.1:{free_udp_port()}"
    out, log = tmp_path / "live.jsonl", tmp_path / "log.txt"
    with Pusher(f"{url}?pkt_size=1316", seconds=60), open(log, "w") as log_file:
        process = subprocess.Popen([longvid_script(), "stream", url, "--out", str(out), "--size", "32", "--tau", "2",
                                    "--threads", "1", "--read-timeout", "3"], stdout=log_file, stderr=subprocess.STDOUT)
        deadline = time.time() + 90
        while time.time() < deadline and not (out.exists() and sum("clip" in r for r in _records(out)) >= 4):
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    records = _records(out)
    assert code == 0, log.read_text()
    clips = [r for r in records if "clip" in r]
    assert len(clips) >= 4
    assert all(r["video"] == url for r in records)
    for r in clips:
        assert 0 <= r["latency"] < 5 and r["end"] - r["start"] == pytest.approx(0.5)  # 4 frames x 2 at 16 fps
        assert len(r["top"]) == 4
    _check_clip_accounting(records)
    assert records[-1]["status"] == "done" and records[-1]["reason"] == "stopped"
    assert "stopped by SIGTERM" in log.read_text()


def test_stream_from_a_pipe_with_a_queue_matches_the_same_video_read_as_a_file(tmp_path):
    video = str(tmp_path / "camera.ts")
    write_mpegts(video, seconds=3)
    out, out_file = tmp_path / "pipe.jsonl", tmp_path / "file.jsonl"
    with open(video, "rb") as stdin, open(tmp_path / "log.txt", "w") as log:
        code = subprocess.run([longvid_script(), "stream", "-", "--out", str(out), "--size", "32", "--tau", "2",
                               "--threads", "1", "--lag", "queue", "--queue-size", "100", "--max-seconds", "2"],
                              stdin=stdin, stdout=log, stderr=subprocess.STDOUT, timeout=120).returncode
    assert code == 0, (tmp_path / "log.txt").read_text()
    live = [r for r in _records(out) if "clip" in r]
    assert [r["clip"] for r in live] == [0, 1, 2, 3]  # 2 s of 0.5 s clips, none dropped with a long queue
    assert not [r for r in _records(out) if "dropped" in r and "clip" not in r and "status" not in r]
    assert _records(out)[-1]["status"] == "done"
    from longvid.loading import load_stream_model, shipped_labels
    from longvid.predict import settings_for, stream_predictions

    model, _ = load_stream_model(None)
    settings = settings_for(model, size=32, stride=2)
    offline = [r for r in stream_predictions(model, video, settings, shipped_labels("memvit_tiny_recall")) if "clip" in r][:4]
    assert [(r["start"], r["end"], r["top"]) for r in live] == [(round(r["start"], 3), round(r["end"], 3), r["top"]) for r in offline]


def test_live_options_are_checked_before_anything_runs(videos, capsys):
    from longvid.cli import main

    for argv, message in (([videos["cfr"], "--lag", "drop"], "--lag is for live sources"),
                          (["udp://127.0.0.1:9", "--reconnect", "-1"], "--reconnect must be >= 0"),
                          (["udp://127.0.0.1:9", videos["cfr"]], "cannot be mixed with video files"),
                          (["udp://127.0.0.1:9", "--queue-size", "4"], "--queue-size is for --lag queue"),
                          (["-", "-"], "- (stdin) can be given once"),
                          (["udp://127.0.0.1:9", "--resume", "--out", "x.jsonl"], "are for video files, not live sources")):
        assert main(["stream", *argv]) == 1
        assert message in capsys.readouterr().err


def _run_engine(engine: LiveEngine, until, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while engine.live() and not until() and time.monotonic() < deadline:
        engine.step(timeout=0.1)


def test_a_slow_model_drops_whole_clips_and_its_memory_sees_the_gap(tmp_path):
    video = str(tmp_path / "camera.ts")
    write_mpegts(video, seconds=3)
    model = SlowModel(longvid.build_model("memvit_tiny_recall"), delay=1.0)
    records = []
    engine = LiveEngine(model, SMALL, capacity=2, sink=lambda stream, record: records.append(record))
    engine.add(video)  # a file released at its real-time pace: a camera
    _run_engine(engine, until=lambda: False)
    _check_clip_accounting(records)
    gaps = [r for r in records if "dropped" in r and "status" not in r]
    assert gaps, records
    for gap in gaps:  # each gap starts where the clip before it ended
        before = records[records.index(gap) - 1]
        assert gap["from"] == before["end"]
    assert records[-1]["status"] == "done" and records[-1]["dropped"] == sum(g["dropped"] for g in gaps)
    # the memory starts once and goes on through the gaps (is_first only on the first step)
    assert [rows[0] for rows in model.is_first] == [True] + [False] * (len(model.is_first) - 1)


def test_reconnect_after_the_sender_restarts_keeps_the_memory():
    port = free_udp_port()
    url = f"udp://127.0.0.1:{port}"
    done = threading.Event()

    def sender():
        push_mpegts(f"{url}?pkt_size=1316", 2.0)
        time.sleep(1.5)  # the encoder restarts
        push_mpegts(f"{url}?pkt_size=1316", 2.0)
        done.set()

    model = SlowModel(longvid.build_model("memvit_tiny_recall"))
    records = []
    settings = LiveSettings(clip_frames=4, stride=2, size=32, read_timeout=0.7, open_timeout=10, reconnect=3, backoff=0.2)
    engine = LiveEngine(model, settings, capacity=1, sink=lambda stream, record: records.append(record))
    threading.Thread(target=sender, daemon=True).start()
    engine.add(url)
    _run_engine(engine, until=done.is_set)
    engine.stop_all()
    statuses = [r.get("status") for r in records if "status" in r]
    assert statuses[:2] == ["lost", "reconnected"], records
    back = next(i for i, r in enumerate(records) if r.get("status") == "reconnected")
    before = [r for r in records[:back] if "clip" in r]
    after = [r for r in records[back:] if "clip" in r]
    assert before and after
    assert records[back]["memory"] == "kept" and records[back]["gap"] > 0.5
    assert after[0]["start"] > before[-1]["end"] + 0.5  # stream time went on through the outage
    assert [rows[0] for rows in model.is_first] == [True] + [False] * (len(model.is_first) - 1)


def _read_all(source: str, settings: LiveSettings) -> list:
    reader = LiveReader(source, settings)
    reader.start()
    items = []
    while True:
        item = reader.buffer.get(timeout=30)
        assert item is not None, items
        items.append(item)
        if isinstance(item, StreamEvent) and item.kind in ("ended", "failed"):
            return items


def test_http_sources_progressive_mpegts_and_hls(tmp_path):
    import functools
    import http.server

    write_mpegts(str(tmp_path / "cam.ts"), seconds=2)
    with av.open(str(tmp_path / "live.m3u8"), "w", format="hls", options={"hls_time": "1", "hls_list_size": "0"}) as hls, \
            av.open(str(tmp_path / "cam.ts")) as source:
        video = source.streams.video[0]
        output = hls.add_stream_from_template(video)
        for packet in source.demux(video):
            if packet.dts is not None:
                packet.stream = output
                hls.mux(packet)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings = LiveSettings(clip_frames=4, stride=2, size=32, capacity=100, read_timeout=5)
    try:
        for name in ("cam.ts", "live.m3u8"):
            items = _read_all(f"http://127.0.0.1:{server.server_address[1]}/{name}", settings)
            clips = [i for i in items if isinstance(i, LiveClip)]
            assert [c.index for c in clips] == [0, 1, 2, 3], (name, items)  # 2 s of 0.5 s clips
            assert [c.start for c in clips] == pytest.approx([0.0, 0.5, 1.0, 1.5])
            assert items[-1].kind == "ended"
    finally:
        server.shutdown()


def test_unreadable_live_sources_fail_with_one_line():
    from longvid.video.live import open_source
    from longvid.video.types import VideoError

    with pytest.raises(VideoError, match="no such video device"):
        open_source("/dev/video99", SMALL)
    quick = LiveSettings(clip_frames=4, stride=2, size=32, open_timeout=0.5)
    with pytest.raises(VideoError, match=r"nothing received within 0.5 s \(open timeout\)"):
        open_source(f"udp://127.0.0.1:{free_udp_port()}", quick)
    with pytest.raises(VideoError, match="cannot open"):
        open_source(f"http://127.0.0.1:{free_tcp_port()}/none.ts", quick)
    try:
        av.open("srt://127.0.0.1:9", timeout=(0.5, 0.5))
    except av.error.ProtocolNotFoundError:  # this PyAV's FFmpeg has no SRT: say so
        with pytest.raises(VideoError, match=r"the bundled FFmpeg cannot read srt:// sources"):
            open_source("srt://127.0.0.1:9", quick)
    except av.FFmpegError:
        pass


def test_a_model_failing_on_a_clip_ends_that_stream_with_an_error_record(tmp_path):
    class Broken(SlowModel):
        def forward(self, inputs, state):
            raise RuntimeError("shapes do not match")

    video = str(tmp_path / "camera.ts")
    write_mpegts(video, seconds=1)
    records = []
    engine = LiveEngine(Broken(longvid.build_model("memvit_tiny_recall")), SMALL, capacity=1,
                        sink=lambda stream, record: records.append(record))
    engine.add(video)
    _run_engine(engine, until=lambda: False, timeout=30)
    assert not engine.live() and engine.stepper.free == [0]
    assert records[-1]["status"] == "error" and "the model failed on this stream's clip: shapes do not match" in records[-1]["error"]
