"""MeMViT end to end: the official tiny model's logits, presets, heads, state contract."""

import math
import os

import numpy as np
import pytest
import torch

import longvid
from longvid.errors import LongvidError
from longvid.memvit import PRESETS, block_layout, build_model

torch.set_num_threads(1)  # the test machines are shared: avoid thread oversubscription

REF = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "reference", "memvit_tiny")
REF = os.environ.get("LONGVID_MEMVIT_TINY", REF if os.path.isdir(REF) else "/work/shared/reference/memvit_tiny")


def _ref_clip(k: int) -> torch.Tensor:
    return torch.randn(1, 3, 16, 64, 64, generator=torch.Generator().manual_seed(k))


@pytest.mark.skipif(not os.path.isdir(REF), reason="reference data not available")
@pytest.mark.parametrize("outputs, boundary", [("outputs.npz", None), ("outputs_boundary3.npz", 3)])
def test_official_tiny_logits(outputs, boundary):
    """Load the official tiny checkpoint, stream its 8 clips, match its logits to 1e-5."""
    model = longvid.build_model("memvit_tiny", num_classes=10).eval()
    report = longvid.load_checkpoint(model, os.path.join(REF, "memvit_tiny.pyth"))
    assert report.ok and not report.adapted
    ref = np.load(os.path.join(REF, outputs))["logits"]  # (8, 1, 10)
    state = model.init_state(1)
    with torch.inference_mode():
        for k in range(8):
            if k == boundary:  # clips 3..7 are another video
                state = state.reset(torch.tensor([True]))
            logits, state = model(_ref_clip(k), state)
            np.testing.assert_allclose(logits.numpy(), ref[k], atol=1e-5, rtol=0)


# -- streams, resets, causality ----------------------------------------------------------


def _clips(n, batch=1, seed=0, size=(8, 32, 32)):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, *size, generator=g) for _ in range(n)]


def _tiny(name="memvit_tiny", **kw):
    torch.manual_seed(0)
    return build_model(name, num_frames=8, crop_size=32, **kw).eval()


def _run(model, clips, state=None):
    state = state if state is not None else model.init_state(clips[0].shape[0])
    outs = []
    with torch.no_grad():
        for clip in clips:
            out, state = model(clip, state)
            outs.append(out)
    return outs, state


def test_after_reset_outputs_are_bit_identical_to_a_fresh_stream():
    model = _tiny()
    video_a, video_b = _clips(5, seed=1), _clips(5, seed=2)
    _, state = _run(model, video_a)
    after_reset, _ = _run(model, video_b, state.reset(torch.tensor([True])))
    fresh, _ = _run(model, video_b)
    for a, b in zip(after_reset, fresh):
        assert torch.equal(a, b)
    continued, _ = _run(model, video_b, state)  # without the reset the memory of video_a is read
    assert not torch.allclose(continued[0], fresh[0])


def test_streams_in_one_batch_never_see_each_others_memory():
    model = _tiny()
    a, b, c = _clips(5, seed=1), _clips(5, seed=2), _clips(5, seed=3)
    with_b, _ = _run(model, [torch.cat([x, y]) for x, y in zip(a, b)])
    with_c, _ = _run(model, [torch.cat([x, y]) for x, y in zip(a, c)])
    alone, _ = _run(model, a)
    for k in range(5):
        torch.testing.assert_close(with_b[k][0], with_c[k][0], rtol=0, atol=1e-6)
        torch.testing.assert_close(with_b[k][:1], alone[k], rtol=0, atol=1e-5)


def test_per_stream_reset_in_a_batch():
    model = _tiny()
    a, b = _clips(6, seed=1), _clips(6, seed=2)
    state = model.init_state(2)
    outs = []
    with torch.no_grad():
        for k in range(6):
            if k == 3:  # stream 0 starts a new video (the clips of b from here), stream 1 goes on
                state = state.reset(torch.tensor([True, False]))
            out, state = model(torch.cat([b[k] if k >= 3 else a[k], b[k]]), state)
            outs.append(out)
    fresh, _ = _run(model, b[3:])
    together, _ = _run(model, b)
    for k in range(3, 6):
        torch.testing.assert_close(outs[k][:1], fresh[k - 3], rtol=0, atol=1e-5)
        torch.testing.assert_close(outs[k][1:], together[k], rtol=0, atol=1e-5)


def test_causal_variant_frame_output_ignores_later_frames():
    model = _tiny("memvit_tiny_causal")
    history = _clips(3, seed=1)
    last = _clips(1, seed=2)[0]
    i = 1  # token frame i sees input frames <= 2 i (temporal patch stride 2)
    changed = last.clone()
    changed[:, :, 2 * i + 1 :] = torch.randn(changed[:, :, 2 * i + 1 :].shape)
    _, state = _run(model, history)
    with torch.no_grad():
        out, _ = model(last, state)
        out_changed, _ = model(changed, state)
    frames = out["frame_logits"]  # (B, T', K)
    assert frames.shape[1] == 4
    torch.testing.assert_close(out_changed["frame_logits"][:, : i + 1], frames[:, : i + 1], rtol=0, atol=1e-6)
    assert not torch.allclose(out_changed["frame_logits"][:, i + 1 :], frames[:, i + 1 :])


