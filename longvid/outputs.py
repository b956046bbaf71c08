"""The output files of ``longvid stream``: JSON lines written whole and flushed record by
record, resumable (:func:`read_records`, :func:`completed_videos`), locked against a second
run (:func:`locked_output`), one part per rank under ``torchrun`` merged by rank 0, and
per-video score files (``.npy``) in a scores folder."""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from longvid.errors import LongvidError
from longvid.fileio import exclusive_lock, write_atomically, write_lines_atomically


def read_records(path: str) -> list[dict]:
    """The complete records of an output file (a cut-off last line is ignored); a line
    that is not a record is an error naming ``path:line``."""
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.endswith("\n"):
                break  # written when the run was killed
            records.append(_parse_record(line, f"{path}:{number}"))
    return records


def _parse_record(line: str, where: str) -> dict:
    try:
        record = json.loads(line, parse_constant=_refuse_constant)
    except json.JSONDecodeError as err:
        raise LongvidError(f"{where}: not a longvid stream output (bad JSON: {err.msg})") from None
    kinds = ("clip", "status", "aggregate", "answer", "dropped")
    if not (isinstance(record, dict) and isinstance(record.get("video"), str) and any(k in record for k in kinds)):
        raise LongvidError(f"{where}: not a longvid stream record (want an object with \"video\" and one of "
                           f"{', '.join(kinds)}): {line.strip()[:80]}")
    return record


def _refuse_constant(name: str):
    raise json.JSONDecodeError(f"{name} is not JSON", name, 0)


def completed_videos(records: Iterable[dict]) -> set[str]:
    return {r["video"] for r in records if r.get("status") == "done"}


def make_scores_folder(folder: str) -> None:
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise LongvidError(f"{folder}: is a file; the scores go to a folder (one .npy per video)")
    os.makedirs(folder, exist_ok=True)


def _save_scores(folder: str, video: str, scores: list[list[float]], used: set[str]) -> str:
    """Write one video's (clips, K) probabilities as .npy, atomically; returns the path."""
    stem = os.path.splitext(os.path.basename(video))[0]
    name, n = stem, 1
    while name in used:
        n += 1
        name = f"{stem}-{n}"
    used.add(name)
    path = os.path.join(folder, f"{name}.npy")
    array = np.asarray(scores, dtype=np.float32).reshape(len(scores), -1)
    write_atomically(path, lambda tmp: np.save(tmp, array), suffix=".npy")
    return path


@dataclass
class StreamSummary:
    videos: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0
    clips: int = 0
    answers: int = 0
    seconds: float = 0.0


def output_files(out: str | None, rank: int = 0, world: int = 1) -> list[str]:
    """The files a stream run (rank ``rank`` of ``world``) writes: ``out``, or its part
    ``out.partR`` under torchrun, and ``out`` too for rank 0, which merges the parts."""
    if out is None:
        return []
    if world == 1:
        return [out]
    return [f"{out}.part{rank}"] + ([out] if rank == 0 else [])


@contextmanager
def locked_output(out: str | None, rank: int = 0, world: int = 1) -> Iterator[None]:
    """Hold exclusive locks on :func:`output_files` (a second run given the same ``out``
    fails with :class:`longvid.fileio.FileLockedError` instead of losing one run's results)."""
    with ExitStack() as stack:
        for path in output_files(out, rank, world):
            stack.enter_context(exclusive_lock(path))
        yield


def prepare_output(target: str, share: list[str], resume: bool, summary: StreamSummary) -> list[str]:
    """Start ``target`` afresh, or with ``resume`` keep its complete videos' records;
    returns the videos still to do."""
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    if not (resume and os.path.exists(target)):
        write_lines_atomically(target, [])
        return share
    kept = read_records(target)
    done = completed_videos(kept)
    write_lines_atomically(target, (_json_line(r) for r in kept if r["video"] in done))
    summary.skipped = sum(1 for v in share if v in done)
    return [v for v in share if v not in done]


@contextmanager
def open_sink(target: str | None):
    if target is None:
        yield sys.stdout
        return
    with open(target, "a", encoding="utf-8") as sink:
        yield sink


def write_records(records: Iterable[dict], sink, summary: StreamSummary, save_scores: str | None,
                   progress: str | bool, log: Callable[[str], None] | None) -> None:
    """Write each record as one flushed JSON line, keeping count in ``summary``; clip
    scores go to ``save_scores`` .npy files instead of the lines. ``progress``: the
    progress reporter's name, or False for none."""
    bar = _progress(summary.videos - summary.skipped, progress)
    started = time.perf_counter()
    used_names: set[str] = set()
    scores_by_video: dict[str, list[list[float]]] = {}
    try:
        for record in records:
            video, status = record["video"], record.get("status")
            if save_scores and "scores" in record:  # scores go to the .npy file, not the JSON
                scores_by_video.setdefault(video, []).append(record.pop("scores"))
            summary.clips += "clip" in record
            summary.answers += "answer" in record
            if status == "done" and save_scores:
                record["scores_file"] = _save_scores(save_scores, video, scores_by_video.pop(video, []), used_names)
            sink.write(_json_line(record))
            sink.flush()
            if status in ("done", "error"):
                scores_by_video.pop(video, None)
                summary.done += status == "done"
                summary.failed += status == "error"
                if status == "error" and log:
                    log(f"{video}: {record['error']}")
                _advance(bar, summary, started)
    finally:
        if bar is not None:
            bar.close()


def _json_line(record: dict) -> str:
    """One record as a JSON line; NaN and infinity (not JSON) are refused."""
    try:
        return json.dumps(record, allow_nan=False) + "\n"
    except ValueError:
        raise LongvidError(f"{record.get('video')}: a record holds NaN or infinity, which JSON cannot store") from None


def merge_parts(out: str, rank: int, world: int, summary: StreamSummary) -> None:
    """Add every rank's counts to ``summary``; rank 0 joins the parts into ``out``."""
    from longvid.engine.distributed import all_reduce, barrier

    names = ("videos", "done", "failed", "skipped", "clips", "answers")
    totals = all_reduce(torch.tensor([getattr(summary, name) for name in names]))
    for name, total in zip(names, totals):
        setattr(summary, name, int(total))
    if rank == 0:
        parts = [f"{out}.part{r}" for r in range(world)]
        write_lines_atomically(out, _lines_of(parts))
        for part in parts:
            os.remove(part)
    barrier()


def _lines_of(paths: Sequence[str]) -> Iterator[str]:
    for path in paths:
        with open(path, encoding="utf-8") as f:
            yield from f


def _progress(total: int, desc: str | bool):
    from longvid.progress import progress

    return progress(total, desc=desc or "", unit="video", enabled=bool(desc))


def _advance(bar, summary: StreamSummary, started: float) -> None:
    if bar is None:
        return
    count, unit = (summary.answers, "answers") if summary.answers and not summary.clips else (summary.clips, "clips")
    rate = count / max(time.perf_counter() - started, 1e-9)
    bar.set_postfix_str(f"{rate:.2f} {unit}/s, {summary.failed} failed")
    bar.update(1)
