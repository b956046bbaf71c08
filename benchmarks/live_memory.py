"""Constant memory of `longvid stream` on live sources: RSS every 10 s while it reads live
UDP cameras (PyAV encoders in this process push real-time 16 fps MPEG-TS to 127.0.0.1).
Short clips (memvit_tiny_recall, 4 frames each) make many records per second; RSS rises
while the model's memory and each source's 1.5 MB receive FIFO fill, then stays flat.

    python benchmarks/live_memory.py                 # 4 cameras, 240 s
    python benchmarks/live_memory.py --cameras 1 --seconds 60
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from serve_load import Cameras, longvid_script, rss_mb  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=240.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, Cameras(args.cameras) as cameras:
        out = os.path.join(folder, "live.jsonl")
        process = subprocess.Popen([longvid_script(), "stream", *cameras.sources, "--tau", "1", "--threads", "1", "--quiet",
                                    "--out", out])
        started = time.monotonic()
        try:
            while time.monotonic() - started < args.seconds:
                time.sleep(10)
                records = sum(1 for _ in open(out)) if os.path.exists(out) else 0
                print(f"{time.monotonic() - started:5.0f} s  rss {rss_mb(process.pid):.1f} MB  records {records}", flush=True)
        finally:
            process.terminate()
            process.wait(timeout=60)


if __name__ == "__main__":
    main()
