import math

import pytest
import torch

from longvid.bench.rewind import (
    RewindBenchSpec, UniformFrames, _data, benchmark_words, cue_frame_share, format_table, grounding_loss, grounding_table, qa_loss,
    qa_table, stage1_loss, tiny_rewind, uniform_loss,
)
from longvid.errors import LongvidError
from longvid.models.llm import CausalLM
from longvid.models.rewind import best_span, frames_in, span_seconds
from longvid.train.checkpoint import load_checkpoint
from longvid.train.rewind import StageConfig, train_stage

pytest.importorskip("transformers")
torch.set_num_threads(1)

SMALL = RewindBenchSpec(num_clips=4, train_videos=8, qa_train_videos=8, test_videos=4, batch_size=4,
                        stage1=StageConfig(steps=2, warmup_steps=1), stage2=StageConfig(steps=2, warmup_steps=1),
                        qa_stage2=StageConfig(steps=2, warmup_steps=1))


@pytest.fixture(scope="module")
def grounding_data(tmp_path_factory):
    return _data("grounding", SMALL, str(tmp_path_factory.mktemp("bench")))


def test_best_span_and_intervals():
    logits = torch.tensor([[0.0, 5.0, 0.0, 9.0], [9.0, 0.0, 5.0, 0.0]])  # best start 3, best end 0: not a span
    assert best_span(logits) == (1, 2)
    times = torch.arange(6, dtype=torch.float64)
    assert span_seconds(times, 1, 2) == (0.5, 2.5)
    assert frames_in(times, (0.5, 2.5)) == (1, 2)
    assert frames_in(times[::3], (1.6, 2.5)) == (1, 1)  # no sampled frame inside: the nearest to the centre (3 s)


def test_words_cover_the_benchmark_text():
    words = set(benchmark_words(SMALL))
    assert {"when", "does", "the", "red", "square", "flash", "?", "0", "3", "many"} <= words


def test_stage2_loss_falls(grounding_data):
    encoder, llm_path, train, _ = grounding_data
    model = tiny_rewind(SMALL, encoder, llm_path)
    batch = train[:4]
    model.set_stage(2)
    losses = train_stage(model, grounding_loss, lambda step: batch, StageConfig(steps=25, lr=1e-2, warmup_steps=2))
    assert sum(losses[-5:]) / 5 < 0.6 * losses[0]


def test_qa_answer_loss_falls_and_is_checkpointed(tmp_path):
    encoder, llm_path, train, _ = _data("qa", SMALL, str(tmp_path / "qa"))
    model = tiny_rewind(SMALL, encoder, llm_path)
    model.set_stage(2)
    losses = train_stage(model, qa_loss, lambda step: train[:4], StageConfig(steps=20, lr=3e-3, warmup_steps=2),
                         out_dir=str(tmp_path / "run"))
    assert losses[-1] < 0.7 * losses[0]
    tensors, record = load_checkpoint(str(tmp_path / "run"))
    assert any("lora_" in name for name in tensors) and not any(name.startswith("vision.") for name in tensors)
    assert record["losses"] == losses


def test_stage1_trains_only_the_perceiver(grounding_data):
    encoder, llm_path, train, _ = grounding_data
    model = tiny_rewind(SMALL, encoder, llm_path)
    model.set_stage(1)
    before = model.memory_proj.weight.clone()
    losses = train_stage(model, stage1_loss, lambda step: train[:4], StageConfig(steps=2, warmup_steps=1))
    assert all(math.isfinite(x) for x in losses) and torch.equal(before, model.memory_proj.weight)
    with pytest.raises(LongvidError, match="nothing to train"):
        train_stage(model.requires_grad_(False), stage1_loss, lambda step: train[:4], StageConfig(steps=1))


def test_uniform_baseline_points_at_sampled_frames(grounding_data):
    encoder, llm_path, train, _ = grounding_data
    model = tiny_rewind(SMALL, encoder, llm_path)
    uniform = UniformFrames(model.config, CausalLM.from_pretrained(llm_path), num_frames=5)
    assert uniform.sampled(16).tolist() == [0, 4, 8, 11, 15]
    features = torch.stack([i.features for i in train[:2]])
    logits = uniform.ground_logits(features, [i.sample.question for i in train[:2]])
    assert logits.shape == (2, 2, 5)
    assert torch.isfinite(uniform_loss(uniform, train[:2]))


def test_small_tables_have_the_right_structure():
    grounding = grounding_table(SMALL, log=None)
    assert [row["model"] for row in grounding] == ["rewind (memory + DFS)", "uniform 8 frames", "middle interval", "whole video"]
    for row in grounding:
        assert {"R@0.3", "R@0.5", "R@0.7", "mIoU", "llm_tokens", "memory_bytes"} <= set(row)
        assert 0 <= row["mIoU"] <= 100 and row["R@0.7"] <= row["R@0.5"] <= row["R@0.3"]
    frames = SMALL.num_clips * SMALL.synth.clip_frames
    assert grounding[0]["llm_tokens"] > 2 * frames + 1  # memory tokens, separator, selected frames, question
    assert grounding[3]["mIoU"] > 0  # the whole video always overlaps the target
    qa = qa_table(SMALL, log=None)
    assert [row["model"] for row in qa] == ["rewind with DFS", "rewind without DFS"]
    assert qa[0]["llm_tokens"] - qa[1]["llm_tokens"] == 2 * 4  # DFS adds K_c = 2 selected frames of 2x2 tokens
    assert all(0 <= row["accuracy"] <= 100 and 0 <= row["acc recall"] <= 100 for row in qa)
    assert 0 <= qa[0]["cue_frames"] <= 100 and 0 < qa[0]["cue_frames_random"] < 100 and qa[1]["cue_frames"] == ""
    assert "| model |" in format_table(qa)


def test_cue_frame_share_counts_frames_showing_a_cue(grounding_data):
    _, _, train, _ = grounding_data
    item = train[0]
    shown = sum(bool(item.cues_on(item.times[f : f + 1])) for f in range(len(item.times)))
    assert cue_frame_share([item]) == round(100.0 * shown / len(item.times), 1)
    assert 0 < shown < len(item.times)  # every grounding video has a cue, and frames without one


def test_bench_rewind_writes_both_tables(tmp_path, monkeypatch):
    import json

    from longvid import cli

    monkeypatch.setattr("longvid.bench.rewind.RewindBenchSpec", lambda: SMALL)
    assert cli.main(["bench", "rewind", "--out", str(tmp_path), "--quiet"]) == 0
    record = json.loads((tmp_path / "rewind.json").read_text())
    assert [row["model"] for row in record["qa"]] == ["rewind with DFS", "rewind without DFS"]
    assert record["grounding"][0]["model"] == "rewind (memory + DFS)"
    assert "## ReWind: grounding" in (tmp_path / "rewind.md").read_text()
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
    assert cli.main(["bench", "rewind", "--full"]) == 1
