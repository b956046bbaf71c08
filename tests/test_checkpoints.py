"""Checkpoints: safetensors round trip, released .pyth import, table adaptation, reports."""

import json

import pytest
import torch
import torch.nn.functional as F

import longvid
from longvid.core.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from longvid.memvit.model import load_model
from longvid.memvit import build_model

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


def _damaged(tmp_path, kind: str):
    """A .safetensors file broken in one way (``kind``)."""
    good = tmp_path / "good.safetensors"
    save_checkpoint(_tiny(), good)
    path = tmp_path / f"{kind}.safetensors"
    data = good.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"not safetensors at all " * 8, "empty": b""}[kind])
    return path


@pytest.mark.parametrize("kind, reason", [
    ("truncated", "incomplete metadata, file not fully covered"),
    ("garbage", "header too large"),
    ("empty", "header too small"),
])
def test_damaged_safetensors_are_checkpoint_errors_naming_the_file(tmp_path, kind, reason):
    path = _damaged(tmp_path, kind)
    expected = f"{path}: not a readable safetensors file, truncated or damaged? (Error while deserializing header: {reason})"
    for load in (lambda: longvid.load_checkpoint(_tiny(), path), lambda: load_model(path)):
        with pytest.raises(CheckpointError) as err:
            load()
        assert str(err.value) == expected


def _with_config(tmp_path, **changes):
    """A checkpoint whose stored config has ``changes`` (None: a config that is not JSON)."""
    from safetensors.torch import load_file, save_file

    from longvid.core.checkpoints import read_metadata

    good = tmp_path / "good.safetensors"
    save_checkpoint(_tiny(), good)
    meta = read_metadata(good)
    meta["config"] = json.dumps({**json.loads(meta["config"]), **changes}) if changes else "{not json"
    path = tmp_path / "changed.safetensors"
    save_file(load_file(good), path, metadata=meta)
    return path


@pytest.mark.parametrize("changes, message", [
    ({"wings": 2}, "the stored config has unknown key(s) wings (written by another version of longvid?)"),
    ({"depth": "four"}, "the stored config's depth is 'four', not int"),
    ({"patch_stride": [2, 4]}, "the stored config's patch_stride is (2, 4), not tuple[int, int, int]"),
    ({"num_classes": -1}, "the stored config is not valid: num_classes must be >= 1, got -1"),
    ({"memory_blocks": [0, 99]}, "the stored config is not valid: memory_blocks [99] outside 0..3"),
    ({}, "the stored config is not valid JSON (Expecting property name enclosed in double quotes)"),
])
def test_bad_stored_configs_are_checkpoint_errors_naming_the_file(tmp_path, changes, message):
    path = _with_config(tmp_path, **changes)
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    assert str(err.value) == f"{path}: {message}"


def test_cli_stream_and_eval_report_damaged_checkpoints_in_one_line(tmp_path, videos, capsys):
    from longvid.cli import main
    from longvid.engine.checkpoint import save_checkpoint as save_training_checkpoint

    bad_config = _with_config(tmp_path, num_classes=-1)
    assert main(["stream", videos["cfr"], "--checkpoint", str(bad_config), "--out", str(tmp_path / "out.jsonl"), "--quiet"]) == 1
    assert capsys.readouterr().err == f"longvid: error: {bad_config}: the stored config is not valid: num_classes must be >= 1, got -1\n"
    truncated = _damaged(tmp_path, "truncated")
    assert main(["stream", videos["cfr"], "--model", "memvit_tiny", "--checkpoint", str(truncated), "--quiet"]) == 1
    assert capsys.readouterr().err.startswith(f"longvid: error: {truncated}: not a readable safetensors file")

    base = save_training_checkpoint(str(tmp_path / "run"), 1, {"model.w": torch.zeros(2)}, {"step": 1})
    fields = ["model=toy", "synthetic_videos=4", "synthetic_clips=2", "clip_frames=2", "size=4", "batch_size=2"]
    with open(base + ".safetensors", "r+b") as f:
        f.truncate(20)
    assert main(["eval", "memvit_tiny_synthetic", *fields, "--checkpoint", base, "--quiet"]) == 1
    assert capsys.readouterr().err.startswith(f"longvid: error: {base}.safetensors: not a readable safetensors file, truncated or damaged? (Error while deserializing header")
    save_training_checkpoint(str(tmp_path / "run"), 1, {"model.w": torch.zeros(2)}, {"step": 1})
    with open(base + ".json", "w") as f:
        f.write('{"step": 1, "conf')  # cut off
    assert main(["eval", "memvit_tiny_synthetic", *fields, "--checkpoint", base, "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"longvid: error: {base}.json is damaged (") and err.count("\n") == 1
