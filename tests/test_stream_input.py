"""How clips reach the model: uint8 clips normalized where the model runs (bitwise the
reader's float input), the decoder/prefetch split (outputs unchanged), the default split,
the CUDA prefetch wrapper, and the model options (channels-last, compile with fallback)."""

import json

import pytest
import torch

import longvid
from longvid.data.synth import write_demo_video
from longvid.predict import StreamSettings, stream_predictions
from longvid.core.stream_input import (SMALL_MODEL_WORK, DeviceClips, ThreadSplit, apply_split, available_cores, default_split, model_input,
                                  model_work, prepare_model)
from longvid.video import ClipReader

torch.set_num_threads(1)  # tiny models: threads only contend on a shared machine (and change the last bits)

SETTINGS = StreamSettings(clip_frames=16, stride=2, size=64, topk=3, keep_scores=True)


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("scene") / "scene.mp4")
    write_demo_video(path, seconds=4.5, width=96, height=72)  # 3 full clips and a padded one
    return path


def float_reader(model, video, settings):
    """Today's clips before this change: normalized float pixels, decoded as asked."""
    return ClipReader(video, clip_frames=settings.clip_frames, stride=settings.stride, short_side=settings.size, crop=settings.size)


def test_uint8_clips_normalized_later_are_bitwise_the_float_reader_input(scene):
    floats = list(float_reader(None, scene, SETTINGS))
    raw = list(ClipReader(scene, clip_frames=16, stride=2, short_side=64, crop=64, mean=None, std=None, dtype=torch.uint8))
    assert len(floats) == len(raw) == 4 and all(c.frames.dtype == torch.uint8 for c in raw)
    for a, b in zip(floats, raw):
        assert torch.equal(model_input([b.frames], "cpu"), a.frames[None])
    both = model_input([raw[0].frames, raw[1].frames], "cpu")  # a batch of two streams
    assert torch.equal(both, torch.stack([floats[0].frames, floats[1].frames]))


def records(model, video, settings, reader=None) -> list[dict]:
    kwargs = {} if reader is None else {"reader": reader}
    out = [dict(r) for r in stream_predictions(model, [video], settings, **kwargs)]
    for record in out:
        record.pop("seconds", None)  # wall time
    return out


@pytest.mark.parametrize("changes", [
    {},  # the default: a decoding process, uint8 clips
    {"background": "process", "decode_threads": 1, "prefetch": 1},
    {"background": "process", "decode_threads": 2, "prefetch": 4},
    {"background": "thread", "decode_threads": 0, "prefetch": 3},
    {"background": False},
])
def test_stream_outputs_are_unchanged_by_the_decoder_split_prefetch_and_uint8_path(scene, changes):
    torch.manual_seed(0)
    model = longvid.build_model("memvit_tiny").eval()
    before = records(model, scene, StreamSettings(**{**SETTINGS.__dict__, "background": False}), reader=float_reader)
    assert sum("clip" in r for r in before) == 4 and before[-1]["status"] == "done"
    after = records(model, scene, StreamSettings(**{**SETTINGS.__dict__, **changes}))
    assert json.dumps(after) == json.dumps(before)  # every score, bit for bit


def test_default_split_covers_the_cores_and_sizes_the_model_share():
    assert available_cores() >= 1
    tiny = model_work(longvid.build_model("memvit_tiny"), 16, 64)
    assert tiny < SMALL_MODEL_WORK < 35e6 * 16 * 224 * 224  # MeMViT-16 has 35M parameters
    for cores in (1, 2, 3, 4, 8, 64):
        for work in (None, tiny, 1e13):
            split = default_split(cores, work)
            assert isinstance(split, ThreadSplit) and split.prefetch >= 1 and split.decode_threads >= 1
            assert 1 <= split.torch_threads <= cores
    assert default_split(2, tiny) == ThreadSplit(decode_threads=1, torch_threads=1, prefetch=2)  # measured best on 2 cores
    assert default_split(2, 1e13) == default_split(2) == ThreadSplit(decode_threads=1, torch_threads=2, prefetch=2)
    assert default_split() == default_split(available_cores())
    before = torch.get_num_threads()
    try:
        assert apply_split(tiny, torch_threads=3).torch_threads == 3 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def test_device_clips_pass_through_on_cpu(scene):
    reader = ClipReader(scene, clip_frames=16, stride=2, short_side=64, crop=64, mean=None, std=None, dtype=torch.uint8)
    wrapped = DeviceClips(iter(reader), "cpu")
    wrapped.prefetch()  # nothing to start on CPU
    clips = list(wrapped)
    assert [c.index for c in clips] == list(range(4)) and wrapped.damage is None
    assert all(torch.equal(a.frames, b.frames) for a, b in zip(clips, reader))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_clips_stage_the_next_clip_on_cuda(scene):  # pragma: no cover - no GPU here
    reader = ClipReader(scene, clip_frames=16, stride=2, short_side=64, crop=64, mean=None, std=None, dtype=torch.uint8)
    wrapped = DeviceClips(iter(reader), "cuda")
    first = next(wrapped)
    wrapped.prefetch()
    rest = list(wrapped)
    on_host = list(reader)
    for a, b in zip([first, *rest], on_host):
        assert a.frames.is_cuda and torch.equal(a.frames.cpu(), b.frames)
        assert torch.equal(model_input([a.frames], "cuda").cpu(), model_input([b.frames], "cpu"))


def test_channels_last_gives_the_same_scores():
    torch.manual_seed(0)
    model = longvid.build_model("memvit_tiny").eval()
    clips = torch.randn(2, 1, 3, 16, 64, 64)
    plain = run_clips(model, clips)
    prepare_model(model, channels_last=True)
    assert model.patch_embed.proj.weight.is_contiguous(memory_format=torch.channels_last_3d)
    last = run_clips(model, [c.contiguous(memory_format=torch.channels_last_3d) for c in clips])
    assert torch.allclose(plain, last, atol=1e-5)


def run_clips(model, clips) -> torch.Tensor:
    state, outs = model.init_state(1), []
    with torch.inference_mode():
        for clip in clips:
            logits, state = model(clip, state)
            outs.append(logits)
    return torch.cat(outs)


def test_compile_that_fails_falls_back_to_eager_with_one_line(monkeypatch):
    torch.manual_seed(0)
    model = longvid.build_model("memvit_tiny").eval()
    clips = torch.randn(2, 1, 3, 16, 64, 64)
    eager = run_clips(model, clips)

    def broken_compile(fn, **kwargs):
        def compiled(*args, **kw):
            raise RuntimeError("InvalidCxxCompiler: no working C++ compiler found\nsecond line")
        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    lines = []
    prepare_model(model, compile=True, log=lines.append)
    assert torch.equal(run_clips(model, clips), eager)
    assert lines == ["torch.compile failed (RuntimeError: InvalidCxxCompiler: no working C++ compiler found second line); running eagerly"]


def test_compile_that_is_unavailable_leaves_the_model_eager(monkeypatch):
    model = longvid.build_model("memvit_tiny").eval()
    forward = model.forward

    def unavailable(fn, **kwargs):
        raise RuntimeError("Dynamo is not supported on Python 3.99+")

    monkeypatch.setattr(torch, "compile", unavailable)
    lines = []
    prepare_model(model, compile=True, log=lines.append)
    assert model.forward == forward
    assert lines == ["torch.compile is unavailable (RuntimeError: Dynamo is not supported on Python 3.99+); running eagerly"]
