"""`longvid serve --ray` on a local one-machine Ray cluster with 2 replicas (loopback only).

1. Spread and isolation: four replayed cameras (two watch video A, two video B, as
   files released at real-time pace) are created through the HTTP API; it prints which
   replica holds each, and how far apart the two streams of the same video are (clip by
   clip top labels and scores; each stream is batched with whatever else its replica
   holds), and that A and B differ.
2. A replica goes away: two live UDP cameras; the replica holding the first is killed
   (SIGKILL); it prints how long until the stream runs on the other replica again, and the
   clips counted before the kill, in its last saved memory and after.

    python benchmarks/serve_ray.py            # about 2 minutes
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from serve_load import Cameras, free_port  # noqa: E402


def http(method: str, url: str, body: dict | None = None, timeout: float = 120):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return json.loads(reply.read() or b"null")
    except urllib.error.HTTPError as err:
        raise SystemExit(f"{method} {url}: {err.code} {err.read().decode()[:300]}") from None


def records(url: str, stream_id: str) -> list[dict]:
    with urllib.request.urlopen(f"{url}/v1/streams/{stream_id}/events?since=0&follow=false", timeout=60) as reply:
        return [json.loads(line[6:]) for line in reply.read().decode().splitlines() if line.startswith("data: ")]


def write_video(path: str, seconds: float, level) -> None:
    import av
    import numpy as np

    with av.open(path, "w", format="mpegts") as container:
        stream = container.add_stream("mpeg2video", rate=16)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(int(seconds * 16)):
            frame = np.full((48, 64, 3), level(i), np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def main() -> None:
    import ray
    from ray import serve

    from longvid.serve.ray_serve import deployments

    started = time.monotonic()
    folder = tempfile.mkdtemp(prefix="longvid-ray-")
    videos, state = os.path.join(folder, "videos"), os.path.join(folder, "state")
    os.makedirs(videos)
    write_video(os.path.join(videos, "a.ts"), 6, lambda i: (16 + 8 * i) % 240)
    write_video(os.path.join(videos, "b.ts"), 6, lambda i: 200 if (i // 8) % 2 else 40)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    options = {"model": "memvit_tiny_recall", "checkpoint": None, "capacity": 4, "state_dir": state, "save_every": 1.0,
               "threads": 1, "schemes": ["udp"], "allow_dir": videos, "max_body": 16384, "touch_every": 1.0,
               "settings": {"clip_frames": 4, "stride": 2, "size": 32, "read_timeout": 3.0, "open_timeout": 20.0}}
    os.makedirs(state)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    Router, StreamReplica = deployments(options)
    serve.run(Router.bind(StreamReplica.options(num_replicas=2, ray_actor_options={"num_cpus": 0.5}).bind()),
              name="longvid", route_prefix="/")
    print(f"# Ray Serve up with 2 replicas in {time.monotonic() - started:.0f} s", flush=True)
    try:
        names = ["a.ts", "a.ts", "b.ts", "b.ts"]
        made = [http("POST", f"{url}/v1/streams", {"source": name}) for name in names]
        for name, stream in zip(names, made):
            print(f"stream {stream['id']} ({name}) on replica pid {stream['replica']}")
        print(f"# spread: {len({s['replica'] for s in made})} replicas hold the 4 streams", flush=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(http("GET", f"{url}/v1/streams/{s['id']}")["status"] == "live" for s in made):
            time.sleep(0.5)
        clips = [[r for r in records(url, s["id"]) if "clip" in r] for s in made]

        def gap(x, y):
            pairs = [(p, q) for p, q in zip(x, y) if p["clip"] == q["clip"]]
            labels = all([t["label"] for t in p["top"]] == [t["label"] for t in q["top"]] for p, q in pairs)
            worst = max((abs(s["score"] - t["score"]) for p, q in pairs for s, t in zip(p["top"], q["top"])), default=float("nan"))
            return len(pairs), labels, worst

        for (i, j), what in (((0, 1), "A vs A"), ((2, 3), "B vs B"), ((0, 2), "A vs B")):
            n, same, worst = gap(clips[i], clips[j])
            print(f"{what}: {n} clips compared, same labels in order: {same}, largest score difference {worst:.2e}")
        for s in made:
            http("DELETE", f"{url}/v1/streams/{s['id']}")

        with Cameras(2) as cameras:
            live = [http("POST", f"{url}/v1/streams", {"source": source}) for source in cameras.sources]
            print(f"# live cameras on replica pids {[s['replica'] for s in live]}", flush=True)
            victim = live[0]
            while http("GET", f"{url}/v1/streams/{victim['id']}")["clips"] < 3:
                time.sleep(0.5)
            time.sleep(1.5)  # a periodic save
            before = http("GET", f"{url}/v1/streams/{victim['id']}")
            saved = json.load(open(os.path.join(state, f"{victim['id']}.json")))
            os.kill(victim["replica"], signal.SIGKILL)
            killed = time.monotonic()
            print(f"# killed replica pid {victim['replica']} holding stream {victim['id']} at clip count {before['clips']} "
                  f"(saved memory: {saved['clips']} clips)", flush=True)
            after = None
            while time.monotonic() - killed < 90:
                try:
                    now = http("GET", f"{url}/v1/streams/{victim['id']}", timeout=10)
                    if now["replica"] != victim["replica"] and now["clips"] > saved["clips"]:
                        after = now
                        break
                except Exception:
                    pass
                time.sleep(0.5)
            if after is None:
                print("# the stream did not resume within 90 s")
            else:
                print(f"# resumed on replica pid {after['replica']} after {time.monotonic() - killed:.1f} s: "
                      f"clips {after['clips']} (from the saved {saved['clips']}), status {after['status']}")
            other = http("GET", f"{url}/v1/streams/{live[1]['id']}")
            print(f"# the other camera: replica pid {other['replica']}, {other['clips']} clips, status {other['status']}")
    finally:
        serve.shutdown()
        ray.shutdown()
    print(f"# total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
