from dataclasses import replace

import pytest
import torch

from longvid.malmm.bench import QA_WORDS, MALMMBenchSpec, build_system, format_table, run_malmm_bench, system_view, video_frames
from longvid.data.synth import recall_sample, scene_clips
from longvid.errors import LongvidError
from longvid.core.llm import CausalLM
from longvid.core.tiny import save_tiny_llm
from longvid.engine.config import TrainConfig

torch.set_num_threads(1)  # tiny tensors: threads only contend on a shared machine

SMALL = MALMMBenchSpec(
    num_clips=3, clip_frames=2, distances=(1,), memory_length=2, last_frames=2, train_videos=8, test_videos=4,
    systems=("malmm", "last", "concat"), train=TrainConfig(batch_size=4, epochs=1, lr=1e-3, weight_decay=0.0),
)


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    return run_malmm_bench(SMALL, work_dir=str(tmp_path_factory.mktemp("bench")), log=None)


def test_rows_describe_each_system(rows):
    assert [r["system"] for r in rows] == ["malmm", "last", "concat"]
    keys = {"system", "memory", "frames_seen", "llm_visual_tokens", "memory_bytes", "memory_tokens", "accuracy", "chance", "final_loss", "train_seconds", "test_videos"}
    assert all(set(r) == keys for r in rows)
    malmm, last, concat = rows
    Q, H, Nv, layers = 8, 64, 17, 4  # malmm_tiny Q-Former; 32 px CLIP with 8 px patches: 16 patches + CLS
    assert (malmm["memory"], malmm["frames_seen"], malmm["llm_visual_tokens"]) == ("L=2", 6, Q)
    assert malmm["memory_tokens"] == 2 * Nv + layers * 2 * Q  # both banks compressed to L = 2 slots
    assert (last["memory"], last["frames_seen"], last["llm_visual_tokens"]) == ("none", 2, 2 * Q)
    assert (concat["frames_seen"], concat["llm_visual_tokens"]) == (6, 6 * Q)
    assert last["memory_bytes"] == 2 * Q * H * 4 + 8 and concat["memory_bytes"] == 6 * Q * H * 4 + 8  # queries + frames_seen
    assert malmm["memory_bytes"] > concat["memory_bytes"] > last["memory_bytes"]
    for r in rows:
        assert r["chance"] == 25.0 and r["test_videos"] == 4
        assert r["accuracy"] in {0.0, 25.0, 50.0, 75.0, 100.0}
        assert r["final_loss"] > 0 and r["train_seconds"] > 0


def test_table_has_a_line_per_system(rows):
    lines = format_table(rows).splitlines()
    assert len(lines) == 2 + len(rows)
    assert lines[0].split()[:2] == ["system", "memory"]
    assert lines[2].startswith("malmm") and "L=2" in lines[2]


def test_last_frames_baseline_cannot_see_the_cue():
    frames, sample = video_frames(5, SMALL)
    assert frames.shape == (6, 3, 32, 32) and sample.distance == 1
    view = system_view("last", frames[None], SMALL)[0]
    other = sample.label + 1 if sample.label + 1 < SMALL.num_classes else 0
    clips = scene_clips(recall_sample(5, SMALL.synth(), 3, 1, cls=other).scene, SMALL.synth(), normalize=False)
    other_frames = clips.permute(0, 2, 1, 3, 4).flatten(0, 1).float() / 255  # (T, 3, H, W), another cue class
    assert torch.equal(view, other_frames[-2:]) and not torch.equal(frames, other_frames)


def test_question_can_go_to_the_qformer_too(tmp_path):
    llm = CausalLM.from_pretrained(save_tiny_llm(str(tmp_path), words=QA_WORDS, init_std=0.5))
    model = build_system("malmm", replace(SMALL, qformer_instruction=True), 48, llm)
    ids, mask = model.tokenize_instructions(["Which object flashed in the video?"])
    assert ids.shape == (1, 8) and int(mask.sum()) == 8 and 1 not in ids.tolist()[0]  # <s> + 7 known tokens, no <unk>
    assert torch.isfinite(model.loss(torch.randn(1, 6, 17, 48), ["Which object flashed in the video?"], ["blue triangle"]))
    assert build_system("malmm", SMALL, 48, llm).tokenize_instructions(["x"])[0].shape == (1, 0)  # no instruction


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(memory_length=6), "memory_length"),
        (dict(systems=("malmm", "gru")), "unknown system"),
        (dict(last_frames=0), "last_frames"),
        (dict(distances=(0, 1)), "distances"),
    ],
)
def test_bad_specs_are_user_errors(change, message):
    with pytest.raises(LongvidError, match=message):
        run_malmm_bench(replace(SMALL, **change), log=None)


def test_cli_bench_malmm_rejects_recall_only_options(capsys):
    from longvid.cli import main

    assert main(["bench", "malmm", "--full"]) == 1
    assert "bench malmm takes --quick, --out and --quiet only" in capsys.readouterr().err
