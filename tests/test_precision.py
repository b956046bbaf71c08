"""Inference precision (longvid.precision, --dtype): parsing and one-line errors, the bf16
fallback on CPUs without native bf16, bf16 against float32 on a tiny MeMViT, the memory
state kept and saved in bf16, and --dtype through the installed script of stream/eval/ask."""

import copy
import json

import pytest
import torch

import longvid
from longvid import precision
from longvid.cli import main
from longvid.errors import LongvidError
from longvid.memvit import build_model

torch.set_num_threads(1)  # tiny tensors: threads only contend on a shared machine
needs_native_bf16 = pytest.mark.skipif(not precision.cpu_bf16_support()[0], reason="this CPU has no native bf16: --dtype bfloat16 runs float32")


def test_cpu_bf16_support_reports_a_reason():
    native, reason = precision.cpu_bf16_support()
    assert isinstance(native, bool) and "CPU capability" in reason


def test_parse_dtype_names_and_one_line_errors():
    assert precision.parse_dtype("bfloat16") is precision.parse_dtype("bf16") is precision.parse_dtype(torch.bfloat16) is torch.bfloat16
    assert precision.parse_dtype("float32") is precision.parse_dtype("FP32") is torch.float32
    with pytest.raises(LongvidError, match=r"^unknown dtype 'int8': use one of float32, bfloat16, float16$"):
        precision.parse_dtype("int8")
    with pytest.raises(LongvidError, match="unsupported dtype torch.float64"):
        precision.parse_dtype(torch.float64)
    with pytest.raises(LongvidError, match="float16 needs --device cuda"):
        precision.resolve_dtype("float16", "cpu")


