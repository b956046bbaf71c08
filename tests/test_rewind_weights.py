"""ReWind from its parts (a transformers vision tower and causal LM saved locally), its trained
weights saved as one safetensors file + a JSON naming the frozen parts, and loaded back."""

from __future__ import annotations

import json

import pytest
import torch

from longvid.cli import main
from longvid.errors import LongvidError
from longvid.rewind import build_model
from longvid.rewind.weights import config_path, load_weights, save_weights, trained_stages
from longvid.core.tiny import save_tiny_llm, save_tiny_vision

torch.set_num_threads(1)  # tiny tensors: threads only contend on a shared machine


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """A tiny SigLIP vision tower and a tiny Qwen2 LM written to folders, as a user brings them."""
    root = tmp_path_factory.mktemp("parts")
    with torch.random.fork_rng(devices=[]):  # the savers seed the global RNG
        vision = save_tiny_vision(str(root / "siglip"), arch="siglip", image_size=32, patch=8, hidden=32)
        llm = save_tiny_llm(str(root / "qwen2"), arch="qwen2", hidden=64, layers=1)
        other = save_tiny_llm(str(root / "llama48"), arch="llama", hidden=48, layers=1)
    return {"vision": vision, "llm": llm, "other": other}


def test_saved_weights_rebuild_the_same_model_from_the_named_parts(parts, tmp_path):
    model = build_model("rewind_tiny", encoder=parts["vision"], llm=parts["llm"], seed=3).eval()
    assert model.config.memory.vision_dim == 32 and model.config.llm_dim == 64
    with torch.no_grad(), torch.random.fork_rng(devices=[]):  # "training": move every trainable tensor
        torch.manual_seed(1)
        for name, param in model.named_parameters():
            if not name.startswith(("encoder.", "llm.")) or "lora_" in name:
                param.add_(torch.randn_like(param) * 0.1)
    path = save_weights(model, tmp_path / "run" / "rewind.safetensors", "rewind_tiny", parts["vision"], parts["llm"], seed=3,
                        stages=["1", "2"])

    from safetensors.torch import load_file

    stored = load_file(path)
    assert stored and all(not k.startswith(("encoder.", "llm.")) or "lora_" in k for k in stored)
    assert any("lora_" in k for k in stored) and any(k.startswith("memory.") for k in stored)
    record = json.loads(open(config_path(path)).read())
    assert (record["encoder"], record["llm"], record["preset"], record["seed"]) == (parts["vision"], parts["llm"], "rewind_tiny", 3)
    assert trained_stages(path) == ["1", "2"]

    loaded = load_weights(path).eval()
    for (name, a), (other, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert name == other and torch.equal(a, b), name
    frames = model.dummy_inputs(2, seed=0)
    states = [m(frames, m.init_state(2, instructions=["what is it?"] * 2))[1] for m in (model, loaded)]
    scores = [m.score(s, ["what is it?"] * 2, ["red", "blue square"]) for m, s in zip((model, loaded), states)]
    assert torch.equal(scores[0], scores[1])


def test_weights_on_other_parts_or_without_their_record_are_one_line_errors(parts, tmp_path):
    model = build_model("rewind_tiny", encoder=parts["vision"], llm=parts["llm"])
    path = save_weights(model, tmp_path / "w.safetensors", "rewind_tiny", parts["vision"], parts["llm"])
    with pytest.raises(LongvidError, match="do not fit the model"):
        load_weights(path, llm=parts["other"])  # a 48-wide LLM: every projection has another shape
    (tmp_path / "w.json").unlink()
    with pytest.raises(LongvidError, match="no w.json beside it"):
        load_weights(path)
    assert trained_stages(path) is None


def test_ask_refuses_weights_recorded_as_untrained(parts, tmp_path, capsys):
    model = build_model("rewind_tiny", encoder=parts["vision"], llm=parts["llm"])
    path = save_weights(model, tmp_path / "w.safetensors", "rewind_tiny", parts["vision"], parts["llm"], stages=[])
    args = ["ask", str(tmp_path / "v.mp4"), "q", "--model", "rewind", "--preset", "rewind_tiny", "--encoder", parts["vision"],
            "--llm", parts["llm"], "--weights", path]
    capsys.readouterr()  # transformers' loading bars of the build above
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "never trained" in err and "--allow-untrained" in err


def test_the_eva_tower_of_an_instructblip_checkpoint_is_the_image_encoder(parts, tmp_path):
    """ReWind's paper encoder is EVA ViT-g, which transformers holds inside BLIP-2/InstructBLIP:
    the tower alone is read out of the composite checkpoint (and out of a tower saved alone)."""
    from transformers import InstructBlipConfig, InstructBlipForConditionalGeneration

    from longvid.rewind.parts import image_encoder
    from longvid.core.tiny import tiny_llm_model

    text = tiny_llm_model(hidden=32, layers=1).config.to_dict()
    config = InstructBlipConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, image_size=32, patch_size=8),
        qformer_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64, encoder_hidden_size=32),
        text_config=text, num_query_tokens=4)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        full = InstructBlipForConditionalGeneration(config).eval()
    full.save_pretrained(tmp_path / "iblip")
    full.vision_model.save_pretrained(tmp_path / "tower")
    frames = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = full.vision_model(pixel_values=(frames - 0.5) / 0.5).last_hidden_state  # (2, 17, 32)
    for path in (tmp_path / "iblip", tmp_path / "tower"):
        encoder = image_encoder(str(path))
        encoder.mean, encoder.std = (0.5,) * 3, (0.5,) * 3  # no preprocessor_config.json saved: CLIP's stats otherwise
        assert torch.allclose(encoder.encode_frames(frames), expected, atol=1e-6), path
    model = build_model("rewind_tiny", encoder=image_encoder(str(tmp_path / "iblip")), llm=parts["llm"])
    assert model.config.memory.vision_dim == 32
    out, _ = model(model.dummy_inputs(1), model.init_state(1))
    assert out["memory_tokens"].shape[:2] == (1, model.config.clip_frames)


def test_weights_written_before_the_frame_codes_load_with_zero_codes(parts, tmp_path):
    from safetensors.torch import load_file, save_file

    from longvid.rewind import load_trainable

    model = build_model("rewind_tiny", encoder=parts["vision"], llm=parts["llm"], seed=3).eval()
    path = save_weights(model, tmp_path / "old" / "rewind.safetensors", "rewind_tiny", parts["vision"], parts["llm"], seed=3,
                        stages=["1", "2"])
    stored = load_file(path)
    old = {k: v for k, v in stored.items() if k not in ("frame_order", "frame_cell")}
    save_file(old, path)
    loaded = load_weights(path)
    assert not loaded.frame_order.any() and not loaded.frame_cell.any()
    with torch.no_grad():
        loaded.frame_order.fill_(1.0)  # codes a later training gave; loading an old checkpoint resets them
    load_trainable(loaded, old)
    assert not loaded.frame_order.any()
    old.pop(next(k for k in old if k.startswith("memory.")))
    with pytest.raises(LongvidError, match="1 missing"):
        load_trainable(loaded, old)
