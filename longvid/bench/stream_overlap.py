"""Decode/compute overlap of ``longvid stream``: decode-only, model-only and pipelined
walls over the same clips, interleaved, best of a few repeats.

* decode-only: iterate the stream's clip reader (decoding ahead, as the stream does);
* model-only: the stream (:func:`longvid.predict.stream_predictions`, records written as
  JSON lines) over clips decoded beforehand;
* pipelined: the same stream decoding as it goes.

The pipelined wall is at best max(decode-only, model-only); ``ratio`` says how close.
CPU seconds count this process and its ended children (the decoding processes).
"""

from __future__ import annotations

import json
import os
import tempfile
import time

import torch

from longvid.bench.roofline import sync
from longvid.predict import StreamSettings, reader_for, stream_predictions

MODES = ("decode", "model", "pipelined")


def cpu_seconds() -> float:
    """CPU time of this process and of its ended children."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def _records(path: str) -> list[dict]:
    """A run's records without their wall-clock fields."""
    with open(path, encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    for record in records:
        record.pop("seconds", None)
    return records


def measure_overlap(model: torch.nn.Module, video: str, settings: StreamSettings, repeats: int = 3,
                    device: torch.device | str | None = None) -> dict:
    """``{"modes": {mode: {"wall", "cpu", "clips"}}, "ratio", "identical"}``: the best wall
    and CPU seconds of each mode over ``repeats`` rounds (the order rotates each round, so
    a burst of other load hits every mode), pipelined / max(decode, model), and whether
    model-only and pipelined wrote the same records."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    decoded = list(reader_for(model, video, settings))  # for model-only

    def consume(records, path: str) -> int:
        clips = 0
        with open(path, "w", encoding="utf-8") as sink:
            for record in records:
                sink.write(json.dumps(record) + "\n")
                clips += "clip" in record
        sync(device)
        return clips

    def run(mode: str, folder: str) -> int:
        if mode == "decode":
            return sum(1 for _ in reader_for(model, video, settings))
        reader = (lambda *_: iter(decoded)) if mode == "model" else reader_for
        return consume(stream_predictions(model, [video], settings, device=device, reader=reader), os.path.join(folder, f"{mode}.jsonl"))

    best = {mode: {"wall": float("inf"), "cpu": float("inf"), "clips": 0} for mode in MODES}
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(repeats):
            for mode in MODES[repeat % 3:] + MODES[:repeat % 3]:
                wall, cpu = time.perf_counter(), cpu_seconds()
                clips = run(mode, folder)
                wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
                best[mode] = {"wall": min(best[mode]["wall"], wall), "cpu": min(best[mode]["cpu"], cpu), "clips": clips}
        identical = _records(os.path.join(folder, "model.jsonl")) == _records(os.path.join(folder, "pipelined.jsonl"))
    bound = max(best["decode"]["wall"], best["model"]["wall"])
    return {"modes": best, "ratio": best["pipelined"]["wall"] / bound, "identical": identical}


def describe(result: dict) -> str:
    """One line: the three walls and the ratio."""
    modes = result["modes"]
    return (f"{modes['pipelined']['clips']} clips: decode-only {modes['decode']['wall']:.2f} s, model-only {modes['model']['wall']:.2f} s, "
            f"pipelined {modes['pipelined']['wall']:.2f} s = {result['ratio']:.2f} x max(decode, model); "
            f"outputs {'identical' if result['identical'] else 'DIFFER'}")
