"""The training engine on a toy memory model: each paper feature has a test that
fails when the feature is removed; resume equals an uninterrupted run."""

import errno
import json
import math
import os

import pytest
import torch

from longvid.core.checkpoints import CheckpointError
from longvid.errors import LongvidError
from longvid.engine import checkpoint as ckpt
from longvid.engine.toy import ToyMemoryModel
from longvid.core.seeding import seed_everything
from longvid.memvit.loop import Trainer, memory_drop_mask
from longvid.memvit.run_config import MeMViTRunConfig
from longvid.memvit.recipes import load_config
from longvid.memvit.data import class_frequencies, synthetic_source
from longvid.memvit.losses import equalization_loss
from longvid.engine.optim import param_groups, warmup_cosine
from longvid.engine.sampler import StreamSampler
from longvid.data.sources import TensorVideos


def config(tmp_path, **fields):
    base = dict(
        num_classes=4, clip_frames=2, size=4, synthetic_videos=8, synthetic_clips=3, batch_size=2, epochs=2,
        lr=0.05, log_every=1000, checkpoint_every=1000, out_dir=str(tmp_path / "run"), eval_every=0,
    )  # fmt: skip
    base.update(fields)
    return MeMViTRunConfig(**base)


class SpyModel(ToyMemoryModel):
    """Records what the engine hands the model at every call."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls = []

    def forward(self, clip, state, memory_keep=None):
        self.calls.append(
            dict(
                training=self.training,
                keep=None if memory_keep is None else memory_keep.clone(),
                filled=state.filled.clone(),
                memory_has_graph=state.memory.grad_fn is not None,
                first=clip.flatten(1)[:, 0].clone(),
            )
        )
        return super().forward(clip, state, memory_keep)


def make_trainer(cfg, model=None, **kw):
    seed_everything(cfg.seed)
    model = model or ToyMemoryModel(dim=8, num_classes=cfg.num_classes, memory_len=3)
    source = synthetic_source(cfg, cfg.seed)
    return Trainer(model, cfg, source, val_source=kw.pop("val", None), log=None, **kw)


def test_loss_falls_and_eval_improves(tmp_path):
    cfg = config(tmp_path, epochs=12, synthetic_videos=8, synthetic_clips=2, lr=0.03, warmup_steps=2)
    trainer = make_trainer(cfg, val=synthetic_source(cfg, 99))
    before = trainer.evaluate()["top1"]
    losses = [r["loss"] for r in trainer.fit()]
    assert len(losses) == 12 * 8
    assert sum(losses[-8:]) / 8 < 0.5 * sum(losses[:8]) / 8
    assert trainer.evaluate()["top1"] >= max(before, 75.0)
    lines = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    assert len(lines) == len(losses)


def test_kill_and_resume_matches_uninterrupted(tmp_path):
    fields = dict(epochs=3, synthetic_videos=5, lr=0.05, warmup_steps=3, progressive=(1, 3))
    full = [r["loss"] for r in make_trainer(config(tmp_path / "a", **fields)).fit()]

    killed = config(tmp_path / "b", checkpoint_every=4, **fields)

    def kill(record):
        if record["step"] == 10:  # dies between checkpoints: the one at step 8 is the latest
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        make_trainer(killed, on_step=kill).fit()
    resumed = make_trainer(killed).fit(resume=True)  # a fresh process would build everything again
    assert resumed[0]["step"] == 9
    assert [r["loss"] for r in resumed] == pytest.approx(full[8:], rel=1e-6, abs=1e-7)


def test_memory_drop_in_training_only():
    gen = torch.Generator().manual_seed(0)
    masks = torch.stack([memory_drop_mask(4, 5, gen) for _ in range(200)])  # (200, 4, 5)
    dropped = (~masks).sum(-1).flatten()
    assert dropped.min() == 0 and dropped.max() == 4  # m in [0, M-1]
    assert set(dropped.tolist()) == {0, 1, 2, 3, 4}
    assert (~masks).float().mean(dim=(0, 1)).std() < 0.05  # any step may be dropped


def test_engine_drops_memory_when_training_and_keeps_all_in_eval(tmp_path):
    cfg = config(tmp_path, epochs=1)
    model = SpyModel(dim=8, num_classes=4, memory_len=3)
    trainer = make_trainer(cfg, model)
    trainer.fit()
    train_keeps = [c["keep"] for c in model.calls if c["training"]]
    assert all(k is not None and k.shape == (2, 3) for k in train_keeps)
    assert any((~k).any() for k in train_keeps) and all((~k).sum(1).max() <= 2 for k in train_keeps)
    model.calls.clear()
    trainer.evaluate(synthetic_source(cfg, 5))
    assert model.calls and all(c["keep"] is None for c in model.calls)
    model.calls.clear()
    make_trainer(config(tmp_path, epochs=1, memory_drop=False), model).fit()
    assert all(c["keep"] is None for c in model.calls)


def test_progressive_schedule_lengthens_videos(tmp_path):
    cfg = config(tmp_path, epochs=3, synthetic_videos=2, synthetic_clips=4, batch_size=1, shuffle=False, progressive=(1, 2, 4))
    model = SpyModel(dim=8, num_classes=4, memory_len=3)
    records = make_trainer(cfg, model).fit()
    assert [r["clips_per_video"] for r in records] == [1] * 8 + [2] * 8 + [4] * 8
    # a stream's memory holds at most (segment length - 1) clips: empty on every 1-clip video
    filled = [int(c["filled"].sum()) for c in model.calls]
    assert filled == [0] * 8 + [0, 1] * 4 + [0, 1, 2, 3] * 2


def test_memory_resets_at_video_boundaries(tmp_path):
    videos = [torch.full((n, 3, 2, 2, 2), float(v)) for v, n in enumerate([3, 1, 2, 2])]
    source = TensorVideos(videos, [{"label": v % 4} for v in range(4)])
    cfg = config(tmp_path, epochs=1, batch_size=2, shuffle=False)
    model = SpyModel(dim=8, num_classes=4, memory_len=3)
    seed_everything(0)
    Trainer(model, cfg, source, log=None).fit()
    # slots: [v0 v0 v0 v3 v3] and [v1 v2 v2 - -]: memory counts per step
    assert [c["filled"].sum(1).tolist() for c in model.calls] == [[0, 0], [1, 0], [2, 1], [0, 2], [1, 3]]


def test_no_graph_is_kept_across_steps(tmp_path):
    model = SpyModel(dim=8, num_classes=4, memory_len=3)
    make_trainer(config(tmp_path, epochs=1), model).fit()
    assert len(model.calls) > 4
    assert not any(c["memory_has_graph"] for c in model.calls)


def test_first_step_update_matches_naive_reference(tmp_path):
    cfg = config(tmp_path, clip_grad=None, memory_drop=False, weight_decay=0.0, optimizer="sgd", momentum=0.0, max_steps=1)
    trainer = make_trainer(cfg)
    reference = ToyMemoryModel(dim=8, num_classes=4, memory_len=3)
    reference.load_state_dict(trainer.model.state_dict())
    batch = StreamSampler(trainer.train_source, 2, seed=cfg.seed).next_batch()  # the batch the trainer will see
    trainer.fit()
    loss = 0.0
    for b in range(2):  # each stream on its own, from empty memory; mean over streams
        out, _ = reference(batch.clips[b : b + 1], reference.init_state(1))
        loss = loss + torch.nn.functional.cross_entropy(out, batch.targets["label"][b : b + 1]) / 2
    loss.backward()
    for name, param in reference.named_parameters():
        grad = param.grad if param.grad is not None else torch.zeros_like(param)
        assert torch.allclose(trainer.model.get_parameter(name), param - cfg.lr * grad, atol=1e-6), name


def test_equalization_loss_matches_naive():
    logits = torch.tensor([[1.0, 2.0, 0.5, -1.0], [0.3, 0.1, 2.0, 1.0]])
    labels = torch.tensor([0, 2])
    freq = torch.tensor([0.5, 0.001, 0.4, 0.002])  # classes 1 and 3 are rare
    loss = equalization_loss(logits, labels, freq, threshold=0.003)
    # sample 0: rare 1, 3 leave the denominator; sample 1 likewise
    naive0 = -math.log(math.exp(1.0) / (math.exp(1.0) + math.exp(0.5)))
    naive1 = -math.log(math.exp(2.0) / (math.exp(0.3) + math.exp(2.0)))
    assert loss.tolist() == pytest.approx([naive0, naive1])
    # a rare class is kept in the denominator of its own samples
    own = equalization_loss(logits[:1], torch.tensor([1]), freq)
    assert own.item() == pytest.approx(-math.log(math.exp(2.0) / (math.exp(1.0) + math.exp(2.0) + math.exp(0.5))))


def test_schedule_and_weight_decay_groups():
    assert warmup_cosine(0, 10, 4) == pytest.approx(0.25)
    assert warmup_cosine(3, 10, 4) == pytest.approx(1.0)
    assert warmup_cosine(4, 10, 4) == pytest.approx(1.0)
    assert warmup_cosine(7, 10, 4) == pytest.approx(0.5)
    assert warmup_cosine(10, 10, 4, 0.1) == pytest.approx(0.1) and warmup_cosine(50, 10, 4, 0.1) == pytest.approx(0.1)
    decay, no_decay = param_groups(ToyMemoryModel(dim=8), 0.05)
    assert all(p.ndim == 2 for p in decay["params"]) and decay["weight_decay"] == 0.05
    assert len(no_decay["params"]) == 5 and no_decay["weight_decay"] == 0.0  # 3 biases + norm weight and bias


def test_config_presets_and_overrides(tmp_path):
    cfg = load_config("memvit_tiny_synthetic", ["lr=0.5", "progressive=1,2", "clip_grad=null", "amp=off", "memory_drop=false"])
    assert (cfg.lr, cfg.progressive, cfg.clip_grad, cfg.amp, cfg.memory_drop) == (0.5, (1, 2), None, "off", False)
    assert [cfg.clips_per_video(e) for e in range(4)] == [1, 2, 2, 2]
    for bad, message in [
        (["nope=1"], "unknown config field"),
        (["epochs=1.5"], "epochs expects int"),
        (["lr"], "key=value"),
        (["optimizer=lamb"], "optimizer must be"),
    ]:
        with pytest.raises(LongvidError, match=message):
            load_config("memvit_tiny_synthetic", bad)
    with pytest.raises(LongvidError, match="neither a preset"):
        load_config(str(tmp_path / "missing.json"))
    (tmp_path / "c.json").write_text('{"epochs": 7, "progressive": [1, 3]}')
    assert load_config(str(tmp_path / "c.json")).progressive == (1, 3)


def test_class_frequencies():
    source = TensorVideos([torch.zeros(1, 1, 1, 1, 1)] * 4, [{"label": 0}, {"label": 0}, {"label": 2}, {"label": 0}])
    assert class_frequencies(source, 4)["label"].tolist() == [0.75, 0.0, 0.25, 0.0]



def test_loss_on_last_clips_only(tmp_path):
    """loss_clips="last": the clips before a video's last one only build memory (no
    weight update, no graph), the last one carries the loss."""
    cfg = config(tmp_path, epochs=1, synthetic_videos=2, synthetic_clips=3, batch_size=2, shuffle=False, loss_clips="last", memory_drop=False)
    trainer = make_trainer(cfg)
    weights = [p.detach().clone() for p in trainer.model.parameters()]
    first = trainer.train_step(trainer.sampler.next_batch())
    assert math.isnan(first["loss"]) and first["clips"] == 2
    assert all(torch.equal(w, p) for w, p in zip(weights, trainer.model.parameters()))
    assert bool(trainer.state.filled.any())  # the memory still moved on
    trainer.train_step(trainer.sampler.next_batch())
    last = trainer.train_step(trainer.sampler.next_batch())
    assert math.isfinite(last["loss"]) and last["clips"] == 2
    assert not all(torch.equal(w, p) for w, p in zip(weights, trainer.model.parameters()))
    with pytest.raises(LongvidError, match="loss_clips"):
        config(tmp_path, loss_clips="first").validate()


class NaNAt(ToyMemoryModel):
    """Returns NaN logits on its ``bad``-th training call (1-based)."""

    def __init__(self, bad: int, **kw):
        super().__init__(**kw)
        self.bad, self.calls = bad, 0

    def forward(self, clip, state, memory_keep=None):
        out, state = super().forward(clip, state, memory_keep)
        if self.training:
            self.calls += 1
            if self.calls == self.bad:
                out = out * float("nan")
        return out, state


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = config(tmp_path, checkpoint_every=2, epochs=4)
    model = NaNAt(5, dim=8, num_classes=4, memory_len=3)
    trainer = make_trainer(cfg, model)
    with pytest.raises(LongvidError, match=r"non-finite loss nan at step 5 .*step_00000004"):
        trainer.fit()
    assert [os.path.basename(p) for p in ckpt.list_checkpoints(cfg.out_dir)] == ["step_00000002", "step_00000004"]
    tensors, _ = ckpt.load_checkpoint(cfg.out_dir)
    assert all(torch.isfinite(t).all() for k, t in tensors.items() if k.startswith("model."))


def test_nan_loss_skip_drops_the_update_only(tmp_path):
    cfg = config(tmp_path, on_nan="skip", epochs=1)
    model = NaNAt(3, dim=8, num_classes=4, memory_len=3)
    trainer = make_trainer(cfg, model)
    seen = []
    trainer.on_step = lambda record: seen.append((record, _weights(model)))
    history = trainer.fit()
    assert [r.get("skipped", False) for r in history][:4] == [False, False, True, False]
    assert all(torch.equal(seen[1][1][k], seen[2][1][k]) for k in seen[1][1])  # the skipped step changed nothing
    assert not all(torch.equal(seen[2][1][k], seen[3][1][k]) for k in seen[2][1])  # the next one trains
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())


def test_resume_skips_a_damaged_latest_checkpoint_and_log_has_no_repeats(tmp_path):
    cfg = config(tmp_path, checkpoint_every=4, epochs=3, synthetic_videos=5)

    def kill(record):
        if record["step"] == 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        make_trainer(cfg, on_step=kill).fit()
    previous, latest = ckpt.list_checkpoints(cfg.out_dir)
    data = open(latest + ".safetensors", "rb").read()
    with open(latest + ".safetensors", "wb") as f:
        f.write(data[: len(data) // 2])  # truncated, as by a crash of the disk
    with pytest.warns(UserWarning, match=rf"{os.path.basename(latest)}.safetensors: not a readable safetensors file, truncated or damaged\? .* using .*{os.path.basename(previous)}"):
        resumed = make_trainer(cfg).fit(resume=True)
    assert resumed[0]["step"] == int(previous[-8:]) + 1
    steps = [json.loads(line)["step"] for line in open(os.path.join(cfg.out_dir, "log.jsonl"))]
    assert steps == list(range(1, len(steps) + 1))


def test_failed_checkpoint_write_leaves_no_orphan(tmp_path, monkeypatch):
    cfg = config(tmp_path, checkpoint_every=2, epochs=1)
    trainer = make_trainer(cfg)
    real_save = ckpt.save_file

    def disk_full(tensors, path, **kw):
        real_save(tensors, path, **kw)  # the bytes were written...
        if trainer.step == 4:
            raise OSError(errno.ENOSPC, "No space left on device")  # ...but did not all reach the disk

    monkeypatch.setattr(ckpt, "save_file", disk_full)
    with pytest.raises(CheckpointError, match=r"cannot write checkpoint .*step_00000004: No space left on device; the last complete checkpoint is .*step_00000002"):
        trainer.fit()
    assert sorted(os.listdir(cfg.out_dir)) == ["log.jsonl", "step_00000002.json", "step_00000002.safetensors"]
