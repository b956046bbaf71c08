"""The training core against plain reference loops (bitwise), and resume for its tasks."""

import json
import os

import pytest
import torch
from torch import nn

from longvid.errors import LongvidError
from longvid.engine import checkpoint as ckpt
from longvid.engine.config import TrainConfig
from longvid.engine.optim import param_groups, warmup_cosine
from longvid.malmm.qa import QAExample, QATrainer, epoch_order
from longvid.rewind.stages import StageConfig, train_stage

torch.set_num_threads(1)


class TinyQA(nn.Module):
    """A model with ``loss(frames, prompts, answers)``: dropout (RNG), 1-D and 2-D parameters."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.proj = nn.Linear(6, 8)
        self.blocks = nn.Sequential(*[nn.Linear(8, 8) for _ in range(16)])  # weights and biases interleave
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 2)
        self.drop = nn.Dropout(0.3)

    def loss(self, frames, prompts, answers):
        logits = self.head(self.drop(self.norm(self.blocks(self.proj(frames)).mean(1))))  # (B, 2)
        target = torch.tensor([1 if a == "yes" else 0 for a in answers])
        return nn.functional.cross_entropy(logits, target)


def qa_examples(count=10):
    generator = torch.Generator().manual_seed(0)
    return [QAExample(torch.randn(3, 6, generator=generator) + (i % 2), "yes or no?", "yes" if i % 2 else "no") for i in range(count)]


def stage_batches(step):
    generator = torch.Generator().manual_seed(step)
    frames = torch.randn(4, 3, 6, generator=generator)
    return frames, torch.tensor([0, 1, 0, 1])


def stage_loss(model, batch):
    frames, target = batch
    return nn.functional.cross_entropy(model.head(model.drop(model.norm(model.blocks(model.proj(frames)).mean(1)))), target)


def reference_loop(model, batches, loss_fn, steps, lr, warmup, clip, weight_decay, order):
    """The loops before the core: AdamW on the two groups, warm-up + cosine, clipping over ``order``."""
    groups = [g for g in param_groups(model, weight_decay) if g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, steps, warmup, 0.0))
    params = [p for g in groups for p in g["params"]] if order == "groups" else [p for p in model.parameters() if p.requires_grad]
    losses = []
    for step in range(steps):
        model.train()
        loss = loss_fn(model, batches(step))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return losses


def test_stage_equals_the_reference_loop_and_leaves_the_callers_rng():
    config = StageConfig(steps=12, lr=1e-2, warmup_steps=3, weight_decay=0.01, seed=5)
    model = TinyQA().eval()  # the stage sets training mode itself
    caller = torch.get_rng_state()
    losses = train_stage(model, stage_loss, stage_batches, config)
    assert torch.equal(torch.get_rng_state(), caller)  # the stage ran in a fork of the RNG
    assert not model.training
    reference = TinyQA()
    with torch.random.fork_rng():
        torch.manual_seed(5)
        expected = reference_loop(reference, stage_batches, stage_loss, 12, 1e-2, 3, 1.0, 0.01, "groups")
    assert losses == expected  # bitwise
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), reference.parameters()))


def test_stage_resume_equals_an_uninterrupted_stage(tmp_path):
    config = StageConfig(steps=10, lr=1e-2, warmup_steps=2, seed=1, checkpoint_every=4)
    full = train_stage(TinyQA(), stage_loss, stage_batches, config, out_dir=str(tmp_path / "full"))

    def kill(record):
        if record["step"] == 5:  # 0-based: step 6 of 10, after the checkpoint of step 4
            raise KeyboardInterrupt

    run = str(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        train_stage(TinyQA(), stage_loss, stage_batches, config, out_dir=run, on_step=kill)
    assert [os.path.basename(p) for p in ckpt.list_checkpoints(run)] == ["step_00000004"]
    resumed = train_stage(TinyQA(seed=9), stage_loss, stage_batches, config, out_dir=run, resume=True)
    assert resumed == full[4:]  # bitwise: weights, optimizer, schedule and dropout RNG restored
    steps = [json.loads(line)["step"] for line in open(os.path.join(run, "log.jsonl"))]
    assert steps == list(range(1, 11))  # the interrupted steps 5-6 are not logged twice


def qa_config(tmp_path, **fields):
    base = dict(batch_size=4, epochs=4, lr=1e-2, warmup_steps=2, weight_decay=0.01, log_every=100, seed=3, out_dir=str(tmp_path))
    return TrainConfig(**{**base, **fields})


def test_qa_trainer_equals_the_reference_loop(tmp_path):
    examples = qa_examples()
    model = TinyQA().eval()
    torch.manual_seed(3)  # the caller seeds dropout (QATrainer leaves the global RNG alone)
    history = QATrainer(model, qa_config(tmp_path), examples, log=None).fit()
    assert [r["step"] for r in history] == list(range(1, 13)) and [r["examples"] for r in history[:3]] == [4, 4, 2]

    def batch(step):
        epoch, position = divmod(step, 3)
        order = epoch_order(len(examples), 3, epoch)[position * 4 : position * 4 + 4]
        chosen = [examples[i] for i in order]
        return torch.stack([e.frames for e in chosen]), [e.prompt for e in chosen], [e.answer for e in chosen]

    model = TinyQA()
    torch.manual_seed(3)
    expected = reference_loop(model, batch, lambda m, b: m.loss(*b), 12, 1e-2, 2, 1.0, 0.01, "model")
    assert [r["loss"] for r in history] == expected  # bitwise


def test_qa_resume_is_bitwise_and_the_log_has_no_repeats(tmp_path):
    full = QATrainer(TinyQA(), qa_config(tmp_path / "full"), qa_examples(), log=None).fit()

    def kill(record):
        if record["step"] == 7:
            raise KeyboardInterrupt

    config = qa_config(tmp_path / "run", checkpoint_every=5)
    with pytest.raises(KeyboardInterrupt):
        QATrainer(TinyQA(), config, qa_examples(), on_step=kill, log=None).fit()
    resumed = QATrainer(TinyQA(seed=4), config, qa_examples(), log=None).fit(resume=True)
    assert [r["loss"] for r in resumed] == [r["loss"] for r in full[5:]]
    steps = [json.loads(line)["step"] for line in open(os.path.join(config.out_dir, "log.jsonl"))]
    assert steps == list(range(1, 13))


def test_nan_in_a_task_stops_or_skips(tmp_path):
    def poisoned(model, batch):
        loss = stage_loss(model, batch)
        return loss * float("nan") if batch[0][0, 0, 0] > 0 else loss  # some steps only

    with pytest.raises(LongvidError, match=r"non-finite loss nan at step \d+: stopped; no checkpoint was written yet"):
        train_stage(TinyQA(), poisoned, stage_batches, StageConfig(steps=10, warmup_steps=1))
    frozen = TinyQA().requires_grad_(False)
    with pytest.raises(LongvidError, match="nothing to train"):
        QATrainer(frozen, qa_config(tmp_path), qa_examples(), log=None)


class NaNAt(TinyQA):
    def __init__(self, bad):
        super().__init__()
        self.bad, self.calls = bad, 0

    def loss(self, frames, prompts, answers):
        self.calls += 1
        loss = super().loss(frames, prompts, answers)
        return loss * float("nan") if self.calls == self.bad else loss


def test_nan_skip_in_a_task_drops_that_update_only(tmp_path):
    model, said, weights = NaNAt(2), [], []
    trainer = QATrainer(model, qa_config(tmp_path, on_nan="skip", epochs=1), qa_examples(), log=said.append,
                        on_step=lambda r: weights.append({k: v.clone() for k, v in model.state_dict().items()}))
    history = trainer.fit()
    assert [r.get("skipped", False) for r in history] == [False, True, False]
    assert "step 2: non-finite loss nan, update skipped (on_nan=skip)" in said
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[1][k], weights[2][k]) for k in weights[1])
    assert [r["lr"] for r in history] == [r["lr"] for r in QATrainer(TinyQA(), qa_config(tmp_path / "ok", epochs=1), qa_examples(), log=None).fit()]
