import os
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest
import torch

import av
import video_files
from conftest import FPS, NUM_FRAMES, frame_index_of, gray_frames
from longvid.video import ClipReader, VideoDecodeWarning, VideoError, probe, read_clips, write_video
from longvid.video.transforms import KINETICS_MEAN, KINETICS_STD, to_model_input

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


@pytest.mark.skipif(not os.path.exists(SAMPLE), reason="shared sample video not present")
def test_real_sample_video_copies(tmp_path):
    """``ffmpeg -i sample.mp4 -c copy -f mpegts m.ts`` and ``ffmpeg -ss 10.3 -i sample.mp4 -t 20 -c copy c.mp4``."""
    ts, cut = str(tmp_path / "m.ts"), str(tmp_path / "c.mp4")
    video_files.copy_video(SAMPLE, ts, shift=1.4, format="mpegts")
    video_files.copy_video(SAMPLE, cut, cut=10.3)
    kwargs = dict(clip_frames=4, stride=1, start=2.0, end=3.0, **UINT8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from_ts, from_mp4 = list(ClipReader(ts, **kwargs)), list(ClipReader(SAMPLE, **kwargs))
        cut_clips = list(ClipReader(cut, clip_frames=64, stride=1, short_side=32, crop=32))
    assert from_ts[0].start == pytest.approx(2.0) and len(from_ts) == len(from_mp4) == 6
    np.testing.assert_array_equal(frames_of(from_ts), frames_of(from_mp4))
    assert probe(ts).duration == pytest.approx(probe(SAMPLE).duration, abs=0.05)
    info = probe(cut)
    assert info.num_frames == sum(c.num_valid for c in cut_clips) and len(cut_clips) == info.num_clips(64, 1)


# Peak RSS from /proc: getrusage's ru_maxrss in a child includes the parent's RSS at the fork.
MEMORY_SCRIPT = """
import sys
from longvid.video import ClipReader
count = sum(1 for _ in ClipReader(sys.argv[1], short_side=64, crop=64, background=True))
with open("/proc/self/status") as f:
    print(count, next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc")
def test_memory_stays_bounded_for_long_videos(tmp_path):
    from longvid.data.synth import write_demo_video

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


# -- videos as users bring them ------------------------------------------------------------

UINT8 = dict(short_side=None, crop=None, mean=None, std=None, dtype=torch.uint8)


def frames_of(clips) -> np.ndarray:
    """The real frames of uint8 clips, ``(N, H, W, 3)``."""
    return torch.cat([c.frames[:, : c.num_valid] for c in clips], dim=1).permute(1, 2, 3, 0).numpy()


def times_of(clips) -> np.ndarray:
    return torch.cat([c.timestamps[: c.num_valid] for c in clips]).numpy()


@pytest.fixture(scope="module")
def files(tmp_path_factory, videos):
    """Source videos with a keyframe every second (30 frames) or every 3 s, and copies."""
    folder = tmp_path_factory.mktemp("user-videos")
    paths = {}
    for name, options in [("gop30", {"g": "30"}), ("gop90", {"g": "90"}), ("bframes", {"g": "60", "bf": "3", "preset": "medium"})]:
        paths[name] = str(folder / f"{name}.mp4")
        write_video(paths[name], gray_frames(300), fps=FPS, options={"preset": "ultrafast", "crf": "18", **options})
    paths["ts"] = str(folder / "shifted.ts")  # an MPEG-TS clock that starts at 1.48 s
    video_files.copy_video(paths["gop90"], paths["ts"], shift=1.48, format="mpegts")
    paths["bframes-ts"] = str(folder / "bframes.ts")  # MPEG-TS seeks by decoding times, before presentation times
    video_files.copy_video(paths["bframes"], paths["bframes-ts"], shift=1.4, format="mpegts")
    paths["mkv"] = str(folder / "copy.mkv")
    video_files.copy_video(paths["gop90"], paths["mkv"])
    paths["cut"] = str(folder / "cut.mp4")  # ffmpeg -ss 2.5 -i gop30.mp4 -c copy cut.mp4
    video_files.copy_video(paths["gop30"], paths["cut"], cut=2.5)
    paths["zeroed"] = str(folder / "zeroed.mp4")
    video_files.zero_packets(videos["cfr"], paths["zeroed"], (20, 40))
    return paths


@pytest.mark.parametrize("degrees,hflip", [(-90, False), (90, False), (180, False), (0, True), (90, True)])
def test_rotated_videos_are_read_as_displayed(tmp_path, degrees, hflip):
    path = str(tmp_path / "phone.mp4")
    coded = video_files.write_rotated(path, degrees, hflip)
    shown = [video_files.as_displayed(frame, degrees, hflip) for frame in coded]  # (H, W, 3) as a player shows them
    clips = list(ClipReader(path, clip_frames=len(coded), stride=1, **UINT8))
    np.testing.assert_array_equal(frames_of(clips), np.stack(shown))
    info = probe(path)
    assert (info.height, info.width) == shown[0].shape[:2]
    if not hflip:
        assert info.rotation == degrees
    # Resizing and cropping work on the upright frame.
    (resized,) = ClipReader(path, clip_frames=len(coded), stride=1, short_side=20, crop=16)
    expected = to_model_input(torch.from_numpy(np.stack(shown)), 20, 16)
    assert torch.equal(resized.frames, expected)


def test_phone_video_filmed_upright_is_portrait(tmp_path):
    path = str(tmp_path / "portrait.mp4")
    video_files.write_rotated(path, -90)  # coded landscape; shown turned clockwise, as phones store portrait video
    (clip,) = ClipReader(path, clip_frames=6, stride=1, **UINT8)
    first = clip.frames[:, 0].permute(1, 2, 0).numpy()  # (H, W, 3)
    assert first.shape == (64, 48, 3)
    bright = np.argwhere(first.mean(axis=2) > 200)  # the coded top-left block is now top-right
    assert bright[:, 0].max() < 32 and bright[:, 1].min() > 24


@pytest.mark.parametrize("source,container", [("gop90", "gop90"), ("gop90", "mkv"), ("gop90", "ts"), ("bframes", "bframes-ts")])
@pytest.mark.parametrize("start", [0.5, 2.0, 4.5, 9.5])
def test_seeking_is_exact_in_every_container(files, source, container, start):
    reference = video_files.decoded_frames(files[source])  # frame i is at i / 30 s
    first = int(round(start * FPS))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no damage warning
        clips = list(ClipReader(files[container], clip_frames=4, stride=1, start=start, end=start + 0.5, **UINT8))
    np.testing.assert_array_equal(frames_of(clips), np.stack(reference[first : first + 15]))
    np.testing.assert_allclose(times_of(clips), np.arange(first, first + 15) / FPS, atol=1e-3)  # Matroska: ms
    assert clips[0].start == pytest.approx(start, abs=1e-3)


def test_times_are_seconds_from_the_video_start(files):
    """An MPEG-TS clock starts at 1.48 s here: clip times, bounds and warnings use the video's own clock."""
    info = probe(files["ts"])
    assert info.duration == pytest.approx(10.0, abs=1e-3) and info.num_frames == 300
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clips = list(ClipReader(files["ts"], clip_frames=16, stride=1, **UINT8))
    assert clips[0].start == 0.0 and clips[-1].end == pytest.approx(10.0, abs=1e-3)
    np.testing.assert_allclose(times_of(clips), np.arange(300) / FPS, atol=1e-6)
    assert len(clips) == info.num_clips(16, 1)
    late = list(ClipReader(files["ts"], clip_frames=16, stride=1, start=9.5, **UINT8))
    assert late[0].timestamps[0].item() == pytest.approx(285 / FPS) and late[-1].num_valid == 15
    with pytest.raises(VideoError, match=r"start 10.5 s is past the end of the video \(10.00 s\)"):
        ClipReader(files["ts"], start=10.5)


def test_stream_copied_cut_is_not_damage(files):
    """Packets before the cut are discarded by the container (edit list), not lost."""
    original = video_files.decoded_frames(files["gop30"])
    info = probe(files["cut"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clips = list(ClipReader(files["cut"], clip_frames=16, stride=1, **UINT8))
    frames = frames_of(clips)
    assert info.num_frames == len(frames) == 300 - 75 == probe(files["cut"], count_frames=True).num_frames
    assert len(clips) == info.num_clips(16, 1) == 15
    np.testing.assert_array_equal(frames, np.stack(original[75:]))  # the first frame is the one at 2.5 s
    np.testing.assert_allclose(times_of(clips), np.arange(225) / FPS, atol=1e-6)
    assert info.duration == pytest.approx(7.5, abs=1e-3)


def test_count_and_reader_agree_on_a_damaged_file(files):
    reference = video_files.naive_decode(files["zeroed"])  # plain PyAV, skipping the rejected packets
    assert 40 < len(reference) < NUM_FRAMES
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reader = ClipReader(files["zeroed"], clip_frames=8, stride=1, **UINT8)
        clips = list(reader)
    assert probe(files["zeroed"], count_frames=True).num_frames == len(frames_of(clips)) == len(reference)
    np.testing.assert_allclose(times_of(clips), [t for t, _ in reference], atol=1e-6)
    assert [issubclass(w.category, VideoDecodeWarning) for w in caught] == [True]
    assert reader.damage is not None and not reader.damage.stopped_early


def test_codec_is_named_not_its_decoder(tmp_path):
    if "libsvtav1" not in av.codecs_available:
        pytest.skip("no AV1 encoder in this PyAV build")
    path = str(tmp_path / "clip.mkv")
    write_video(path, gray_frames(4), fps=FPS, codec="libsvtav1", options={"preset": "12"})
    assert probe(path).codec == "av1"  # FFmpeg decodes it with libdav1d


def test_variable_frame_rate_last_clip_ends_at_the_stream_end(videos):
    with av.open(videos["vfr"]) as container:
        stream = container.streams.video[0]
        stream_end = float(stream.duration * stream.time_base)
    clips = list(ClipReader(videos["vfr"], clip_frames=16, stride=1, **RAW))
    assert clips[-1].end == pytest.approx(stream_end, abs=1e-9)
    assert clips[-1].end > clips[-1].timestamps[-1].item()
    assert probe(videos["vfr"]).duration == pytest.approx(stream_end)


def test_clips_match_a_naive_decode_resize_crop_normalize(videos):
    """Frames are resized one at a time as they are decoded: the same pixels as the whole clip at once."""
    reference = torch.from_numpy(np.stack(video_files.decoded_frames(videos["odd"])))  # (20, 31, 47, 3)
    for kwargs in [dict(short_side=40, crop=(36, 24)), dict(short_side=224, crop=None, mean=None, std=None, dtype=torch.uint8)]:
        (clip,) = ClipReader(videos["odd"], clip_frames=20, stride=1, **kwargs)
        options = {"mean": KINETICS_MEAN, "std": KINETICS_STD, **kwargs}
        assert torch.equal(clip.frames, to_model_input(reference, **options))


def test_damage_says_where_decoding_stopped(videos):
    reader = ClipReader(videos["truncated"], clip_frames=8, stride=2, **RAW)
    with pytest.warns(VideoDecodeWarning):
        stream = iter(reader)
        clips = list(stream)
    last = clips[-1].timestamps[clips[-1].num_valid - 1].item()
    assert stream.damage == reader.damage and stream.damage.stopped_early
    assert stream.damage.decoded_until == pytest.approx(last + 1 / FPS, abs=1 / FPS)
    clean = iter(ClipReader(videos["cfr"], clip_frames=8, stride=2, **RAW))
    list(clean)
    assert clean.damage is None


LARGE_FRAMES_SCRIPT = """
import sys, torch
from longvid.video import ClipReader
def peak_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
reader = ClipReader(sys.argv[1], clip_frames=64, stride=1, short_side=32, crop=32, mean=None, std=None, dtype=torch.uint8)
before = peak_kib()
count = len(list(reader))
print(count, peak_kib() - before)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc")
def test_large_frames_are_resized_as_they_are_decoded(tmp_path):
    """A T=64 clip of 1080p frames must not hold 64 full-size frames (~400 MB)."""
    path = str(tmp_path / "hd.mp4")
    write_video(path, gray_frames(10, height=1080, width=1920), fps=FPS)
    out = subprocess.run([sys.executable, "-c", LARGE_FRAMES_SCRIPT, path], capture_output=True, text=True, check=True)
    count, growth_kib = map(int, out.stdout.split())
    assert count == 1 and growth_kib < 150 * 1024, growth_kib
