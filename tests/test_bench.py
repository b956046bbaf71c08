"""``longvid bench``: the quick run, typed as a user would (the installed script, no
--quiet, output piped to a file), writes a sane table, JSON, Markdown, plot and weights;
the trained memory models beat the short-term model on held-out videos."""

import dataclasses
import json
import subprocess

import pytest
import torch

import longvid.memvit
from conftest import longvid_script
from longvid.bench import recall_lmm
from longvid.core import measure
from longvid.bench import run as bench
from longvid.data.synth import recall_sample, scene_clips
from longvid.core.checkpoints import read_metadata
from longvid.memvit.model import load_model
from longvid.errors import LongvidError
from longvid.memvit.loop import evaluate

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    log = out / "output.txt"
    with open(log, "w") as f:
        command = [longvid_script(), "bench", "--quick", "--out", str(out), "--save-weights", str(out / "w.safetensors")]
        code = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, timeout=900).returncode
    printed = log.read_text()
    assert code == 0, printed
    return json.loads((out / "results.json").read_text()), out, printed


def test_quick_run_prints_one_line_per_model_then_the_table(quick):
    saved, out, printed = quick
    assert "Traceback" not in printed and "\r" not in printed  # piped: no bar redraws
    names = [v.name for v in bench.MODES["quick"].variants] + [r.name for r in bench.MODES["quick"].lmm_rows]
    for name in names:  # one plain line per model as it finishes
        assert sum(line.startswith(f"seed 0 {name}:") for line in printed.splitlines()) == 1
    assert "| model | reach (clips) |" in printed
    assert "CPU seconds (1 seed(s)): data generation" in printed  # the time split
    for name in ("results.json", "results.md", "bench.png"):
        assert (out / name).stat().st_size > 0


def test_quick_run_rows_are_sane(quick):
    saved, out, _ = quick
    rows = {r["model"]: r for r in saved["rows"]}
    cfg = bench.MODES["quick"]
    assert list(rows) == [v.name for v in cfg.variants] + [r.name for r in cfg.lmm_rows]
    short, base3, mem2 = rows["MViT short-term"], rows["MViT 3x frames"], rows["MeMViT M=2"]
    assert (short["reach_clips"], base3["reach_clips"], mem2["reach_clips"]) == (0, 2, 2)
    assert mem2["support_s"] == base3["support_s"] == 3 * cfg.spec.clip_seconds
    for d in map(str, cfg.distances):  # no memory, no reach: exactly chance on paired scenes
        assert short["accuracy"][d] == pytest.approx(saved["chance"])
    assert base3["gflops"] > 2.5 * short["gflops"]
    assert short["gflops"] <= mem2["gflops"] < 1.1 * short["gflops"]
    assert base3["train_mem_mb"] > mem2["train_mem_mb"] > 0
    assert base3["state_bytes"] > mem2["state_bytes"] > short["state_bytes"]  # 2 buffered clips > 2 clips of memory
    for name in ("MA-LMM L=5", "ReWind"):
        lmm = rows[name]
        assert lmm["reach_clips"] is None and lmm["support_s"] == cfg.num_clips * cfg.spec.clip_seconds
        assert lmm["gflops"] > 0 and lmm["llm_gflops_per_answer"] > 0 and lmm["llm_params"] > 0
    for row in rows.values():
        assert all(0 <= a <= 100 for a in row["accuracy"].values())
        assert row["params"] > 0 and row["train_clips_per_s"] > 0 and row["infer_clips_per_s"] > 0
        assert set(row["cpu_seconds"]) == {"train", "eval", "measure"}
    table = (out / "results.md").read_text()
    assert "| MeMViT M=2 | 2 | 3 |" in table and "acc d=2 (%)" in table and "| ReWind | video |" in table


