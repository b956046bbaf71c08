import dataclasses
import functools
import json
import math

import pytest
import torch

from longvid.rewind.bench import (
    RewindBenchSpec, _data, benchmark_words, format_table, grounding_loss, grounding_table, qa_loss, qa_schedule,
    qa_table, qa_tables, reading, stage1_loss, tiny_rewind, uniform_loss, watch,
)
from longvid.errors import LongvidError
from longvid.rewind.baselines import UniformFrames
from longvid.rewind.grounding import best_span, frames_in, span_seconds
from longvid.engine.checkpoint import load_checkpoint
from longvid.rewind.stages import StageConfig, train_stage

pytest.importorskip("transformers")
QA_NAMES = ["rewind with DFS", "same model, DFS without the relevance cut (top-L, DPC-KNN)",
            "same model, top-2 relevance (no DPC-KNN)", "same model, DFS with the preset's L = 8",
            "same model, 2 random frames", "same model, the question's cue frames (oracle)", "rewind without DFS"]
torch.set_num_threads(1)

SMALL = RewindBenchSpec(num_clips=4, train_videos=8, qa_train_videos=8, test_videos=4, qa_test_videos=4, batch_size=4,
                        stage1=StageConfig(steps=2, warmup_steps=1), stage2=StageConfig(steps=2, warmup_steps=1),
                        qa_stage2=StageConfig(steps=2, warmup_steps=1), qa_explore_steps=1)


@pytest.fixture(scope="module")
def grounding_data():
    return _data("grounding", SMALL)


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
    encoder, make_llm, train, _ = grounding_data
    model = tiny_rewind(SMALL, encoder, make_llm())
    batch = train[:4]
    model.set_stage(2)
    losses = train_stage(model, grounding_loss, lambda step: batch, StageConfig(steps=25, lr=1e-2, warmup_steps=2))
    assert sum(losses[-5:]) / 5 < 0.6 * losses[0]


def test_qa_answer_loss_falls_and_is_checkpointed(tmp_path):
    encoder, make_llm, train, _ = _data("qa", SMALL)
    model = tiny_rewind(SMALL, encoder, make_llm())
    model.set_stage(2)
    losses = train_stage(model, qa_loss, lambda step: train[:4], StageConfig(steps=20, lr=3e-3, warmup_steps=2),
                         out_dir=str(tmp_path / "run"))
    assert losses[-1] < 0.7 * losses[0]
    tensors, record = load_checkpoint(str(tmp_path / "run"))
    weights = [name for name in tensors if name.startswith("model.")]
    assert any("lora_" in name for name in weights) and not any(name.startswith("model.encoder.") for name in weights)
    assert (record["task"], record["step"]) == ("ReWind stage", 20)
    logged = [json.loads(line) for line in open(tmp_path / "run" / "log.jsonl")]
    assert [r["loss"] for r in logged] == losses and [r["step"] for r in logged] == list(range(1, 21))


def test_stage1_trains_only_the_perceiver(grounding_data):
    encoder, make_llm, train, _ = grounding_data
    model = tiny_rewind(SMALL, encoder, make_llm())
    model.set_stage(1)
    before = model.memory_proj.weight.clone()
    captions = functools.partial(stage1_loss, num_classes=SMALL.synth.num_classes)
    losses = train_stage(model, captions, lambda step: train[:4], StageConfig(steps=2, warmup_steps=1))
    assert all(math.isfinite(x) for x in losses) and torch.equal(before, model.memory_proj.weight)
    with pytest.raises(LongvidError, match="nothing to train"):
        train_stage(model.requires_grad_(False), captions, lambda step: train[:4], StageConfig(steps=1))


def test_uniform_baseline_points_at_sampled_frames(grounding_data):
    encoder, make_llm, train, _ = grounding_data
    model = tiny_rewind(SMALL, encoder, make_llm())
    uniform = UniformFrames(model.config, make_llm(), num_frames=5)
    assert uniform.sampled(16).tolist() == [0, 4, 8, 11, 15]
    features = torch.stack([i.features for i in train[:2]])
    logits = uniform.ground_logits(features, [i.sample.question for i in train[:2]])
    assert logits.shape == (2, 2, 5)
    assert torch.isfinite(uniform_loss(uniform, train[:2]))


