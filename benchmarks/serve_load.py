"""Load on `longvid serve`: 1, 4, 16 live cameras on one batched model vs one process per camera.

Everything runs on loopback: PyAV encoders in this process push MPEG-TS over UDP to
127.0.0.1 at real-time pace (16 fps), the server (a `longvid serve` subprocess, memvit_tiny:
16-frame clips every 4th frame, so one clip per 4 s per camera) reads them, and its records
are fetched through the HTTP API. For each stream count it prints p50/p99 latency (from a
clip's last frame arriving to its record), clips dropped, clips/s and the server's RSS.
Live cameras arrive at a fixed rate (16 cameras: 4 clips/s), so clips/s there is the
arrival rate when nothing drops; what one batched model buys shows when the streams are
saturated: the same engine stepping 16 streams of clips as fast as it can in one process
(1 torch thread, one per core, or one worker per core) vs 16 processes stepping one
stream each (the naive way: 1 thread each, and with --naive-default-threads torch's
default), taking turns --rounds times, clips/s and RSS. With --live-processes N, N live
cameras are also read by one `longvid stream` process each. Bounded: about --budget
seconds (default 180) in all. Why a batch cannot do much better on CPU:
benchmarks/serve_batch_cost.py.

    python benchmarks/serve_load.py                      # 1, 4, 16 live streams; 16 saturated
    python benchmarks/serve_load.py --workers 2 --rounds 2 --budget 400
    python benchmarks/serve_load.py --streams 1,4 --capacity 4 --seconds 5
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import av
import numpy as np

FPS = 16


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def push(url: str, stop: threading.Event, seed: int) -> None:
    """A camera: moving bars (96x64) encoded as MPEG-TS to ``url`` at 16 fps until ``stop``."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 200, size=(64, 96, 3), dtype=np.uint8)
    with av.open(url, "w", format="mpegts") as container:
        stream = container.add_stream("mpeg2video", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.options = {"g": "16", "bf": "0"}
        started = time.monotonic()
        i = 0
        while not stop.wait(max(0.0, started + i / FPS - time.monotonic())):
            frame = np.roll(base, 2 * i, axis=1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
            i += 1


class Cameras:
    def __init__(self, count: int):
        self.ports = [free_port(socket.SOCK_DGRAM) for _ in range(count)]
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=push, args=(f"udp://127.0.0.1:{p}?pkt_size=1316", self.stop, i), daemon=True)
                        for i, p in enumerate(self.ports)]

    @property
    def sources(self) -> list[str]:
        return [f"udp://127.0.0.1:{p}" for p in self.ports]

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=5)


def http(method: str, url: str, body: dict | None = None, timeout: float = 60):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        return json.loads(reply.read() or b"null")


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def longvid_script() -> str:
    return os.path.join(os.path.dirname(sys.executable), "longvid")


def run_server(args, count: int, url: str, pid: int) -> dict:
    """``count`` cameras through the running server; figures over a ``args.seconds`` window."""
    with Cameras(count) as cameras:
        ids = [http("POST", f"{url}/v1/streams", {"source": s})["id"] for s in cameras.sources]
        deadline = time.monotonic() + args.warmup
        while time.monotonic() < deadline:
            streams = {s["id"]: s for s in http("GET", f"{url}/v1/streams")["streams"]}
            if all(streams[i]["clips"] >= 1 for i in ids):
                break
            time.sleep(0.5)
        before = {s["id"]: s for s in http("GET", f"{url}/v1/streams")["streams"]}
        rss_before = rss_mb(pid)
        started = time.monotonic()
        time.sleep(args.seconds)
        after = {s["id"]: s for s in http("GET", f"{url}/v1/streams")["streams"]}
        elapsed = time.monotonic() - started
        latencies = []
        for i in ids:  # every clip's latency but each stream's first (the model's warm-up)
            with urllib.request.urlopen(f"{url}/v1/streams/{i}/events?since=0&follow=false", timeout=30) as reply:
                records = [json.loads(line[6:]) for line in reply.read().decode().splitlines() if line.startswith("data: ")]
            latencies += [r["latency"] for r in [r for r in records if "clip" in r][1:]]
        clips = sum(after[i]["clips"] - before[i]["clips"] for i in ids)
        dropped = sum(after[i]["dropped"] - before[i]["dropped"] for i in ids)
        for i in ids:
            http("DELETE", f"{url}/v1/streams/{i}")
    return {"mode": "server", "streams": count, "clips_per_s": clips / elapsed, "clips": clips, "dropped": dropped,
            "latencies": len(latencies),
            "p50": percentile(latencies, 50), "p99": percentile(latencies, 99), "rss_mb": rss_mb(pid), "window_s": elapsed,
            "rss_before_mb": rss_before}