def test_trained_memory_beats_the_short_term_model_on_held_out_videos(quick):
    """The quick run's memory models (and the 3x-frames baseline) see the cue within their
    reach on held-out scenes, where the short-term model is at chance."""
    saved, _, _ = quick
    rows = {r["model"]: r for r in saved["rows"]}
    chance = saved["chance"]
    for name in ("MeMViT M=2", "MViT 3x frames", "MA-LMM L=5", "ReWind"):
        row = rows[name]
        for d, accuracy in row["accuracy"].items():  # every quick distance is within these rows' reach
            assert accuracy >= chance + 25, (name, d, accuracy)  # short-term: exactly chance (above)
    for d in map(str, bench.MODES["quick"].distances):  # the memory model beats the short-term one
        assert rows["MeMViT M=2"]["accuracy"][d] >= rows["MViT short-term"]["accuracy"][d] + 50


def test_demo_weights_round_trip(quick):
    saved, out, _ = quick
    path = str(out / "w.safetensors")
    model = load_model(path)
    assert model.config.memory_len == 2 and model.config.sampler == "consecutive"
    metadata = read_metadata(path)
    assert json.loads(metadata["labels"]) == ["red square", "green disk", "blue triangle", "yellow cross"]
    row = next(r for r in saved["runs"][0]["rows"] if r["model"] == "MeMViT M=2")
    assert json.loads(metadata["accuracy"]) == row["accuracy"] and metadata["seed"] == "0"
    cfg = bench.MODES["quick"]
    variant = next(v for v in cfg.variants if v.name == "MeMViT M=2")
    for d in cfg.distances:  # the saved weights score what the run measured
        source = bench.source_for(variant, *bench.eval_data(cfg, d))
        assert evaluate(model, source, cfg.batch_size, pooling="last")["top1"] == row["accuracy"][str(d)]


@pytest.mark.parametrize("args, message", [
    (["--seeds", "0,x"], "--seeds takes comma-separated integers"),
    (["--seeds", "1,1"], "--seeds must be distinct"),
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--seed", "1", "--seeds", "0,1"], "--seed is an option of bench (recall), without --seeds"),
    (["--workers", "0"], "--workers must be >= 1"),
    (["malmm", "--workers", "2"], "--workers is an option of bench (recall) only"),
])  # fmt: skip
def test_bad_seed_options_fail_in_one_line(run_cli, args, message):
    code, printed = run_cli("bench", "--quick", *args)
    assert code != 0 and message in printed and len(printed.strip().splitlines()) == 1


def test_baseline_sees_the_last_k_clips_end_to_end():
    clips = torch.arange(2 * 3 * 3 * 2 * 1 * 1, dtype=torch.uint8).view(2, 3, 3, 2, 1, 1)  # (V, N, C, T, H, W)
    labels = torch.tensor([1, 2])
    source = bench.source_for(bench.baseline(2), clips, labels)
    assert source.num_clips(0) == 1
    joined = source.videos[1][0]  # (C, 2T, H, W)
    assert torch.equal(joined[:, :2], clips[1, 1]) and torch.equal(joined[:, 2:], clips[1, 2])
    memory = bench.source_for(bench.memvit(1), clips, labels)
    assert memory.num_clips(0) == 3 and int(memory.targets(1)["label"]) == 2


