import os
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest
import torch

from conftest import FPS, NUM_FRAMES, frame_index_of
from longvid.video import ClipReader, VideoDecodeWarning, VideoError, probe, read_clips

RAW = dict(short_side=None, crop=None, mean=None, std=None)  # frames scaled to [0, 1], nothing else
SAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "malmm_example.mp4")


def sampled_indices(clip) -> list[int]:
    return [frame_index_of(clip.frames[:, i].numpy() * 255) for i in range(clip.frames.shape[1])]


def test_probe_constant_frame_rate(videos):
    info = probe(videos["cfr"])
    assert (info.num_frames, info.width, info.height, info.codec) == (NUM_FRAMES, 64, 48, "h264")
    assert info.fps == pytest.approx(FPS)
    assert info.duration == pytest.approx(NUM_FRAMES / FPS, abs=1e-3)
    assert not info.has_audio
    assert probe(videos["cfr"], count_frames=True).num_frames == NUM_FRAMES


def test_stride_sampling_frames_times_and_boundaries(videos):
    clips = list(ClipReader(videos["cfr"], clip_frames=4, stride=3, **RAW))
    span = 4 * 3
    assert len(clips) == -(-NUM_FRAMES // span)  # 13, the last one padded
    for k, clip in enumerate(clips):
        first = k * span
        real = [first + 3 * i for i in range(4) if first + 3 * i < NUM_FRAMES]
        assert clip.index == k
        assert clip.frames.shape == (3, 4, 48, 64)
        assert clip.num_valid == len(real)
        padded = real + [real[-1]] * (4 - len(real))
        assert sampled_indices(clip) == [i % 60 for i in padded]
        np.testing.assert_allclose(clip.timestamps.numpy(), np.array(padded) / FPS, atol=1e-6)
        assert clip.start == pytest.approx(first / FPS)
        assert clip.end == pytest.approx(min(first + span, NUM_FRAMES) / FPS)
    assert clips[-1].num_valid == 2  # frames 144 and 147


@pytest.mark.parametrize("clip_frames,stride", [(16, 4), (4, 3), (5, 1), (8, 2), (1, 7)])
@pytest.mark.parametrize("tail", ["pad", "drop"])
def test_num_clips_matches_reader(videos, clip_frames, stride, tail):
    reader = ClipReader(videos["cfr"], clip_frames=clip_frames, stride=stride, tail=tail, **RAW)
    clips = list(reader)
    assert len(clips) == reader.info.num_clips(clip_frames, stride, tail=tail)
    if tail == "drop":
        assert all(c.num_valid == clip_frames for c in clips)


def test_fps_sampling_takes_the_frame_on_screen(videos):
    clips = list(ClipReader(videos["cfr"], fps=2, clip_frames=3, **RAW))
    times = np.arange(0, NUM_FRAMES / FPS, 0.5)  # 10 samples
    assert len(clips) == 4 and clips[-1].num_valid == 1
    got = np.concatenate([c.timestamps.numpy()[: c.num_valid] for c in clips])
    np.testing.assert_allclose(got, times, atol=1e-9)
    indices = sum((sampled_indices(c)[: c.num_valid] for c in clips), [])
    assert indices == [int(t * FPS) % 60 for t in times]
    assert clips[1].start == pytest.approx(1.5) and clips[1].end == pytest.approx(3.0)
    assert clips[-1].end == pytest.approx(NUM_FRAMES / FPS)


def test_variable_frame_rate_gives_true_times(videos):
    true_times = videos["vfr_times"]
    (clip,) = ClipReader(videos["vfr"], clip_frames=len(true_times), stride=1, **RAW)
    np.testing.assert_allclose(clip.timestamps.numpy(), true_times, atol=1e-3)  # ms-rounded pts
    assert sampled_indices(clip) == [i % 60 for i in range(len(true_times))]
    # fps sampling on a VFR file: the frame on screen is the last one shown at or before t.
    sample_times = np.arange(0, true_times[-1], 0.25)
    clips = list(ClipReader(videos["vfr"], fps=4, clip_frames=4, **RAW))
    shown = np.searchsorted(clip.timestamps.numpy(), sample_times + 1e-9, side="right") - 1
    indices = sum((sampled_indices(c)[: c.num_valid] for c in clips), [])
    assert indices[: len(shown)] == [int(i) % 60 for i in shown]


def test_odd_sizes_resize_and_crop(videos):
    (full,) = ClipReader(videos["odd"], clip_frames=20, stride=1, **RAW)
    assert full.frames.shape == (3, 20, 31, 47)
    (resized,) = ClipReader(videos["odd"], clip_frames=20, stride=1, short_side=224, crop=None)
    assert resized.frames.shape == (3, 20, 224, 340)
    (cropped,) = ClipReader(videos["odd"], clip_frames=20, stride=1)
    assert cropped.frames.shape == (3, 20, 224, 224)
    torch.testing.assert_close(cropped.frames, resized.frames[..., 58:282])


def test_seek_and_end(videos):
    clips = list(ClipReader(videos["cfr"], clip_frames=5, stride=1, start=2.0, end=3.0, **RAW))
    assert len(clips) == 6 and all(c.num_valid == 5 for c in clips)
    times = torch.cat([c.timestamps for c in clips]).numpy()
    np.testing.assert_allclose(times, np.arange(60, 90) / FPS, atol=1e-6)
    assert sum((sampled_indices(c) for c in clips), []) == [i % 60 for i in range(60, 90)]
    assert clips[0].start == pytest.approx(2.0) and clips[-1].end == pytest.approx(3.0)
    with pytest.raises(VideoError, match="past the end"):
        ClipReader(videos["cfr"], start=60.0)


def test_background_decoding_matches_foreground(videos):
    kwargs = dict(clip_frames=4, stride=2, short_side=32, crop=32)
    foreground = list(read_clips(videos["cfr"], **kwargs))
    background = list(read_clips(videos["cfr"], background=True, queue_size=1, **kwargs))
    assert len(foreground) == len(background)
    for a, b in zip(foreground, background):
        assert torch.equal(a.frames, b.frames) and torch.equal(a.timestamps, b.timestamps)
        assert (a.index, a.start, a.end, a.num_valid) == (b.index, b.start, b.end, b.num_valid)


def test_background_thread_stops_when_the_consumer_stops(videos):
    before = threading.active_count()
    clips = iter(ClipReader(videos["cfr"], clip_frames=2, stride=1, background=True, queue_size=1, **RAW))
    next(clips)
    clips.close()
    assert threading.active_count() == before


@pytest.mark.parametrize(
    "name,reason",
    [
        ("missing", "no such file"),
        ("folder", "is a directory"),
        ("text", "not a readable video file"),
        ("audio", "audio-only file"),
        ("garbage", "no decodable video frames"),
    ],
)
def test_bad_inputs_raise_video_error(videos, name, reason):
    with pytest.raises(VideoError) as err:
        list(ClipReader(videos[name]))
    message = str(err.value)
    assert reason in message and videos[name] in message and "\n" not in message


def test_truncated_file_yields_what_it_can_then_warns_once(videos):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clips = list(ClipReader(videos["truncated"], clip_frames=8, stride=2, **RAW))
    damage = [w for w in caught if issubclass(w.category, VideoDecodeWarning)]
    assert len(damage) == 1
    assert "decoded up to" in str(damage[0].message) and "of 10.00 s" in str(damage[0].message)
    full_count = -(-300 // 16)
    assert 3 <= len(clips) < full_count
    assert [c.index for c in clips] == list(range(len(clips)))


def test_clean_file_does_not_warn(videos):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        list(ClipReader(videos["cfr"], clip_frames=8, stride=2, **RAW))


def test_uint8_clips(videos):
    raw = list(ClipReader(videos["cfr"], clip_frames=4, stride=3, short_side=None, crop=None, mean=None, std=None, dtype=torch.uint8))
    scaled = list(ClipReader(videos["cfr"], clip_frames=4, stride=3, **RAW))
    assert raw[0].frames.dtype == torch.uint8 and len(raw) == len(scaled)
    for a, b in zip(raw, scaled):
        torch.testing.assert_close(a.frames.float() / 255, b.frames)


def test_invalid_arguments(videos):
    for kwargs in [dict(clip_frames=0), dict(stride=0), dict(fps=0), dict(tail="wrap"), dict(start=2, end=1), dict(dtype=torch.uint8)]:
        with pytest.raises(ValueError):
            ClipReader(videos["cfr"], **kwargs)


@pytest.mark.skipif(not os.path.exists(SAMPLE), reason="shared sample video not present")
def test_real_sample_video():
    info = probe(SAMPLE)
    assert (info.num_frames, info.width, info.height, info.fps) == (1687, 640, 360, 24.0)
    assert info.has_audio and info.num_clips() == 27  # ceil(1687 / 64)
    clips = list(ClipReader(SAMPLE, end=6.0))  # default MeMViT 16x4 input
    assert [tuple(c.frames.shape) for c in clips] == [(3, 16, 224, 224)] * 3
    assert clips[1].start == pytest.approx(64 / 24) and clips[0].end == pytest.approx(64 / 24)
    assert clips[-1].end == pytest.approx(6.0)
    assert -3 < clips[0].frames.mean() < 3


MEMORY_SCRIPT = """
import resource, sys
from longvid.video import ClipReader
count = sum(1 for _ in ClipReader(sys.argv[1], short_side=64, crop=64, background=True))
print(count, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_memory_stays_bounded_for_long_videos(tmp_path):
    from longvid.bench.synth import write_demo_video

    peaks = {}
    for seconds in (10, 200):
        path = tmp_path / f"{seconds}s.mp4"
        write_demo_video(path, seconds=seconds, width=64, height=48)
        out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(path)], capture_output=True, text=True, check=True)
        count, peak_kib = map(int, out.stdout.split())
        assert count == -(-seconds * 30 // 64)
        peaks[seconds] = peak_kib
    # 20x longer video: peak RSS within 10% (+ a few MiB of allocator noise).
    assert peaks[200] <= 1.10 * peaks[10] + 8 * 1024, peaks