def test_small_tables_have_the_right_structure(grounding_data):
    grounding = grounding_table(SMALL, log=None)
    assert [row["model"] for row in grounding] == ["rewind (memory + DFS)", "uniform 8 frames", "middle interval", "whole video"]
    for row in grounding:
        assert {"R@0.3", "R@0.5", "R@0.7", "mIoU", "llm_tokens", "memory_bytes"} <= set(row)
        assert row["R@0.7"] <= row["R@0.5"] <= row["R@0.3"]
        assert all((row[k] * SMALL.test_videos / 100).is_integer() for k in ("R@0.3", "R@0.5", "R@0.7"))  # counts of videos
    frames = SMALL.num_clips * SMALL.synth.clip_frames
    assert grounding[0]["llm_tokens"] > 2 * frames + 1  # memory tokens, separator, selected frames, question
    # the whole video contains every target: its IoU is the target's share of the video (naive reference)
    duration = SMALL.num_clips * SMALL.synth.clip_seconds
    shares = [(i.sample.target[1] - i.sample.target[0]) / duration for i in grounding_data[3]]
    assert grounding[3]["mIoU"] == pytest.approx(100 * sum(shares) / len(shares), abs=0.05)
    assert grounding[3]["R@0.3"] == 100 * sum(s >= 0.3 for s in shares) / len(shares)
    qa = qa_table(SMALL, log=None)
    assert [row["model"] for row in qa] == QA_NAMES
    assert qa[0]["llm_tokens"] - qa[6]["llm_tokens"] == 2 * 4  # DFS adds K_c = 2 selected frames of 2x2 tokens
    assert len({row["llm_tokens"] for row in qa[:6]}) == 1  # the ablations and references read as many frames
    assert all((row["accuracy"] * SMALL.qa_test_videos / 100).is_integer() for row in qa)  # counts of right answers
    assert qa[5]["cue_frames"] == 100.0 and qa[6]["cue_frames"] == ""
    assert "| model |" in format_table(qa)


def test_qa_schedule_explores_then_trains_selection(monkeypatch):
    weights = []
    monkeypatch.setattr("longvid.rewind.bench.qa_loss",
                        lambda model, items, weight, selection, caption_weight, num_classes:
                        weights.append((weight, selection, caption_weight, num_classes)) or torch.zeros(()))
    selection = reading("random", 2, 0)
    loss = qa_schedule(dataclasses.replace(SMALL, qa_explore_steps=2, qa_policy_weight=3.0), selection)
    for _ in range(4):
        loss(None, [])
    assert weights == [(0.0, selection, 1.0, 4), (0.0, selection, 1.0, 4), (3.0, selection, 1.0, 4), (3.0, selection, 1.0, 4)]
    weights.clear()
    loss = qa_schedule(SMALL, selection)  # the default: no REINFORCE, each row reads its own selection's frames
    loss(None, [])
    assert weights == [(None, selection, 1.0, 4)]
    teacher = reading("cue", 2, 0)
    for share, reads in ((1.0, [teacher] * 20), (0.0, [selection] * 20)):
        weights.clear()
        loss = qa_schedule(dataclasses.replace(SMALL, teacher_frames=share), selection, teacher)
        for _ in range(20):
            loss(None, [])
        assert [w[1] for w in weights] == reads
    weights.clear()
    loss = qa_schedule(dataclasses.replace(SMALL, teacher_frames=0.5), selection, teacher)
    for _ in range(20):
        loss(None, [])
    assert 0 < sum(w[1] is teacher for w in weights) < 20  # a drawn share of the steps


def test_qa_table_averages_seeds(monkeypatch):
    runs = {0: 30.0, 1: 50.0}
    monkeypatch.setattr("longvid.rewind.bench.qa_rows", lambda spec, log: ([
        {"model": "a", "accuracy": runs[spec.seed], "cue_frames": "", "llm_tokens": 65, "final_loss": 0.1234 + spec.seed},
        {"model": "b", "accuracy": 1.0, "cue_frames": 4 + spec.seed, "llm_tokens": 57, "final_loss": 0.5}],
        [{"vectors": "m", "probe cue": 90.0 + spec.seed, "probe balanced": 80.0, "within-video cosine": 0.5}]))
    tables = qa_tables(dataclasses.replace(SMALL, qa_seeds=(0, 1)), log=None)
    assert tables["qa"] == [
        {"model": "a", "accuracy": 40.0, "cue_frames": "", "llm_tokens": 65, "final_loss": 0.623,
         "accuracy by seed": "30.0 / 50.0"},
        {"model": "b", "accuracy": 1.0, "cue_frames": 4.5, "llm_tokens": 57, "final_loss": 0.5,
         "accuracy by seed": "1.0 / 1.0", "cue frames by seed": "4 / 5"},
    ]
    assert tables["memory"] == [{"vectors": "m", "probe cue": 90.5, "probe balanced": 80.0, "within-video cosine": 0.5,
                                 "probe balanced by seed": "80.0 / 80.0"}]


