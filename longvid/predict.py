"""Online inference: stream videos clip by clip through a memory model.

``stream_predictions`` yields one record (a dict, JSON-ready) per clip, and per video
a closing record, so a caller can write them incrementally. Each video is one stream
with its own memory; with ``batch_streams > 1`` several videos run side by side as a
batch of independent streams, each reset when a new video enters its slot.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from longvid.answers import AskSettings, stream_answers
from longvid.errors import LongvidError
from longvid.fileio import exclusive_lock, write_atomically, write_lines_atomically
from longvid.core.stream_input import DeviceClips, default_split, model_input
from longvid.video import ClipReader, VideoError


@dataclass(frozen=True)
class StreamSettings:
    """How clips are cut from each video and what each record holds."""

    clip_frames: int = 16
    stride: int = 4
    size: int = 224  # short side resize and center crop
    topk: int = 5
    background: bool | str = "process"  # decode ahead: "process" (a forked child), "thread" (or True), False (not ahead)
    decode_threads: int | None = None  # FFmpeg decoding threads (0: FFmpeg chooses; None: the default split's)
    prefetch: int | None = None  # clips decoded ahead of the model (None: the default split's)
    channels_last: bool = False  # model input in the channels-last-3d layout (see stream_input.prepare_model)
    keep_scores: bool = False  # add each clip's full score vector (a list) to its record
    aggregate: bool = False  # add a per-video record averaging clip scores

    def __post_init__(self) -> None:
        for name, least in (("clip_frames", 1), ("stride", 1), ("size", 1), ("topk", 1), ("prefetch", 1), ("decode_threads", 0)):
            value = getattr(self, name)
            if name in ("prefetch", "decode_threads") and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise LongvidError(f"{name} must be an integer >= {least}, got {value!r}")
        if self.background not in (False, True, "thread", "process"):
            raise LongvidError(f"background must be False, True, 'thread' or 'process', got {self.background!r}")


@dataclass
class _Slot:
    """One stream of the batch: the video it plays and where it is."""

    video: str
    clips: Iterator
    seen: int = 0
    scores: list[dict[str, np.ndarray]] = field(default_factory=list)  # per clip, per head (for --aggregate)
    started: float = field(default_factory=time.perf_counter)


def reader_for(model, video: str, settings: StreamSettings) -> ClipReader:
    """The clip reader that feeds ``model`` from ``video`` (raises VideoError): uint8
    clips, normalized where the model runs (:func:`longvid.core.stream_input.model_input`)."""
    split = default_split()
    return ClipReader(
        video,
        clip_frames=settings.clip_frames,
        stride=settings.stride,
        short_side=settings.size,
        crop=settings.size,
        mean=None,
        std=None,
        dtype=torch.uint8,
        background=settings.background,
        queue_size=split.prefetch if settings.prefetch is None else settings.prefetch,
        decode_threads=split.decode_threads if settings.decode_threads is None else settings.decode_threads,
    )


def settings_for(model, **overrides) -> StreamSettings:
    """Stream settings matching a MeMViT-style model's config (clip length, crop size)."""
    config = getattr(model, "config", None)
    base = {}
    if config is not None:
        frames = getattr(config, "num_frames", 16)
        base = dict(clip_frames=frames, stride=getattr(config, "sample_stride", 3 if frames == 32 else 4), size=getattr(config, "crop_size", 224))
    base.update({k: v for k, v in overrides.items() if v is not None})
    return StreamSettings(**base)


def check_labels(model, labels: Sequence[str] | None) -> None:
    """Refuse class names whose count differs from the classes of ``model``'s config
    (checked again on the first scores for models without a config)."""
    classes = getattr(getattr(model, "config", None), "num_classes", None)
    if labels is not None and isinstance(classes, int) and len(labels) != classes:
        raise LongvidError(f"the labels name {len(labels)} classes but the model has {classes}")


def top_labels(scores: np.ndarray, k: int, labels: Sequence[str] | None) -> list[dict]:
    """The ``k`` best classes of one score vector, best first, ties to the lower index."""
    order = np.argsort(-scores, kind="stable")[:k]
    return [{"label": labels[i] if labels is not None else int(i), "score": round(float(scores[i]), 6)} for i in order]


