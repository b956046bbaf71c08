"""Every MeMViT training preset trains its compression modules (fK / fV), its released gap
sampler included: one training step of a tiny version with memory in place leaves non-zero
gradients on every memory layer's compress_k / compress_v."""

import dataclasses

import pytest
import torch

from longvid.memvit.ava_files import Keyframe
from longvid.memvit.recipes import PRESETS
from longvid.memvit.loop import Trainer
from longvid.memvit.run import build_model
from longvid.memvit.tasks import memvit_config
from longvid.data.sources import TensorVideos

MEMORY_PRESETS = sorted(n for n, c in PRESETS.items() if (m := memvit_config(c)) is not None and m.memory_len)


def tiny_version(config, out_dir):
    """The preset's memory (M, sampler), causality, task and optimizer on the tiny backbone."""
    full = memvit_config(config)
    return dataclasses.replace(
        config, model="memvit_tiny_causal" if full.causal else "memvit_tiny", memory_len=full.memory_len, sampler=full.sampler,
        clip_frames=4, size=32, batch_size=1, epochs=1, progressive=(), memory_drop=False, eval_every=0,
        warmup_steps=0, log_every=1000, checkpoint_every=1000, out_dir=str(out_dir), init_from=None,
    )  # fmt: skip


class BoxVideos(TensorVideos):
    """Generated clips with one person box per clip (what AVA's source gives)."""

    def clip_extras(self, video, clip):
        keyframe = Keyframe("m", 902 + clip, torch.tensor([[0.1, 0.1, 0.8, 0.9]]), labels=torch.tensor([[1.0, 0.0, 1.0]]))
        return {"keyframe": keyframe, "pixels": keyframe.boxes * 32}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: threads only contend on a shared CPU
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", MEMORY_PRESETS)
def test_one_training_step_trains_the_compression(name, tmp_path):
    assert {"memvit16_16x4_sgd", "memvit16_16x4_epic", "memvit_tiny_epic"} <= set(MEMORY_PRESETS)
    torch.manual_seed(0)
    config = tiny_version(PRESETS[name], tmp_path)
    if config.task == "ava":
        (tmp_path / "actions.pbtxt").write_text("".join(f'item {{\n  name: "a{i}"\n  id: {i}\n}}\n' for i in (1, 2, 3)))
        config = dataclasses.replace(config, action_list=str(tmp_path / "actions.pbtxt"))
    reach = memvit_config(config).memory_spec.cache_len
    targets = {"classify": {"label": 1}, "epic_verb_noun": {"verb": 1, "noun": 2}, "epic_anticipation": {"action": 1}, "ava": {}}[config.task]
    actions = [(0, 0), (1, 2)] if config.task == "epic_anticipation" else None
    model = build_model(config, actions)
    video = torch.randn(reach + 1, 3, 4, 32, 32)  # (clips, C, T, H, W): memory is full at the last clip
    freq = {"action": torch.tensor([0.5, 0.5])} if config.loss == "eql" else None
    config = dataclasses.replace(config, max_steps=reach + 1)
    videos = (BoxVideos if config.task == "ava" else TensorVideos)([video], [targets])
    Trainer(model, config, videos, class_freq=freq, log=None).fit()
    layers = [b.attn for i, b in enumerate(model.blocks) if i in model.reading_blocks]
    grads = [m.weight.grad for a in layers for m in (a.compress_k, a.compress_v)]
    assert layers and all(g is not None and float(g.abs().sum()) > 0 for g in grads), name