def test_lmm_frames_are_every_strided_frame_in_order():
    spec = bench.MODES["quick"].spec
    clips = torch.randint(0, 256, (2, 3, 3, spec.clip_frames, 4, 4), dtype=torch.uint8)  # (V, N, C, T, H, W)
    frames = recall_lmm.as_frames(clips, spec, stride=2)
    expected = [clips[v, n, :, t].float() / 255 for v in range(2) for n in range(3) for t in range(0, spec.clip_frames, 2)]
    assert torch.equal(frames.pixels.flatten(0, 1), torch.stack(expected))
    seconds = [(n * spec.clip_frames + t) / spec.sample_fps for n in range(3) for t in range(0, spec.clip_frames, 2)]
    assert frames.timestamps[1].tolist() == seconds
    steps = list(recall_lmm.clip_steps(frames, spec.clip_frames // 2))
    assert len(steps) == 3 and torch.equal(steps[1].pixels, frames.pixels[:, 2:4])


def test_lmm_cue_frames_are_the_frames_that_change_with_the_cue_class():
    cfg = dataclasses.replace(bench.MODES["default"], train_scenes=8)
    clips, labels = bench.train_data(cfg)
    shown = recall_lmm.cue_frames(bench.train_cue_clips(cfg), cfg.num_clips, cfg.spec, stride=2)  # (V, F)
    assert shown.shape == (8, cfg.num_clips * cfg.spec.clip_frames // 2) and shown.sum(1).tolist() == [1] * 8
    for v, scene in enumerate(range(8)):  # the same scene with another cue class differs exactly on the cue frames
        other = recall_sample(scene, cfg.spec, cfg.num_clips, bench.train_distance(cfg, scene), cls=(int(labels[v]) + 1) % 4)
        other_clips = scene_clips(other.scene, cfg.spec, normalize=False)[None]
        a, b = (recall_lmm.as_frames(c, cfg.spec, stride=2).pixels[0] for c in (clips[v : v + 1], other_clips))
        assert torch.equal((a != b).flatten(1).any(1), shown[v])


def test_rewind_caption_loss_matches_a_loop_over_frames_and_captions():
    spec = bench.MODES["quick"].spec
    row = recall_lmm.rewind()
    model = recall_lmm.build(row, seed=0)
    clips = torch.randint(0, 256, (2, 3, 3, spec.clip_frames, spec.size, spec.size), generator=torch.Generator().manual_seed(0),
                          dtype=torch.uint8)  # (V, N, C, T, H, W)
    state = recall_lmm.Watcher(row, spec)(model, recall_lmm.as_frames(clips, spec, stride=2))  # 6 frames per video
    labels, shown = torch.tensor([2, 0]), torch.zeros(2, 6, dtype=torch.bool)
    shown[0, 3] = True  # video 1 shows no cue
    loss = recall_lmm.caption_loss(model, state, labels, shown, num_classes=4)
    captions = ["the red square flashes", "the green disk flashes", "the blue triangle flashes", "the yellow cross flashes",
                "an object flashes"]
    with torch.no_grad():
        texts = [model.select_query(model.pooled_text(*model.tokenize([c]))[0]) for c in captions]
        total = 0.0
        for b in range(2):
            tokens, _ = state.memory.frame_tokens(b)  # (6, N_W, D)
            for f in range(6):
                key = model.select_key(tokens[f].mean(0))
                for c, text in enumerate(texts):
                    logit = model.log_scale.exp() * torch.cosine_similarity(key, text, dim=0) + model.bias
                    match = bool(shown[b, f]) and c in (int(labels[b]), 4)
                    total += float(-torch.nn.functional.logsigmoid(logit if match else -logit))
    assert float(loss.detach()) == pytest.approx(total / 12, rel=1e-5)


def test_rewind_trains_stage_1_then_stage_2():
    spec = bench.MODES["quick"].spec
    row = recall_lmm.rewind().with_(stage1_steps=2, epochs=1, batch_size=2)
    model = recall_lmm.build(row, seed=0)
    clips = torch.randint(0, 256, (4, 2, 3, spec.clip_frames, spec.size, spec.size), generator=torch.Generator().manual_seed(1),
                          dtype=torch.uint8)
    shown = recall_lmm.cue_frames(torch.tensor([0, 1, 1, 0]), 2, spec, stride=2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    steps = []
    recall_lmm.train(row, model, recall_lmm.as_frames(clips, spec, 2), torch.tensor([0, 1, 2, 3]), spec, 0, shown,
                     on_step=steps.append)
    assert len(steps) == 2 + 2  # stage 1, then one epoch of 4 videos in batches of 2
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert {"select_key.weight", "memory_proj.weight", "separator"} <= changed  # stage 1's and stage 2's parts
    assert not any(n.startswith("encoder.") or (n.startswith("llm.") and "lora_" not in n) for n in changed)
    with pytest.raises(ValueError, match="frames that show the cue"):
        recall_lmm.train(row, model, recall_lmm.as_frames(clips, spec, 2), torch.tensor([0, 1, 2, 3]), spec, 0)


def test_reach_rule_and_seed_summary():
    chance = 25.0

    def run(seed, acc):
        return {"seed": seed, "rows": [{"model": "m", "family": "MeMViT", "reach_clips": 2, "support_s": 3.0, "params": 10,
                                        "accuracy": dict(zip(("1", "2", "4"), acc)), "cpu_seconds": {"train": 1.0}}]}

    cfg = bench.MODES["default"]
    row = bench.combine_runs([run(0, (100.0, 96.0, 25.0)), run(1, (98.0, 100.0, 31.0))], cfg)[0]
    assert row["accuracy"] == {"1": 99.0, "2": 98.0, "4": 28.0}
    assert row["accuracy_min"] == {"1": 98.0, "2": 96.0, "4": 25.0} and row["accuracy_max"]["4"] == 31.0
    assert row["cpu_seconds"] == {"train": 2.0} and row["params"] == 10
    assert row["check"] == ["d=4 beyond reach but 25.0-31.0"]  # 31 is more than 5 points off chance
    failing = bench.combine_runs([run(0, (100.0, 94.0, 25.0))], cfg)[0]
    assert failing["check"] == ["d=2 94.0 < 95"]
    assert bench.reach_check({**failing, "reach_clips": None, "accuracy_min": {"1": 100.0, "2": 100.0, "4": 90.0}}, chance) == ["d=4 90.0 < 95"]


def test_memvit_variants_use_the_shipped_recall_preset():
    spec = bench.MODES["default"].spec
    model = bench.memvit(4).build(spec)
    assert model.config == longvid.memvit.get_config("memvit_tiny_recall")
    assert model.config.reading_blocks == (model.config.depth - 1,)  # reach exactly M
    assert bench.memvit(2).reach == 2 and bench.baseline(5).reach == 4 and bench.short_term().reach == 0


def test_recall_preset_compression_starts_as_average_pooling():
    model = longvid.build_model("memvit_tiny_recall")
    attn = model.blocks[3].attn
    tokens = torch.randn(2, 1 + 2 * 2 * 2, attn.compress_k.in_channels)  # (B, cls + T*H*W, C)
    grid = tokens[:, 1:].reshape(2, 2, 2, 2, -1)  # (B, T, H, W, C)
    compressed = attn.compress_k(grid.permute(0, 4, 1, 2, 3))  # (B, C, 1, 2, 2)
    window = torch.nn.functional.pad(grid.permute(0, 4, 1, 2, 3), (1, 1, 1, 1, 3, 3))  # zero padding of the kernel
    kt, kh, kw = attn.compress_k.kernel_size
    for h in range(2):
        for w in range(2):  # each output: the mean over its 7x3x3 window (zeros outside the grid)
            expected = window[:, :, 0:kt, h : h + kh, w : w + kw].sum(dim=(2, 3, 4)) / (kt * kh * kw)
            assert torch.allclose(compressed[:, :, 0, h, w], expected, atol=1e-6)
    default = longvid.build_model("memvit_tiny")  # the released init elsewhere
    assert default.config.compress_init == "default" and default.blocks[0].attn.compress_k.weight.std() > 0


def test_recall_rows_start_linear_layers_at_fan_in_scale():
    spec = bench.MODES["default"].spec
    for model in (longvid.build_model("memvit_tiny_recall"), bench.baseline(5).build(spec), bench.memvit(2).build(spec)):
        linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        assert len(linears) == 4 * 6 + 2 + 1  # q, k, v, proj, fc1, fc2 per block, 2 width changes, the head
        for layer in linears:  # std 1 / sqrt(fan_in), not ViT's 0.02
            expected = layer.in_features**-0.5
            assert abs(layer.weight.std().item() / expected - 1) < 0.2, (layer, layer.weight.std().item(), expected)
    released = longvid.build_model("memvit_tiny")
    assert released.config.linear_init == "vit" and abs(released.head.projection.weight.std().item() - 0.02) < 0.004
    with pytest.raises(LongvidError, match="linear_init"):
        longvid.build_model("memvit_tiny", linear_init="xavier")


def test_training_memory_measurement_leaves_the_weights_alone():
    """The row's training-memory figure comes from one AdamW step, on a copy: the weights a run
    saves are the ones it evaluated."""
    model = bench.memvit(2).build(bench.MODES["default"].spec)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert measure.train_peak_mb(model, torch.randn(2, 3, 4, 32, 32), 4) > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