def run_processes(args, count: int, folder: str, deadline: float) -> dict | None:
    """The naive way: each camera read by its own ``longvid stream`` process."""
    with Cameras(count) as cameras:
        outs = [os.path.join(folder, f"camera{i}.jsonl") for i in range(count)]
        processes = [subprocess.Popen([longvid_script(), "stream", source, "--model", args.model, "--threads", "1", "--quiet",
                                       "--out", out, "--open-timeout", "120", "--read-timeout", "30"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                     for source, out in zip(cameras.sources, outs)]
        try:
            while time.monotonic() < deadline - args.seconds:
                if all(_clip_records(out) for out in outs):
                    break
                time.sleep(0.5)
            else:
                return None
            before = [len(_clip_records(out)) for out in outs]
            started = time.monotonic()
            time.sleep(args.seconds)
            records = [_clip_records(out) for out in outs]
            elapsed = time.monotonic() - started
            rss = sum(rss_mb(p.pid) for p in processes)
        finally:
            for p in processes:
                p.send_signal(signal.SIGTERM)
            for p in processes:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
        window = [r for rs, b in zip(records, before) for r in rs[b:]]
        dropped = sum(r["dropped"] for out in outs for r in _all_records(out) if "from" in r)
    latencies = [r["latency"] for r in window]
    return {"mode": "processes", "streams": count, "clips_per_s": len(window) / elapsed, "clips": len(window),
            "dropped": dropped, "p50": percentile(latencies, 50), "p99": percentile(latencies, 99), "rss_mb": rss, "window_s": elapsed}


def _worker(model, rows: int, threads: int, workers: int, seconds: float, connection) -> None:
    """A saturated stepper (a forked process): ``rows`` streams of random clips, as fast as
    it goes, for ``seconds`` after "go"; sends back the clips stepped and its RSS."""
    import torch

    from longvid.serve.engine import BatchedStepper, live_settings_for
    from longvid.video.live import LiveClip

    torch.set_num_threads(threads)
    settings = live_settings_for(model)
    stepper = BatchedStepper(model, capacity=rows, workers=workers)
    frames = torch.randn(3, settings.clip_frames, settings.size, settings.size)
    clip = LiveClip(frames, 0, 0.0, 1.0, torch.zeros(settings.clip_frames, dtype=torch.float64), settings.clip_frames)
    stepper.step({row: clip for row in range(rows)})  # warm up
    connection.send("ready")
    connection.recv()
    clips, started, cpu = 0, time.monotonic(), time.process_time()
    while time.monotonic() - started < seconds:
        stepper.step({row: clip for row in range(rows)})
        clips += rows
    connection.send({"clips": clips, "seconds": time.monotonic() - started, "cpu_s": time.process_time() - cpu,
                     "rss_mb": rss_mb(os.getpid())})


def run_saturated(model, processes: int, rows: int, threads: int, workers: int, seconds: float) -> dict:
    """Clips/s of ``processes`` forked processes of ``rows`` streams each, all stepping at once."""
    import multiprocessing

    context = multiprocessing.get_context("fork")  # each a process of its own, without paying torch's import again
    pipes = [context.Pipe() for _ in range(processes)]
    procs = [context.Process(target=_worker, args=(model, rows, threads, workers, seconds, child), daemon=True)
             for _, child in pipes]
    for p in procs:
        p.start()
    try:
        for parent, _ in pipes:
            assert parent.recv() == "ready"
        for parent, _ in pipes:
            parent.send("go")
        results = [parent.recv() for parent, _ in pipes]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    clips = sum(r["clips"] for r in results)
    return {"clips_per_s": clips / max(r["seconds"] for r in results), "rss_mb": sum(r["rss_mb"] for r in results),
            "clips_per_cpu_s": clips / sum(r["cpu_s"] for r in results)}


def saturated_comparison(args) -> None:
    """One process stepping ``args.capacity`` streams batched vs one process per stream (the
    way ``longvid stream`` runs one camera), each way with every thread setting that uses
    the cores: the batched process with 1 torch thread, with one per core, and with one
    worker (a part of the batch, one torch thread) per core; the processes with 1 thread
    each (their best: more would oversubscribe the cores) and, with --naive-default-threads,
    with torch's default (one per core each: what ``longvid stream`` does without
    ``--threads``; slow to measure, as its threads wait on each other). The settings take
    turns, ``args.rounds`` times; figures are the mean (and worst) over the rounds. Clips per
    CPU-second (CPU time of all the processes' threads) hardly depend on what else runs on
    the machine: their ratio is the clips/s ratio on an idle machine where both ways keep
    every core busy (threads that wait on each other burn CPU time and count against it)."""
    import torch

    import longvid

    cpus = os.cpu_count() or 1
    default_threads = torch.get_num_threads()  # torch's own choice in a fresh process
    torch.set_num_threads(1)
    model = longvid.build_model(args.model).eval()
    n = args.capacity
    settings = [("batched", f"1 process, batch of {n}, 1 thread", 1, n, 1, 1),
                ("batched", f"1 process, batch of {n}, {cpus} threads", 1, n, cpus, 1),
                ("batched", f"1 process, batch of {n}, {cpus} workers x 1 thread", 1, n, 1, cpus),
                ("naive", f"{n} processes, 1 stream and 1 thread each", n, 1, 1, 1)]
    if args.naive_default_threads:
        settings.append(("naive", f"{n} processes, 1 stream and {default_threads} threads each (torch default)", n, 1, default_threads, 1))
    results: dict[str, list[dict]] = {}
    for _ in range(args.rounds):
        for kind, what, processes, rows, threads, workers in settings:
            results.setdefault(what, []).append(run_saturated(model, processes, rows, threads, workers, args.saturate_seconds))
    summary = {}
    for kind, what, *_ in settings:
        speeds = [r["clips_per_s"] for r in results[what]]
        per_cpu = float(np.mean([r["clips_per_cpu_s"] for r in results[what]]))
        summary[what] = (kind, float(np.mean(speeds)), min(speeds), max(r["rss_mb"] for r in results[what]), per_cpu)
        print(f"{what:>58}: {summary[what][1]:6.1f} clips/s (worst {summary[what][2]:.1f}), {per_cpu:5.1f} clips per CPU-second, "
              f"RSS {summary[what][3]:.0f} MB", flush=True)
    best = {kind: max((v for v in summary.items() if v[1][0] == kind), key=lambda item: item[1][1]) for kind in ("batched", "naive")}
    (fast_what, fast), (naive_what, naive) = best["batched"], best["naive"]
    print(f"# best batched ({fast_what}) / best one process per stream ({naive_what}): {fast[1] / naive[1]:.2f}x the clips/s, "
          f"{naive[3] / max(fast[3], 1e-9):.1f}x less memory", flush=True)
    every_core = [what for kind, what, processes, rows, threads, workers in settings
                  if kind == "batched" and threads * workers >= cpus]  # the batched settings that can keep every core busy
    idle_what = max(every_core, key=lambda what: summary[what][4])
    print(f"# on an idle machine, every core busy: {idle_what} / {naive_what}: "
          f"{summary[idle_what][4] / naive[4]:.2f}x (the ratio of clips per CPU-second)", flush=True)


def _all_records(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.endswith("\n")]


def _clip_records(path: str) -> list[dict]:
    return [r for r in _all_records(path) if "clip" in r]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="1,4,16", help="stream counts to load the server with (default 1,4,16)")
    parser.add_argument("--capacity", type=int, default=16,
                        help="saturated comparison: one process stepping this many streams batched vs one process per stream (0: skip)")
    parser.add_argument("--live-processes", type=int, default=0, help="also run this many live cameras as one `longvid stream` process each")
    parser.add_argument("--model", default="memvit_tiny")
    parser.add_argument("--threads", type=int, default=1, help="the server's torch threads (default 1: on a busy machine more threads can be far slower)")
    parser.add_argument("--seconds", type=float, default=15.0, help="measuring window per live run (default 15)")
    parser.add_argument("--workers", type=int, default=1, help="the server's --workers (default 1)")
    parser.add_argument("--saturate-seconds", type=float, default=6.0, help="measuring window of each saturated run (default 6)")
    parser.add_argument("--rounds", type=int, default=1, help="saturated: times each setting runs, taking turns (default 1)")
    parser.add_argument("--naive-default-threads", action="store_true",
                        help="saturated: also run one process per stream with torch's default threads (slow: threads oversubscribe the cores)")
    parser.add_argument("--warmup", type=float, default=10.0, help="at most this long for every stream's first clip")
    parser.add_argument("--budget", type=float, default=180.0, help="seconds for the whole benchmark (default 180)")
    args = parser.parse_args()
    counts = [int(c) for c in args.streams.split(",") if c]
    started = time.monotonic()
    deadline = started + args.budget
    print(f"# live: {args.model} served to N real-time 16 fps UDP cameras on 127.0.0.1, {args.seconds:g} s windows", flush=True)
    if counts:
        run_live_server(args, counts, deadline)
    if args.capacity:
        print(f"# saturated: {args.capacity} streams of random clips stepped as fast as they go, {args.saturate_seconds:g} s "
              f"({time.monotonic() - started:.0f} s in)", flush=True)
        saturated_comparison(args)
    if args.live_processes:
        with tempfile.TemporaryDirectory() as folder:
            naive = run_processes(args, args.live_processes, folder, deadline)
        print(_row(naive) if naive else "# budget spent: the live processes run was left out")
    print(f"# {os.cpu_count()} CPUs, total {time.monotonic() - started:.0f} s")


def run_live_server(args, counts: list[int], deadline: float) -> list[dict]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([longvid_script(), "serve", "--model", args.model, "--port", str(port), "--max-streams",
                               str(max(counts)), "--threads", str(args.threads), "--workers", str(args.workers), "--quiet"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = []
    try:
        while True:
            try:
                http("GET", f"{url}/healthz", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the server did not start")
                time.sleep(0.3)
        for count in counts:
            if time.monotonic() + args.seconds + args.warmup > deadline:
                print(f"# budget spent: {count} streams left out", flush=True)
                break
            rows.append(run_server(args, count, url, server.pid))
            print(_row(rows[-1]), flush=True)
        print(f"# server peak RSS {rss_mb(server.pid, 'VmHWM'):.0f} MB", flush=True)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    return rows


def _row(r: dict) -> str:
    rss = f"{r['rss_before_mb']:.0f}->{r['rss_mb']:.0f}" if "rss_before_mb" in r else f"{r['rss_mb']:.0f}"
    return (f"{r['mode']:>9} streams={r['streams']:>2}  p50={r['p50']:.3f} s  p99={r['p99']:.3f} s "
            f"({r.get('latencies', r['clips'])} clips)  dropped={r['dropped']:>3}  "
            f"clips/s={r['clips_per_s']:.2f} ({r['clips']} in {r['window_s']:.0f} s)  rss={rss} MB")


if __name__ == "__main__":
    main()