def test_bf16_falls_back_to_float32_with_a_note_where_the_cpu_lacks_it(monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_support", lambda: (False, "CPU capability DEFAULT, bf16 flags none"))
    dtype, note = precision.resolve_dtype("bfloat16", "cpu")
    assert dtype is torch.float32 and note == "bfloat16 is not native on this CPU (CPU capability DEFAULT, bf16 flags none): running in float32 instead"
    lines = []
    model = precision.for_inference(build_model("memvit_tiny"), "bfloat16", log=lines.append)
    assert lines == [note] and all(p.dtype == torch.float32 for p in model.parameters())
    monkeypatch.setattr(precision, "cpu_bf16_support", lambda: (True, "AVX512"))
    assert precision.resolve_dtype("bfloat16", "cpu") == (torch.bfloat16, None)


def _pair(seed=0, **overrides):
    torch.manual_seed(seed)
    fp32 = build_model("memvit_tiny", **overrides).eval()
    bf16 = precision.for_inference(copy.deepcopy(fp32), torch.bfloat16)
    return fp32, bf16


@needs_native_bf16
def test_bf16_model_agrees_with_float32_on_a_tiny_memvit():
    """Weights and memory in bf16 (final norm and head float32) over clips that fill the memory:
    probabilities within 2e-3 of float32, same top-1 on every clip, over 3 seeds."""
    for seed in range(3):
        fp32, bf16 = _pair(seed)
        head = {p.dtype for p in bf16.head.parameters()} | {p.dtype for p in bf16.norm.parameters()}
        assert head == {torch.float32} and bf16.blocks[0].attn.q.weight.dtype == torch.bfloat16
        s32, s16 = fp32.init_state(2), bf16.init_state(2)
        assert s16.keys[0].raw.dtype == torch.bfloat16 and s16.num_seen.dtype == torch.long
        generator = torch.Generator().manual_seed(seed)
        with torch.inference_mode():
            for _ in range(5):
                clip = torch.randn(2, 3, 16, 64, 64, generator=generator)  # float32 clips: the model casts them
                p32, s32 = fp32(clip, s32)
                p16, s16 = bf16(clip, s16)
                assert p16.dtype == torch.float32 and s16.values[-1].compressed.dtype == torch.bfloat16
                p32, p16 = p32.softmax(-1), p16.softmax(-1)
                assert torch.equal(p32.argmax(-1), p16.argmax(-1))
                assert float((p32 - p16).abs().max()) < 2e-3


@needs_native_bf16
def test_bf16_state_round_trips_in_its_dtype(tmp_path):
    _, model = _pair()
    clips = torch.randn(4, 1, 3, 16, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        state = model.init_state(1)
        for clip in clips[:2]:
            _, state = model(clip, state)
        longvid.save_state(state, tmp_path / "s.safetensors")
        loaded = longvid.load_state(tmp_path / "s.safetensors")
        assert [t.dtype for t in loaded._tensors()] == [t.dtype for t in state._tensors()]
        assert all(torch.equal(a, b) for a, b in zip(loaded._tensors(), state._tensors()))
        for clip in clips[2:]:  # the resumed stream continues bitwise
            out, state = model(clip, state)
            resumed, loaded = model(clip, loaded)
            assert torch.equal(out, resumed)


@needs_native_bf16
def test_a_float32_state_given_to_a_bf16_model_is_cast_to_bf16():
    fp32, bf16 = _pair()
    clip = torch.randn(1, 3, 16, 64, 64)
    with torch.inference_mode():
        _, state = fp32(clip)
        _, next_state = bf16(clip, state)
    assert next_state.keys[0].raw.dtype == torch.bfloat16


@pytest.mark.parametrize("preset, overrides", [("memvit_tiny", {}), ("memvit_tiny_causal", {}),
                                               ("memvit_tiny", {"rel_pos_spatial": False}),
                                               ("memvit_tiny", {"rel_pos_spatial": False, "rel_pos_temporal": False})])
def test_attention_implementations_agree_in_a_whole_model(preset, overrides):
    """sdpa / matmul (positions folded into q/k, float mask) equal the explicit bias path to
    float32 rounding, memory filled; the causal preset exercises the future mask."""
    torch.manual_seed(0)
    model = build_model(preset, **overrides).eval()
    clips = torch.randn(4, 2, 3, model.config.num_frames, model.config.crop_size, model.config.crop_size, generator=torch.Generator().manual_seed(2))
    outputs = {}
    for impl in ("explicit", "sdpa", "matmul"):
        longvid.memvit.set_attention(model, impl)
        state, outs = model.init_state(2), []
        with torch.inference_mode():
            for clip in clips:
                out, state = model(clip, state)
                outs.append(out if isinstance(out, torch.Tensor) else out["logits"])
        outputs[impl] = torch.stack(outs)
    for impl in ("sdpa", "matmul"):
        torch.testing.assert_close(outputs[impl], outputs["explicit"], rtol=1e-4, atol=1e-5)
    with pytest.raises(LongvidError, match="unknown attention implementation 'flash'"):
        longvid.memvit.set_attention(model, "flash")


@needs_native_bf16
def test_stream_dtype_bfloat16_as_a_user_types_it(videos, run_cli, tmp_path):
    out = tmp_path / "bf16.jsonl"
    code, text = run_cli("stream", videos["cfr"], "--model", "memvit_tiny", "--allow-untrained", "--dtype", "bfloat16", "--out", out)
    assert code == 0, text
    assert "Traceback" not in text and "on cpu, bfloat16" in text
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records[-1]["status"] == "done" and records[-1]["clips"] == sum("top" in r for r in records) > 0
    code, text = run_cli("stream", videos["cfr"], "--dtype", "int8")
    assert code == 2 and "invalid choice: 'int8'" in text


def test_eval_dtype_bfloat16_as_a_user_types_it(run_cli, tmp_path):
    fields = ["synthetic_videos=4", "synthetic_clips=2", "batch_size=2", "log_every=100", f"out_dir={tmp_path / 'run'}"]
    assert main(["train", "memvit_tiny_synthetic", *fields, "max_steps=1", "--quiet"]) == 0
    code, text = run_cli("eval", "memvit_tiny_synthetic", *fields, "--dtype", "bfloat16", "--json")
    assert code == 0, text
    assert "top1" in json.loads(text.strip().splitlines()[-1]) and "Traceback" not in text
    code, text = run_cli("eval", "memvit_tiny_synthetic", *fields, "model=toy", "--dtype", "bfloat16")
    assert code == 1 and text.strip().splitlines()[-1] == "longvid: error: --dtype bfloat16 is for MeMViT models, not model=toy"


def test_ask_dtype_bfloat16_as_a_user_types_it(run_cli, tmp_path):
    from longvid.core.tiny import save_tiny_llm, save_tiny_vision
    from longvid.video import write_video

    video = str(tmp_path / "v.mp4")
    write_video(video, (torch.rand(8, 48, 64, 3) * 255).to(torch.uint8), fps=4)
    vision, llm = save_tiny_vision(str(tmp_path / "vision")), save_tiny_llm(str(tmp_path / "llm"))
    code, text = run_cli("ask", video, "what is it", "--preset", "malmm_tiny", "--encoder", vision, "--llm", llm,
                         "--qformer-tokenizer", llm, "--allow-untrained", "--frames", "2", "--dtype", "bfloat16", "--json")
    assert code == 0, text
    record = json.loads(text.strip().splitlines()[-1])
    assert record["frames_seen"] == 2 and isinstance(record["text"], str)