def test_memory_keep_drops_entries():
    model = _tiny()
    clips = _clips(5)
    _, state = _run(model, clips[:4])
    with torch.no_grad():
        full, _ = model(clips[4], state)
        none, _ = model(clips[4], state, memory_keep=torch.zeros(1, 2, dtype=torch.bool))
        fresh, _ = model(clips[4], model.init_state(1))
    torch.testing.assert_close(none, fresh, rtol=0, atol=1e-6)
    assert not torch.allclose(full, fresh)


def test_state_for_another_clip_size_is_resized_only_when_fresh():
    model = _tiny()
    state = model.init_state(1, clip_size=(16, 64, 64))
    _, state = _run(model, _clips(1), state)  # fresh: re-sized to 8x32x32
    with pytest.raises(LongvidError, match="clip size"):
        model(torch.randn(1, 3, 16, 64, 64), state)


# -- presets and layouts ------------------------------------------------------------------

TSV = os.path.join(os.path.dirname(REF), "{}")


def _tsv(name):
    with open(TSV.format(name)) as f:
        rows = [line.rstrip("\n").split("\t") for line in f][1:]
    return [(n, tuple(int(d) for d in s.split("x"))) for n, s, _ in rows]


def _layout(model):
    return [(n, tuple(t.shape)) for n, t in model.state_dict().items()]


@pytest.mark.skipif(not os.path.isdir(REF), reason="reference data not available")
@pytest.mark.parametrize("preset, tsv", [("memvit16_16x4", "memvit16_16x4_cls_state_dict.tsv"), ("memvit16_16x4_ava", "memvit16_16x4_state_dict.tsv"), ("memvit24_32x3_ava", "memvit24_32x3_state_dict.tsv")])
def test_preset_parameter_layout_equals_released(preset, tsv):
    with torch.device("meta"):
        model = build_model(preset)
    assert _layout(model) == _tsv(tsv)


@pytest.mark.parametrize("preset, params", [("mvit16_16x4", 34_525_216), ("memvit16_16x4", 35_388_832), ("memvit16_16x4_ava", 42_230_624), ("memvit24_32x3_ava", 59_443_136)])
def test_preset_parameter_counts(preset, params):
    with torch.device("meta"):
        model = build_model(preset)
    assert sum(p.numel() for p in model.parameters()) == params


@pytest.mark.skipif(not os.path.isdir(REF), reason="reference data not available")
@pytest.mark.parametrize("preset, tsv", [("memvit16_16x4_ava", "memvit16_16x4_state_dict.tsv"), ("memvit24_32x3_ava", "memvit24_32x3_state_dict.tsv")])
def test_released_ava_layout_loads_without_missing_or_unexpected_keys(tmp_path, preset, tsv):
    g = torch.Generator().manual_seed(0)
    # random rows broadcast over each tensor: the file stays small, every key and shape is real
    state = {name: torch.randn(shape[-1], generator=g).expand(shape) for name, shape in _tsv(tsv)}
    path = tmp_path / "released.pyth"
    torch.save({"epoch": 10, "model_state": state, "cfg": "MVIT:\n  DEPTH: 16\n"}, path)
    with torch.device("meta"):
        model = build_model(preset)
    model = model.to_empty(device="cpu")  # skip the slow random init: every tensor is loaded
    report = longvid.load_checkpoint(model, path)
    assert report.ok and len(report.loaded) == len(state)
    for name in ("blocks.0.attn.rel_pos_mem_t", "box_blocks.0.attn.q.weight", "head.projection.bias"):
        assert torch.equal(model.state_dict()[name], state[name])


def test_block_layout_of_memvit16():
    layout = block_layout(PRESETS["memvit16_16x4"])
    assert [b.dim_out for b in layout] == [96, 192, 192, 384] + [384] * 10 + [768, 768]
    assert [b.num_heads for b in layout][:4] == [1, 2, 2, 4] and layout[-1].num_heads == 8
    assert layout[0].kv_size == (8, 7, 7) and layout[-1].kv_size == (8, 7, 7)
    assert PRESETS["memvit16_16x4"].reading_blocks == tuple(range(0, 16, 2))


def test_build_model_errors_are_clear():
    with pytest.raises(LongvidError, match="unknown model preset"):
        build_model("memvit99")
    with pytest.raises(LongvidError, match="unknown config field"):
        build_model("memvit_tiny", num_clases=3)
    with pytest.raises(LongvidError, match="sampler"):
        build_model("memvit_tiny", sampler="random")