def stream_predictions(
    model: torch.nn.Module,
    videos: str | os.PathLike | Iterable[str | os.PathLike],
    settings: StreamSettings | None = None,
    labels: Sequence[str] | None = None,
    batch_streams: int = 1,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    reader: Callable[[object, str, StreamSettings], Iterable] = reader_for,
) -> Iterator[dict]:
    """Run ``model`` online over each video; yield JSON-ready records.

    Records, in order of completion:
      ``{"video", "clip", "start", "end", "top": [{"label", "score"}...]}`` per clip
      (``"scores"`` too with ``settings.keep_scores``; scores are softmax probabilities);
      ``{"video", "aggregate": "video", "clips", "top"}`` with ``settings.aggregate``
      (mean of the clip probabilities, the MeMViT paper's one-pass testing);
      ``{"video", "status": "done", "clips", "seconds"}`` when a video is complete (with
      ``"damaged": true, "decoded_until": seconds`` when it could be decoded only in part);
      ``{"video", "status": "error", "error"}`` when a video cannot be read (the run goes on),
      or when a clip's scores are not finite: that clip's record then has ``"top": null``
      (and ``"scores": null``) and its video stops there.

    Each video is a stream with its own memory; ``batch_streams`` videos run at once as
    independent streams (a slot's memory is reset when its next video starts).
    """
    if isinstance(videos, (str, os.PathLike)):
        videos = [videos]
    if batch_streams < 1:
        raise LongvidError(f"batch_streams must be >= 1, got {batch_streams}")
    check_labels(model, labels)
    settings = settings or settings_for(model)
    if device is None:
        device = next(model.parameters()).device
    pending = iter([os.fspath(v) for v in videos])
    slots: list[_Slot | None] = [None] * batch_streams
    state = None
    model.eval()
    with torch.inference_mode():
        while True:
            records: list[dict] = []
            batch, batch_slots, fresh = [], [], []
            for index in range(batch_streams):
                clip = _next_clip(slots, index, pending, model, settings, labels, reader, records, device)
                if clip is not None:
                    batch.append(clip)
                    batch_slots.append(index)
                    fresh.append(slots[index].seen == 0)  # a new video in this slot: reset its memory
            yield from records
            if not batch:
                return
            clips = model_input([c.frames for c in batch], device, dtype, channels_last=settings.channels_last)  # (b, C, T, H, W)
            state = _state_for(model, state, batch_slots, fresh, batch_streams, device, dtype)
            logits, new_state = model(clips, _select(state, batch_slots))
            for index in batch_slots:  # CUDA: the next clips' transfers start while the model computes
                slots[index].clips.prefetch()
            state = _scatter(state, new_state, batch_slots)
            heads = _probabilities(logits)  # {head: (b, K)}
            if labels is not None and len(heads) == 1 and len(labels) != next(iter(heads.values())).shape[1]:
                raise LongvidError(f"the labels name {len(labels)} classes but the model has {next(iter(heads.values())).shape[1]}")
            for row, (index, clip) in enumerate(zip(batch_slots, batch)):
                slot = slots[index]
                scores = {name: probs[row] for name, probs in heads.items()}
                slot.seen += 1
                if not all(np.isfinite(probs).all() for probs in scores.values()):
                    yield from _not_finite(slot, clip, settings)
                    slot.clips.close()
                    slots[index] = None  # its memory holds NaN now: the slot's next video starts afresh
                    continue
                if settings.aggregate:
                    slot.scores.append(scores)
                yield _clip_record(slot.video, clip, _top(scores, settings.topk, labels),
                                   _flat(scores).tolist() if settings.keep_scores else None)


def _clip_record(video: str, clip, top, scores: list[float] | None) -> dict:
    record = {"video": video, "clip": clip.index, "start": round(clip.start, 6), "end": round(clip.end, 6), "top": top}
    if scores is not None:
        record["scores"] = scores  # full precision
    return record


def _not_finite(slot: _Slot, clip, settings: StreamSettings) -> list[dict]:
    """The records of a clip whose scores are NaN or infinite (written as null) and the
    error that ends its video."""
    record = _clip_record(slot.video, clip, None, None)
    if settings.keep_scores:
        record["scores"] = None
    reason = (f"the model's scores for clip {clip.index} are not finite (NaN or infinity: bad weights, or an overflow "
              f"in a low-precision dtype); the rest of the video was skipped")
    return [record, {"video": slot.video, "status": "error", "error": reason}]


