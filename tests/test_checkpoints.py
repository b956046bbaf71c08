"""Checkpoints: safetensors round trip, released .pyth import, table adaptation, reports."""

import pytest
import torch
import torch.nn.functional as F

import longvid
from longvid.checkpoints import CheckpointError, load_checkpoint, load_model, save_checkpoint
from longvid.models.memvit import build_model

torch.set_num_threads(1)  # the test machines are shared: avoid thread oversubscription


def _tiny(**kw):
    torch.manual_seed(0)
    return build_model("memvit_tiny", num_frames=8, crop_size=32, **kw).eval()


def test_safetensors_round_trip_with_config(tmp_path):
    model = _tiny(num_classes=7, sampler="consecutive")
    path = tmp_path / "model.safetensors"
    save_checkpoint(model, path)
    loaded = load_model(path)
    assert loaded.config == model.config
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)
    clip = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(clip)[0], loaded.eval()(clip)[0])
    other = _tiny(num_classes=7, sampler="consecutive")
    torch.nn.init.zeros_(other.head.projection.weight)
    report = longvid.load_checkpoint(other, path)
    assert report.ok and torch.equal(other.head.projection.weight, model.head.projection.weight)


def _released(tmp_path, state, name="released.pyth"):
    path = tmp_path / name
    torch.save({"epoch": 3, "model_state": {"module." + k: v for k, v in state.items()}, "cfg": "MODEL:\n  NUM_CLASSES: 10\n"}, path)
    return path


def test_released_pyth_tables_are_padded_and_resized(tmp_path):
    source = _tiny()
    state = dict(source.state_dict())
    state["blocks.0.attn.rel_pos_mem_t"] = state["blocks.0.attn.rel_pos_mem_t"][:7]  # a Kinetics-style shorter table
    state["blocks.0.attn.rel_pos_h"] = torch.randn(21, 16)  # trained at another size
    target = _tiny()
    report = load_checkpoint(target, _released(tmp_path, state))
    assert report.ok and len(report.adapted) == 2
    mem_t = target.state_dict()["blocks.0.attn.rel_pos_mem_t"]
    assert torch.equal(mem_t[:7], state["blocks.0.attn.rel_pos_mem_t"])
    assert torch.equal(mem_t[7:], state["blocks.0.attn.rel_pos_mem_t"][-1:].expand(mem_t.shape[0] - 7, -1))
    expected_h = F.interpolate(state["blocks.0.attn.rel_pos_h"].t()[None], size=target.blocks[0].attn.rel_pos_h.shape[0], mode="linear")[0].t()
    torch.testing.assert_close(target.blocks[0].attn.rel_pos_h.detach(), expected_h)


def test_missing_unexpected_and_mismatched_keys_are_reported(tmp_path):
    state = dict(_tiny().state_dict())
    del state["norm.weight"]
    state["blocks.9.attn.q.weight"] = torch.zeros(2, 2)
    state["head.projection.weight"] = torch.zeros(3, 64)
    path = _released(tmp_path, state)
    target = _tiny()
    before = target.blocks[0].attn.q.weight.detach().clone()
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(target, path)
    message = str(err.value)
    assert "missing (1): norm.weight" in message and "unexpected (1): blocks.9.attn.q.weight" in message
    assert "head.projection.weight: (3, 64) -> (10, 64)" in message
    assert torch.equal(target.blocks[0].attn.q.weight, before)  # strict: nothing loaded
    report = load_checkpoint(target, path, strict=False)
    assert not report.ok and report.missing == ["norm.weight"] and len(report.mismatched) == 1
    assert torch.equal(target.blocks[0].attn.q.weight, state["blocks.0.attn.q.weight"])


def test_model_without_memory_loads_memory_checkpoint_with_clear_report(tmp_path):
    path = _released(tmp_path, dict(_tiny().state_dict()))
    plain = build_model("mvit_tiny", num_frames=8, crop_size=32)
    report = load_checkpoint(plain, path, strict=False)
    assert not report.missing and all("compress" in n or "rel_pos_mem" in n for n in report.unexpected)


def test_bad_files_are_clear_errors(tmp_path):
    model = _tiny()
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(model, tmp_path / "nope.pyth")
    (tmp_path / "weights.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="unknown checkpoint type"):
        load_checkpoint(model, tmp_path / "weights.txt")
    torch.save({"epoch": 1}, tmp_path / "empty.pyth")
    with pytest.raises(CheckpointError, match="no state dict"):
        load_checkpoint(model, tmp_path / "empty.pyth")
