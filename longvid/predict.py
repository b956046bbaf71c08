"""Online inference: stream videos clip by clip through a memory model.

``stream_predictions`` yields one record (a dict, JSON-ready) per clip, and per video
a closing record, so a caller can write them incrementally. Each video is one stream
with its own memory; with ``batch_streams > 1`` several videos run side by side as a
batch of independent streams, each reset when a new video enters its slot.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from longvid.answers import AskSettings, stream_answers
from longvid.data.labels import check_labels, top_labels
from longvid.errors import LongvidError
from longvid.core.stream_input import DeviceClips, default_split, model_input
from longvid.outputs import StreamSummary, locked_output, make_scores_folder, merge_parts, open_sink, output_files, prepare_output, write_records
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
        make_scores_folder(save_scores)
        settings = replace(settings, keep_scores=True)
    share = list(videos)[rank::world]
    summary = StreamSummary(videos=len(share))
    with locked_output(out, rank, world):
        target = output_files(out, rank, world)[0] if out is not None else None
        if target is not None:
            share = prepare_output(target, share, resume, summary)
        started = time.perf_counter()
        with open_sink(target) as sink:
            desc = "stream" if world == 1 else f"stream[rank {rank}]"
            if ask is None:
                records = stream_predictions(model, share, settings, labels, batch_streams, device, dtype)
            else:
                records = stream_answers(model, share, ask, batch_streams, device, dtype)
            write_records(records, sink, summary, save_scores, progress and desc, log)
        summary.seconds = time.perf_counter() - started
        if world > 1:
            merge_parts(out, rank, world, summary)
    return summary