def test_reference_readings_choose_cue_or_random_frames(grounding_data):
    encoder, make_llm, train, _ = grounding_data
    model = tiny_rewind(SMALL, encoder, make_llm())
    state, questions = watch(model, train[:4])
    cue = reading("cue", model.config.num_select, seed=0)
    chosen = model.select(state, questions, selector=cue(train[:4]))
    for item, frames in zip(train[:4], chosen):
        shown = item.cue_shown()
        assert len(frames) == model.config.num_select and torch.equal(frames, frames.sort().values)
        assert int(shown[frames].sum()) == min(int(shown.sum()), len(frames))  # cue frames first
    first, second = reading("random", 2, seed=0), reading("random", 2, seed=0)
    drawn = [model.select(state, questions, selector=r(train[:4])) for r in (first, second, first)]
    assert [f.tolist() for f in drawn[0]] == [f.tolist() for f in drawn[1]]  # seeded
    assert [f.tolist() for f in drawn[0]] != [f.tolist() for f in drawn[2]]  # one generator per row, drawn on
    assert reading("dfs", 2, 0) is None and [len(f) for f in model.select(state, questions, selector=reading("none", 2, 0)(train[:4]))] == [0] * 4
    with pytest.raises(LongvidError, match="unknown frame reading"):
        reading("best", 2, 0)


def test_bench_rewind_writes_both_tables(tmp_path, monkeypatch, capsys):
    import json

    from longvid import cli

    monkeypatch.setattr("longvid.rewind.bench.RewindBenchSpec", lambda: SMALL)
    assert cli.main(["bench", "rewind", "--out", str(tmp_path), "--quiet"]) == 0
    assert "it/s" not in capsys.readouterr().err  # --quiet: no progress bars, the libraries' included
    record = json.loads((tmp_path / "rewind.json").read_text())
    assert [row["model"] for row in record["qa"]] == QA_NAMES
    assert record["grounding"][0]["model"] == "rewind (memory + DFS)"
    assert "## ReWind: grounding" in (tmp_path / "rewind.md").read_text()
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
    assert cli.main(["bench", "rewind", "--full"]) == 1
    assert cli.main(["bench", "rewind", "--seeds", "0,x"]) == 1
    assert cli.main(["bench", "malmm", "--seeds", "0"]) == 1


def test_qa_questions_use_caption_words_and_where_reads_the_cue_half():
    from longvid.rewind.bench import GENERIC_CAPTION, bench_sample
    from longvid.data.synth import Scene, class_name, clip_times, render

    samples = [bench_sample("qa", seed, SMALL) for seed in range(60)]
    assert {s.task for s in samples} == {"recall", "count", "order", "where"}
    caption_words = set(GENERIC_CAPTION.split()) | {w for c in range(4) for w in f"the {class_name(c)} flashes".split()}
    for s in samples:
        words = set(s.question.replace("?", " ").replace(",", " ").split())
        assert "flashes" in words and (s.task == "recall" or words & caption_words > {"the", "flashes"})
    where = [s for s in samples if s.task == "where"]
    assert {s.answer for s in where} == {"left", "right"}
    times = clip_times(SMALL.synth, SMALL.num_clips).reshape(-1)
    for s in where[:4]:
        start, end = s.scene.event_interval(s.scene.events[0], SMALL.synth)
        shown = render(s.scene, SMALL.synth, times, 32, 32)
        empty = render(Scene(s.scene.seed, s.scene.num_clips), SMALL.synth, times, 32, 32)
        inside = torch.from_numpy((times >= start) & (times < end))
        assert torch.equal(shown[~inside], empty[~inside])  # no other frame depends on where the cue was
        columns = torch.nonzero((shown[inside][0] - empty[inside][0]).abs().sum(0) > 0.1)[:, 1].float()  # naive: cue pixels
        assert s.answer == ("left" if columns.mean() < 16 else "right")