# -- heads ----------------------------------------------------------------------------------


def test_verb_noun_and_anticipation_heads():
    model = _tiny(head="verb_noun", num_classes=(5, 7))
    out, _ = _run(model, _clips(2, batch=2))
    assert out[-1]["verb"].shape == (2, 5) and out[-1]["noun"].shape == (2, 7)
    model = _tiny("memvit_tiny_causal", num_classes=(5, 7))
    out, _ = _run(model, _clips(2, batch=2))
    assert out[-1]["verb"].shape == (2, 5) and out[-1]["frame_noun"].shape == (2, 4, 7)
    torch.testing.assert_close(out[-1]["verb"], out[-1]["frame_verb"][:, -1])


def test_ava_head_boxes_with_memory():
    model = _tiny("memvit_tiny_ava")
    boxes = torch.tensor([[1, 0.0, 0.0, 31.0, 31.0], [0, 4.0, 2.0, 20.0, 30.0], [1, 8.0, 8.0, 16.0, 24.0]])
    state = model.init_state(2)
    with torch.no_grad():
        for clip in _clips(4, batch=2):
            previous = state
            logits, state = model(clip, previous, boxes=boxes)
    assert logits.shape == (3, 10)
    assert len(state.keys) == len(model.reading_blocks) + 1  # box block memory
    # boxes are independent of their order in the input
    with torch.no_grad():
        perm = torch.tensor([2, 0, 1])
        logits_p, _ = model(clip, previous, boxes=boxes[perm])
    torch.testing.assert_close(logits_p, logits[perm], rtol=0, atol=1e-6)
    with pytest.raises(LongvidError, match="boxes"):
        model(clip, state)


def _naive_roi_align(feat, box, size, scale):
    """detectron2 ROIAlign (aligned=True, sampling_ratio=0), one box, explicit loops."""
    c, height, width = feat.shape
    x1, y1, x2, y2 = [float(v) * scale - 0.5 for v in box]
    roi_w, roi_h = x2 - x1, y2 - y1
    bin_w, bin_h = roi_w / size, roi_h / size
    grid_w, grid_h = math.ceil(roi_w / size), math.ceil(roi_h / size)
    count = max(grid_w * grid_h, 1)
    out = torch.zeros(c, size, size, dtype=feat.dtype)
    for ph in range(size):
        for pw in range(size):
            acc = torch.zeros(c, dtype=feat.dtype)
            for iy in range(grid_h):
                y = y1 + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                for ix in range(grid_w):
                    x = x1 + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                    if y < -1.0 or y > height or x < -1.0 or x > width:
                        continue
                    y, x = max(y, 0.0), max(x, 0.0)
                    y_low, x_low = int(y), int(x)
                    if y_low >= height - 1:
                        y_high = y_low = height - 1
                        y = float(y_low)
                    else:
                        y_high = y_low + 1
                    if x_low >= width - 1:
                        x_high = x_low = width - 1
                        x = float(x_low)
                    else:
                        x_high = x_low + 1
                    ly, lx = y - y_low, x - x_low
                    hy, hx = 1 - ly, 1 - lx
                    acc += hy * hx * feat[:, y_low, x_low] + hy * lx * feat[:, y_low, x_high] + ly * hx * feat[:, y_high, x_low] + ly * lx * feat[:, y_high, x_high]
            out[:, ph, pw] = acc / count
    return out


def test_roi_align_matches_detectron2_semantics():
    from longvid.memvit.heads import roi_align

    g = torch.Generator().manual_seed(0)
    feat = torch.randn(2, 3, 7, 7, generator=g, dtype=torch.float64)
    boxes = torch.tensor([[0, 10.0, 20.0, 200.0, 150.0], [1, -20.0, 5.0, 100.0, 240.0], [0, 100.0, 100.0, 110.0, 104.0]], dtype=torch.float64)
    out = roi_align(feat, boxes, 7, 1 / 32)
    for n, box in enumerate(boxes):
        expected = _naive_roi_align(feat[int(box[0])], box[1:], 7, 1 / 32)
        torch.testing.assert_close(out[n], expected, rtol=1e-10, atol=1e-10)


def test_short_clips_with_coarse_compression_have_every_temporal_distance():
    # 4-frame clips -> 2 token frames, compressed by 4 in time: the memory's frames span
    # more than a clip, so the released table size (3T - 1 rows) is not enough.
    model = build_model("memvit_tiny", num_frames=4, crop_size=32).eval()
    assert model.blocks[0].attn.rel_pos_mem_t.shape[0] == 2 + (2 * 1 - 1) * 4
    state = model.init_state(2)
    with torch.inference_mode():
        for _ in range(4):
            logits, state = model(torch.randn(2, 3, 4, 32, 32), state)
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