def _next_clip(slots, index, pending, model, settings, labels, reader, records, device) -> object | None:
    """The next clip for slot ``index``, starting the next pending video there when the
    slot is empty or its video ended (its closing and error records go to ``records``).
    None when no videos are left for the slot."""
    while True:
        slot = slots[index]
        if slot is None:
            video = next(pending, None)
            if video is None:
                return None
            try:
                slots[index] = slot = _Slot(video, DeviceClips(iter(reader(model, video, settings)), device))
            except VideoError as err:
                records.append({"video": video, "status": "error", "error": err.reason})
                continue
        try:
            return next(slot.clips)
        except StopIteration:
            records.extend(_finish(slot, settings, labels))
        except VideoError as err:
            records.append({"video": slot.video, "status": "error", "error": err.reason})
        slots[index] = None


def _top(scores: dict[str, np.ndarray], k: int, labels: Sequence[str] | None):
    """Top-k of a single head as a list; of several heads as ``{head: list}`` (indices)."""
    if len(scores) == 1:
        return top_labels(next(iter(scores.values())), k, labels)
    return {name: top_labels(probs, k, None) for name, probs in scores.items()}


def _flat(scores: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate(list(scores.values()))


def _finish(slot: _Slot, settings: StreamSettings, labels: Sequence[str] | None) -> list[dict]:
    records = []
    if settings.aggregate and slot.scores:
        mean = {name: np.mean([s[name] for s in slot.scores], axis=0) for name in slot.scores[0]}
        records.append({"video": slot.video, "aggregate": "video", "clips": slot.seen, "top": _top(mean, settings.topk, labels)})
    done = {"video": slot.video, "status": "done", "clips": slot.seen, "seconds": round(time.perf_counter() - slot.started, 3)}
    damage = getattr(slot.clips, "damage", None)  # a ClipReader pass says how far a damaged video decoded
    if damage is not None:
        done.update(damaged=True, decoded_until=round(damage.decoded_until, 3))
    records.append(done)
    return records


def _probabilities(logits) -> dict[str, np.ndarray]:
    """Softmax probabilities per head, ``{head: (b, K)}`` float64 (``"logits"`` for one head).
    Per-frame outputs of the anticipation head (3-D) are left out."""
    outputs = logits if isinstance(logits, dict) else {"logits": logits}
    return {
        name: torch.softmax(value.float(), dim=-1).double().cpu().numpy()
        for name, value in outputs.items()
        if value.dim() == 2
    }


def _state_for(model, state, batch_slots, fresh, batch_streams, device, dtype):
    """The full-batch state, created on first use, with fresh streams reset."""
    if state is None:
        state = model.init_state(batch_streams, device=device, dtype=dtype)
    reset = torch.zeros(batch_streams, dtype=torch.bool, device=state.is_first.device)
    for index, is_new in zip(batch_slots, fresh):
        reset[index] = is_new
    return state.reset(reset) if bool(reset.any()) else state


def _select(state, batch_slots):
    """The state rows of the streams that have a clip this step."""
    if list(batch_slots) == list(range(state.batch_size)):
        return state
    return state.index_select(torch.tensor(batch_slots, device=state.is_first.device))


def _scatter(state, new_state, batch_slots):
    """Write the stepped streams' new memory back into the full-batch state."""
    if list(batch_slots) == list(range(state.batch_size)):
        return new_state
    return state.index_copy(torch.tensor(batch_slots, device=state.is_first.device), new_state)


# -- labels ----------------------------------------------------------------------------


def load_labels(path: str | os.PathLike) -> list[str]:
    """Class names from a text file (one per line), a CSV (``index,name`` or ``name``
    rows; a header row is skipped), or JSON (a list, or a ``{index: name}`` /
    ``{name: index}`` object)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise LongvidError(f"{path}: no such labels file")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise LongvidError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
        if isinstance(data, list):
            return [str(x) for x in data]
        if isinstance(data, dict):
            pairs = {}
            for key, value in data.items():
                if str(key).lstrip("-").isdigit():
                    pairs[int(key)] = str(value)
                elif isinstance(value, int):
                    pairs[value] = str(key)
                else:
                    raise LongvidError(f"{path}: label map entries must pair an integer index with a name, got {key!r}: {value!r}")
            return _dense(pairs, path)
        raise LongvidError(f"{path}: expected a JSON list or object of labels")
    if path.endswith(".csv"):
        rows = [row for row in csv.reader(text.splitlines()) if row and any(cell.strip() for cell in row)]
        if rows and len(rows[0]) >= 2 and not rows[0][0].strip().isdigit():
            rows = rows[1:]  # header
        if rows and all(len(r) >= 2 and r[0].strip().isdigit() for r in rows):
            return _dense({int(r[0]): r[1].strip() for r in rows}, path)
        return [r[0].strip() for r in rows]
    return [line.strip() for line in text.splitlines() if line.strip()]


def _dense(pairs: dict[int, str], path: str) -> list[str]:
    missing = sorted(set(range(len(pairs))) - set(pairs))
    if missing:
        raise LongvidError(f"{path}: label indices must be 0..{len(pairs) - 1}; missing {missing[:5]}")
    return [pairs[i] for i in range(len(pairs))]


# -- the `longvid stream` job: videos -> JSON lines file ------------------------------


def expand_videos(items: Sequence[str]) -> list[str]:
    """Video paths from paths, glob patterns, and ``.txt`` files listing paths (one a line);
    live sources (URLs, ``-``, ``/dev/videoN``) are kept as they are."""
    import glob

    from longvid.video.live import is_live_source

    videos: list[str] = []
    for item in items:
        if is_live_source(item):
            videos.append(item)
        elif item.endswith(".txt") and os.path.isfile(item):
            folder = os.path.dirname(item)
            with open(item, encoding="utf-8") as f:
                for line in f:
                    line = line.strip()
                    if line and not line.startswith("#"):
                        videos.append(line if os.path.isabs(line) else os.path.join(folder, line))
        elif any(ch in item for ch in "*?[") and not os.path.exists(item):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise LongvidError(f"{item}: no files match")
            videos.extend(matches)
        else:
            videos.append(item)
    return videos


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


def _make_scores_folder(folder: str) -> None:
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


def run_stream(
    model: torch.nn.Module,
    videos: Sequence[str],
    out: str | None = None,
    settings: StreamSettings | None = None,
    labels: Sequence[str] | None = None,
    batch_streams: int = 1,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    resume: bool = False,
    save_scores: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    ask: AskSettings | None = None,
) -> StreamSummary:
    """Stream ``videos`` through ``model`` and write JSON lines to ``out`` (None: stdout):
    a classification model's clip records, or with ``ask`` a question-answering model's
    answers (:func:`longvid.answers.stream_answers`).

    Every line is written whole and flushed as soon as its clip is done, so an
    interrupted run leaves a valid file; ``resume`` keeps the complete videos of an
    existing ``out`` and processes only the rest. The run holds a lock on ``out`` (a
    second run on it fails at once). Under ``torchrun`` each rank takes a disjoint share
    of ``videos`` (every ``world``-th), writes ``out.partR``, and rank 0 merges the parts
    into ``out`` when all ranks are done; the summary then counts every rank's videos.
    """
    import torch.distributed as dist

    joined = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if joined else (0, 1)
    if world > 1 and out is None:
        raise LongvidError("under torchrun, give --out FILE (each rank writes a part that rank 0 merges)")
    if batch_streams < 1:
        raise LongvidError(f"batch_streams must be >= 1, got {batch_streams}")
    if ask is None:
        check_labels(model, labels)
        settings = settings or settings_for(model)
    if save_scores:
        _make_scores_folder(save_scores)
        settings = replace(settings, keep_scores=True)
    share = list(videos)[rank::world]
    summary = StreamSummary(videos=len(share))
    with locked_output(out, rank, world):
        target = output_files(out, rank, world)[0] if out is not None else None
        if target is not None:
            share = _prepare_output(target, share, resume, summary)
        started = time.perf_counter()
        with _open_sink(target) as sink:
            desc = "stream" if world == 1 else f"stream[rank {rank}]"
            if ask is None:
                records = stream_predictions(model, share, settings, labels, batch_streams, device, dtype)
            else:
                records = stream_answers(model, share, ask, batch_streams, device, dtype)
            _write_records(records, sink, summary, save_scores, progress and desc, log)
        summary.seconds = time.perf_counter() - started
        if world > 1:
            _merge_parts(out, rank, world, summary)
    return summary


def _prepare_output(target: str, share: list[str], resume: bool, summary: StreamSummary) -> list[str]:
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
def _open_sink(target: str | None):
    if target is None:
        yield sys.stdout
        return
    with open(target, "a", encoding="utf-8") as sink:
        yield sink


def _write_records(records: Iterable[dict], sink, summary: StreamSummary, save_scores: str | None,
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


def _merge_parts(out: str, rank: int, world: int, summary: StreamSummary) -> None:
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


# -- models for streaming -------------------------------------------------------------

WEIGHTS_DIR = os.path.join(os.path.dirname(__file__), "weights")


def shipped_weights(preset: str) -> str | None:
    """The weights the package ships for ``preset`` (its demo task), if any."""
    path = os.path.join(WEIGHTS_DIR, f"{preset}.safetensors")
    return path if os.path.isfile(path) else None


def shipped_labels(preset: str) -> list[str] | None:
    """Class names of the package's demo weights for ``preset`` (``<preset>.labels.json``), if any."""
    path = os.path.join(WEIGHTS_DIR, f"{preset}.labels.json")
    return load_labels(path) if os.path.isfile(path) else None


DEFAULT_STREAM_PRESET = "memvit_tiny_recall"  # ships weights trained by ``longvid bench`` (recall)


def load_stream_model(preset: str | None, checkpoint: str | None = None, default_preset: str = DEFAULT_STREAM_PRESET,
                      encoder: str | None = None, llm: str | None = None):
    """(model, weights note) for streaming.

    MeMViT presets: ``checkpoint`` is a longvid safetensors file (its stored config is used
    unless ``preset`` is given) or an official MeMViT ``.pyth`` (needs the matching
    ``preset``); without one, the preset runs with the package's shipped demo weights if
    it has them, else with random weights (the note says so). Presets of the other
    families (MA-LMM, ReWind) are built through the registry with their ``encoder`` /
    ``llm`` (path or hub id; default: the preset's) and trained ``checkpoint``.
    """
    from longvid.core.checkpoints import load_checkpoint, read_metadata
    from longvid.memvit import build_model, load_model
    from longvid.registry import family_of

    if preset is not None and family_of(preset) != "memvit":
        return _load_frame_model(preset, checkpoint, encoder, llm)
    if encoder is not None or llm is not None:
        raise LongvidError("--encoder/--llm are for the MA-LMM and ReWind presets (see longvid models)")
    if checkpoint is not None:
        if not os.path.isfile(checkpoint):
            raise LongvidError(f"{checkpoint}: no such checkpoint file")
        if preset is None and checkpoint.endswith(".safetensors") and "config" in read_metadata(checkpoint):
            return load_model(checkpoint), f"weights from {checkpoint}"
        model = build_model(preset or default_preset)
        load_checkpoint(model, checkpoint)
        return model, f"weights from {checkpoint}"
    preset = preset or default_preset
    shipped = shipped_weights(preset)
    if shipped is not None:
        return load_model(shipped), f"shipped demo weights ({os.path.basename(shipped)})"
    return build_model(preset), f"RANDOM weights: longvid ships no trained weights for {preset!r}; pass --checkpoint"


def _load_frame_model(preset: str, checkpoint: str | None, encoder: str | None, llm: str | None):
    import longvid

    if checkpoint is not None and not os.path.isfile(checkpoint):
        raise LongvidError(f"{checkpoint}: no such checkpoint file")
    given = {k: v for k, v in (("encoder", encoder), ("llm", llm), ("checkpoint", checkpoint)) if v is not None}
    model = longvid.build_model(preset, **given)
    note = f"weights from {checkpoint}" if checkpoint else "RANDOM trainable weights (untrained): pass --checkpoint for real answers"
    return model, note
