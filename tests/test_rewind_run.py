"""``longvid train/eval rewind_tiny`` on the papers' annotation files, with generated videos
named as the data sets name them; metrics checked against naive computations."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from longvid.cli import main
from longvid.errors import LongvidError
from longvid.rewind import run as rewind_run
from longvid.video import write_video

torch.set_num_threads(1)  # tiny tensors: threads only contend on a shared machine

VIDEOS = {"AO8RW": 9, "3MSZA": 7, "Y6R7T": 10}  # Charades ids -> seconds (4 fps)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Videos (Charades-style ids, plus the other sets' names as copies) and annotation files."""
    root = tmp_path_factory.mktemp("rewind")
    videos = root / "videos"
    videos.mkdir()
    rng = np.random.default_rng(0)
    for name, seconds in VIDEOS.items():
        levels = rng.integers(0, 255, (seconds * 4, 3))
        write_video(str(videos / f"{name}.mp4"), (np.broadcast_to(c, (32, 40, 3)).astype(np.uint8).copy() for c in levels), fps=4)
    for alias, source in (("v_QOlSCBRmfWY", "Y6R7T"), ("v_k_ZXmr8pmrs", "AO8RW"), ("1", "3MSZA")):
        os.link(videos / f"{source}.mp4", videos / f"{alias}.mp4")
    os.link(videos / "AO8RW.mp4", videos / "12090392@N02_13482799053_87ef417396.mp4")  # DiDeMo, converted to mp4
    files = {
        "charades_train": "AO8RW 0.0 6.9##a person is putting a book on a shelf.\n3MSZA 2.3 5.4##person turn a light on.\n"
                          "Y6R7T 4.0 9.2##a person opens the door.\n",
        "charades_test": "AO8RW 1.5 4.0##person sits down.\nY6R7T 0.0 3.0##a person is eating.\n3MSZA 3.0 7.0##person walks.\n",
        "didemo": json.dumps([{"description": "the man looks away.", "reference_description": None,
                               "times": [[0, 0], [1, 1], [0, 0], [0, 1]], "video": "12090392@N02_13482799053_87ef417396.mov",
                               "annotation_id": 1, "num_segments": 6}], indent=1),
        "activitynet": json.dumps({"v_QOlSCBRmfWY": {"duration": 10.0, "timestamps": [[0.8, 4.9], [3.4, 12.0]],
                                                     "sentences": ["a woman stands.", " she dances."]}}, indent=1),
        "videochatgpt": json.dumps([{"q": "what is the man doing?", "a": "the man is opening a door.", "video_id": "v_k_ZXmr8pmrs"},
                                    {"q": "what color is it?", "a": "red", "video_id": "v_QOlSCBRmfWY"}], indent=1),
        "captions": json.dumps([{"video": "AO8RW.mp4", "caption": "a red square"},
                                {"video": "3MSZA.mp4", "caption": "a blue circle", "start": 1.0, "end": 5.0}], indent=1),
    }
    paths = {}
    for name, text in files.items():
        suffix = ".txt" if name.startswith("charades") else ".json"
        paths[name] = root / f"{name}{suffix}"
        paths[name].write_text(text)
    movie = root / "moviechat"
    movie.mkdir()
    (movie / "1.json").write_text(json.dumps({
        "info": {"video_path": "1.mp4", "url": "", "class": "movie", "num_frame": 210, "fps": 30, "w": 40, "h": 32},
        "global": [{"question": "what color is the wall?", "answer": "white"}, {"question": "is there a door?", "answer": "yes"}],
        "breakpoint": [{"time": 60, "question": "what is the man doing?", "answer": "sitting"},
                       {"time": 150, "question": "how many people are there?", "answer": "two"}],
        "caption": "a man sits."}, indent=1))
    paths["moviechat"] = movie
    paths["videos"], paths["root"] = videos, root
    return paths


def naive_grounding(rows: list[dict]) -> dict:
    """R@0.3/0.5/0.7 and mIoU (%) from predictions.jsonl rows, by plain loops."""
    ious = []
    for row in rows:
        (ps, pe), (ts, te) = row["prediction"], row["target"]
        inter = max(0.0, min(pe, te) - max(ps, ts))
        union = max(0.0, pe - ps) + (te - ts) - inter
        ious.append(inter / union if union > 0 else 0.0)
    result = {f"R@{t}": 100.0 * sum(i >= t for i in ious) / len(ious) for t in (0.3, 0.5, 0.7)}
    result["mIoU"] = 100.0 * sum(ious) / len(ious)
    return result


def read_rows(path) -> list[dict]:
    return [json.loads(line) for line in open(path)]


def test_cli_trains_and_evaluates_on_charades_sta(work, run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the CLI processes too
    out = tmp_path / "D"
    common = [f"video_root={work['videos']}", f"out_dir={out}"]
    code, printed = run_cli("train", "rewind_tiny", "stage=grounding", f"data={work['charades_train']}",
                            f"val_data={work['charades_test']}", "max_steps=4", *common)
    assert code == 0, printed
    assert "Traceback" not in printed and "\r" not in printed
    assert "charades_sta, 3 rows, 3 videos: 3 found, 0 missing" in printed and "trained 4 steps" in printed
    records = [json.loads(line) for line in open(out / "log.jsonl")]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]
    assert [r["step"] for r in records if "val" in r] == [1, 2, 3, 4]  # val_data: after every epoch (1 step each)
    assert (out / "step_00000004.safetensors").exists() and len(os.listdir(out / "features")) == 3
    assert json.loads((out / "rewind.json").read_text())["stages"] == ["grounding"]

    code, printed = run_cli("eval", "rewind_tiny", f"val_data={work['charades_test']}", *common)
    assert code == 0, printed
    metrics = json.loads((out / "metrics.json").read_text())
    rows = read_rows(out / "predictions.jsonl")
    assert metrics["samples"] == 3 and [r["where"].rsplit(":", 1)[1] for r in rows] == ["1", "2", "3"]
    for key, value in naive_grounding(rows).items():
        assert metrics[key] == pytest.approx(value, abs=1e-9), key

    # The batched eval (2 padded streams a step, cached 1-fps features) predicts what the model
    # says for each video streamed alone from its file, as `longvid ask` reads it.
    from longvid.rewind.weights import load_weights
    from longvid.core.stream import Frames
    from longvid.video import ClipReader

    assert metrics["weights"] == str(out / "rewind_best.safetensors")  # val_data in training: the best epoch's
    model = load_weights(metrics["weights"]).eval()
    for row in rows:
        state = model.init_state(1, instructions=[row["query"]])
        with torch.no_grad():
            for clip in ClipReader(row["video"], clip_frames=model.config.clip_frames, fps=1.0, short_side=None, crop=None,
                                   mean=None, std=None):
                _, state = model(Frames(clip.frames.transpose(0, 1)[None, : clip.num_valid], clip.timestamps[None, : clip.num_valid]), state)
            assert model.ground(state, [row["query"]])[0].tolist() == pytest.approx(row["prediction"], abs=1e-9)


def test_moviechat_trains_and_evaluates_global_and_breakpoint(work, run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "M"
    common = ["stage=2", "max_new_tokens=4", f"video_root={work['videos']}", f"out_dir={out}"]
    history = rewind_run.train("rewind_tiny", [f"data={work['moviechat']}", "max_steps=2", *common], progress=False)
    assert [r["step"] for r in history] == [1, 2] and all(np.isfinite(r["loss"]) for r in history)

    code, printed = run_cli("eval", "rewind_tiny", f"val_data={work['moviechat']}", *common)
    assert code == 0, printed
    assert "moviechat, 4 rows, 1 videos: 1 found" in printed
    rows = read_rows(out / "predictions.jsonl")
    assert [(r["group"], r["until"]) for r in rows] == [("global", None), ("global", None), ("breakpoint", 2.0), ("breakpoint", 5.0)]
    # Each answer is what `longvid ask` (--time for breakpoints: the file read only up to then) says.
    from longvid.rewind.ask import ask_rewind
    from longvid.rewind.weights import load_weights

    model = load_weights(out / "rewind.safetensors")
    assert len({r["prediction"] for r in rows}) > 1  # the tiny LLM says different things: the check below can fail
    for row in rows:
        assert ask_rewind(row["video"], row["question"], model, until=row["until"], max_new_tokens=4).text == row["prediction"]

    # Answers equal to what the model says on rows 0 and 2 (normalisation: case, articles,
    # punctuation), so global and breakpoint accuracy are each 50 %.
    movie = json.loads((work["moviechat"] / "1.json").read_text())
    movie["global"][0]["answer"] = "The " + rows[0]["prediction"].upper() + "!"
    movie["breakpoint"][0]["answer"] = rows[2]["prediction"] + "."
    movie["global"][1]["answer"] = rows[1]["prediction"] + " not"
    movie["breakpoint"][1]["answer"] = rows[3]["prediction"] + " never"
    crafted = tmp_path / "crafted" / "1.json"
    crafted.parent.mkdir()
    crafted.write_text(json.dumps(movie))
    metrics = rewind_run.evaluate("rewind_tiny", [f"val_data={crafted.parent}", *common], progress=False)
    assert (metrics["accuracy_global"], metrics["accuracy_breakpoint"], metrics["accuracy"]) == (50.0, 50.0, 50.0)
    assert json.loads((out / "metrics.json").read_text())["accuracy"] == 50.0
    assert "GPT" in metrics["metric"]


def test_breakpoint_questions_see_only_the_frames_before_their_time():
    features, times = torch.randn(7, 3, 2), torch.arange(7, dtype=torch.float64) + 0.5
    seen, at = rewind_run.upto((features, times), 3.0)
    assert at.tolist() == [0.5, 1.5, 2.5] and torch.equal(seen, features[:3])
    assert rewind_run.upto((features, times), None)[1] is times


@pytest.mark.parametrize("name, stage", [("didemo", "grounding"), ("activitynet", "grounding"), ("videochatgpt", "2"),
                                         ("captions", "1"), ("activitynet", "1")])
def test_every_data_set_trains_and_evaluates(work, tmp_path, name, stage):
    common = [f"stage={stage}", "max_new_tokens=4", f"video_root={work['videos']}", f"out_dir={tmp_path}"]
    history = rewind_run.train("rewind_tiny", [f"data={work[name]}", "max_steps=1", *common], progress=False)
    assert len(history) == 1 and np.isfinite(history[0]["loss"])
    if name == "captions":
        with pytest.raises(LongvidError, match="caption pairs"):
            rewind_run.evaluate("rewind_tiny", [f"val_data={work[name]}", *common], progress=False)
        return
    metrics = rewind_run.evaluate("rewind_tiny", [f"val_data={work[name]}", *common], progress=False)
    rows = read_rows(tmp_path / "predictions.jsonl")
    if name == "videochatgpt":
        assert metrics["accuracy"] == 100.0 * sum(r["correct"] for r in rows) / len(rows)
        assert [r["answer"] for r in rows] == ["the man is opening a door.", "red"]
    else:
        assert all(metrics[k] == pytest.approx(v, abs=1e-9) for k, v in naive_grounding(rows).items())
        assert [r["target"] for r in rows] == ([[0.0, 5.0]] if name == "didemo" else [[0.8, 4.9], [3.4, 10.0]])


def test_stages_chain_and_resume_repeats_the_lost_step(work, tmp_path):
    first = tmp_path / "s1"
    rewind_run.train("rewind_tiny", ["stage=1", f"data={work['captions']}", f"video_root={work['videos']}",
                                     "max_steps=1", f"out_dir={first}"], progress=False)
    args = ["stage=grounding", f"data={work['charades_train']}", f"video_root={work['videos']}", "max_steps=3",
            "checkpoint_every=1", f"init={first / 'rewind.safetensors'}", f"out_dir={tmp_path / 'g'}",
            f"feature_cache={tmp_path / 'cache'}"]
    whole = rewind_run.train("rewind_tiny", args, progress=False)
    assert json.loads((tmp_path / "g" / "rewind.json").read_text())["stages"] == ["1", "grounding"]
    for suffix in (".safetensors", ".json"):
        os.remove(tmp_path / "g" / f"step_00000003{suffix}")
    resumed = rewind_run.train("rewind_tiny", args, resume=True, progress=False)
    assert [r["step"] for r in resumed] == [3] and resumed[0]["loss"] == whole[2]["loss"]
    assert [json.loads(line)["step"] for line in open(tmp_path / "g" / "log.jsonl")] == [1, 2, 3]


def test_missing_videos_are_counted_then_refused_or_skipped(work, tmp_path, capsys):
    listed = tmp_path / "charades_sta_train.txt"
    listed.write_text(work["charades_train"].read_text() + "ZZZZZ 1.0 2.0##gone.\n")
    args = ["train", "rewind_tiny", f"data={listed}", f"video_root={work['videos']}", "max_steps=1", f"out_dir={tmp_path}"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "4 videos: 3 found, 1 missing" in err and err.strip().endswith("ZZZZZ.mp4 not found (missing=skip trains on the rest)")
    assert main([*args, "missing=skip", "--quiet"]) == 0


@pytest.mark.parametrize("override, message", [
    ("stage=3", "stage must be 1, 2 or grounding"), ("lr=0", "lr must be"), ("colour=red", "unknown field 'colour' for rewind_tiny"),
    ("grounding_prompt=when", "must contain {query}"), ("format=srt", "format must be auto or one of"),
    ("encoder=/no/such/tower", "encoder=/no/such/tower: no such file or folder"), ("init=w.json", "init must be a ReWind .safetensors"),
    ("model=rewind_paper", "model rewind_paper needs encoder= and llm="),
])
def test_bad_config_is_one_line(work, capsys, override, message):
    assert main(["train", "rewind_tiny", f"data={work['charades_train']}", override]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_stage_and_data_must_agree(work, tmp_path, capsys):
    assert main(["train", "rewind_tiny", "stage=2", f"data={work['charades_train']}", f"video_root={work['videos']}",
                 f"out_dir={tmp_path}", "--quiet"]) == 1
    assert "stage=2 trains on qa data" in capsys.readouterr().err


def test_a_run_on_local_parts_answers_in_stream(work, tmp_path, capsys):
    """Train on a SigLIP tower and a Qwen2 LM saved locally (encoder= / llm= by path); `stream --ask`
    then answers with the run's weights, and refuses the same preset without them."""
    from longvid.core.tiny import save_tiny_llm, save_tiny_vision

    with torch.random.fork_rng(devices=[]):
        vision = save_tiny_vision(str(tmp_path / "siglip"), arch="siglip", image_size=32, patch=8, hidden=32)
        llm = save_tiny_llm(str(tmp_path / "qwen2"), arch="qwen2", hidden=64, layers=1)
    out = tmp_path / "run"
    rewind_run.train("rewind_tiny", ["stage=grounding", f"data={work['charades_train']}", f"video_root={work['videos']}",
                                     "max_steps=1", f"encoder={vision}", f"llm={llm}", f"out_dir={out}"], progress=False)
    assert json.loads((out / "rewind.json").read_text())["llm"] == llm
    video = str(work["videos"] / "AO8RW.mp4")
    stream = ["stream", video, "--model", "rewind_tiny", "--encoder", vision, "--llm", llm, "--ask", "what is it?", "--quiet"]
    assert main([*stream, "--out", str(tmp_path / "none.jsonl")]) == 1
    assert "needs trained weights" in capsys.readouterr().err
    assert main([*stream, "--checkpoint", str(out / "rewind.safetensors"), "--out", str(tmp_path / "a.jsonl")]) == 0
    answers = [json.loads(line) for line in open(tmp_path / "a.jsonl")]
    assert any("answer" in r and r["question"] == "what is it?" for r in answers)
    capsys.readouterr()
    # ask needs only the weights: their record names the preset and the frozen parts
    assert main(["ask", video, "what is it?", "--model", "rewind", "--weights", str(out / "rewind.safetensors"), "--json",
                 "--max-new-tokens", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["frames_seen"] == VIDEOS["AO8RW"]  # 1 fps


def test_bfloat16_backbones_train_and_evaluate_under_autocast(work, tmp_path):
    """backbone_dtype=bfloat16 (a 7B LLM in half the memory): frozen weights bf16, trained ones float32."""
    common = ["stage=grounding", "backbone_dtype=bfloat16", f"video_root={work['videos']}", f"out_dir={tmp_path}"]
    config = rewind_run.load_run_config("rewind_tiny", common)
    model, _ = rewind_run.build_run_model(config)
    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    assert all(d == torch.bfloat16 for n, d in dtypes.items() if n.startswith(("encoder.", "llm.")) and "lora_" not in n)
    assert all(d == torch.float32 for n, d in dtypes.items() if not n.startswith(("encoder.", "llm.")) or "lora_" in n)
    history = rewind_run.train("rewind_tiny", [f"data={work['charades_train']}", "max_steps=2", *common], progress=False)
    assert all(np.isfinite(r["loss"]) for r in history)
    metrics = rewind_run.evaluate("rewind_tiny", [f"val_data={work['charades_test']}", *common], progress=False)
    assert metrics["samples"] == 3 and 0 <= metrics["mIoU"] <= 100
    assert rewind_run.load_run_config("rewind_tiny", ["backbone_dtype=bfloat16"]).train_config().amp == "bf16"
    with pytest.raises(LongvidError, match="amp must be auto or bf16"):
        rewind_run.load_run_config("rewind_tiny", ["backbone_dtype=bfloat16", "amp=off"])


def test_relevance_cut_is_a_run_option(work, tmp_path):
    """``relevance_cut=true`` gives the run's model the DFS with the cut; a VideoChatGPT stage-2 step and its
    evaluation run with it."""
    plain, _ = rewind_run.build_run_model(rewind_run.load_run_config("rewind_tiny"))
    assert not plain.selector.cut
    common = ["stage=2", "max_new_tokens=4", "relevance_cut=true", f"video_root={work['videos']}", f"out_dir={tmp_path}"]
    config = rewind_run.load_run_config("rewind_tiny", common)
    model, _ = rewind_run.build_run_model(config)
    assert model.selector.cut and model.selector.top_l == model.config.top_l
    history = rewind_run.train("rewind_tiny", [f"data={work['videochatgpt']}", "max_steps=1", *common], progress=False)
    assert len(history) == 1 and np.isfinite(history[0]["loss"])
    metrics = rewind_run.evaluate("rewind_tiny", [f"val_data={work['videochatgpt']}", *common], progress=False)
    assert 0.0 <= metrics["accuracy"] <= 100.0


def test_exact_match_ignores_case_punctuation_and_articles():
    assert rewind_run.strip_punctuation_and_articles("The man opens  a DOOR, then-an apple!") == "man opens door thenan apple"
    assert rewind_run.exact_match("A red ball.", "red ball") and not rewind_run.exact_match("red balls", "red ball")


def test_quirky_rows_are_skipped_and_named_and_intervals_cut_to_the_video(work, run_cli, tmp_path, monkeypatch):
    """Issue 29: the released charades_sta_train.txt has lines with start >= end (line 8252 begins
    ``LEOL6 8.0 7.0##``; its sentence is not reproduced here) and queries that end past the video.
    ``longvid train`` skips and names the first, cuts the second, and trains; ``strict=true`` refuses."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    data = tmp_path / "charades_sta_train.txt"
    data.write_text(work["charades_train"].read_text() + "LEOL6 8.0 7.0##a person is sitting in a chair.\n"
                    "AO8RW 6.0 10.5##person walks out.\n")  # AO8RW lasts 9 s
    out = tmp_path / "Q"
    common = [f"video_root={work['videos']}", f"out_dir={out}"]
    code, printed = run_cli("train", "rewind_tiny", "stage=grounding", f"data={data}", "max_steps=2", *common)
    assert code == 0, printed
    summary = [line for line in printed.splitlines() if line.startswith("train data ")]
    assert summary == [f"train data {data}: charades_sta, 4 rows, 3 videos: 3 found, 0 missing; skipped 1 row that cannot "
                       "be used (strict=true refuses the file): charades_sta_train.txt:4 (start 8 >= end 7); "
                       "1 interval cut to the video's duration"], printed
    assert "trained 2 steps" in printed

    code, printed = run_cli("train", "rewind_tiny", "stage=grounding", f"data={data}", "max_steps=2", "strict=true", *common)
    assert code == 1 and printed.strip().splitlines()[-1].endswith(
        "charades_sta_train.txt:4: the interval must have start < end, got 8 7"), printed

    # eval: targets cut to the video, predictions inside [0, duration]
    metrics = rewind_run.evaluate("rewind_tiny", [f"val_data={data}", *common], progress=False)
    rows = read_rows(out / "predictions.jsonl")
    assert metrics["samples"] == 4 and [r["where"].rsplit(":", 1)[1] for r in rows] == ["1", "2", "3", "5"]
    assert rows[3]["target"] == [6.0, 9.0]
    for row in rows:
        seconds = VIDEOS[os.path.basename(row["video"])[:-4]]
        assert 0.0 <= row["prediction"][0] <= row["prediction"][1] <= seconds, row


def test_predictions_are_cut_to_the_video(work, tmp_path, monkeypatch):
    """A prediction reaching past the video's end (or before 0) is cut to it before scoring."""
    common = [f"video_root={work['videos']}", f"out_dir={tmp_path}"]
    rewind_run.train("rewind_tiny", ["stage=grounding", f"data={work['charades_test']}", "max_steps=1", *common], progress=False)
    from longvid.rewind.model import ReWind

    def too_wide(self, state, questions, until=None):
        return torch.tensor([[-3.0, 99.0]] * len(questions), dtype=torch.float64)

    monkeypatch.setattr(ReWind, "ground", too_wide)
    rewind_run.evaluate("rewind_tiny", [f"val_data={work['charades_test']}", *common], progress=False)
    rows = read_rows(tmp_path / "predictions.jsonl")
    assert [r["prediction"] for r in rows] == [[0.0, float(VIDEOS[os.path.basename(r["video"])[:-4]])] for r in rows]


def test_span_scores_are_the_pointer_scores_of_each_span():
    """A span's score is log p(start = its first frame) + log p(end = its last frame); over all frame
    spans the best is best_span's; a span holding no frame scores -inf."""
    from longvid.rewind.grounding import best_span, span_scores

    generator = torch.Generator().manual_seed(0)
    logits, times = torch.randn(2, 7, generator=generator), torch.arange(7, dtype=torch.float64) + 0.5  # 1 fps, 7 s
    spans = torch.tensor([[a, b + 1.0] for a in range(7) for b in range(a, 7)] + [[7.0, 12.0], [2.2, 2.4]], dtype=torch.float64)
    scores = span_scores(logits, times, spans)
    log_p = logits.log_softmax(-1)
    for (start, end), score in zip(spans.tolist(), scores.tolist()):
        inside = [i for i, t in enumerate(times.tolist()) if start <= t < end]
        expected = float(log_p[0, inside[0]] + log_p[1, inside[-1]]) if inside else float("-inf")
        assert score == pytest.approx(expected, abs=1e-6)
    first, last = best_span(logits)
    assert spans[int(scores.argmax())].tolist() == [float(first), float(last) + 1.0]
    assert scores[-2:].tolist() == [float("-inf")] * 2


@pytest.fixture()
def didemo(work, tmp_path):
    """Two moments of LocalizingMoments' train_data.json (times unchanged), their videos converted to mp4."""
    videos = tmp_path / "didemo_videos"
    videos.mkdir()
    os.link(work["videos"] / "AO8RW.mp4", videos / "12090392@N02_13482799053_87ef417396.mp4")  # 9 s
    os.link(work["videos"] / "Y6R7T.mp4", videos / "21574226@N00_2952305418_f51d7c8b2a.mp4")  # 10 s
    path = tmp_path / "val_data.json"
    from test_rewind_data import DIDEMO  # the two official rows

    path.write_text(json.dumps(json.loads(DIDEMO)))  # one line, as the released file
    return path, videos


def test_didemo_eval_prints_its_own_rank_and_miou(didemo, run_cli, tmp_path, monkeypatch):
    """``longvid eval`` on DiDeMo ranks its 21 proposals by the grounding pointers' span scores and
    prints Rank@1, Rank@5 and mIoU as LocalizingMoments' eval computes them, beside R@IoU."""
    from test_metrics import naive_didemo

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path, videos = didemo
    common = [f"video_root={videos}", f"out_dir={tmp_path / 'D'}"]
    code, printed = run_cli("train", "rewind_tiny", "stage=grounding", f"data={path}", "max_steps=1", *common)
    assert code == 0, printed
    code, printed = run_cli("eval", "rewind_tiny", f"val_data={path}", *common)
    assert code == 0, printed
    line = next(line for line in printed.splitlines() if line.startswith("R@0.3 "))
    assert "Rank@1 " in line and "Rank@5 " in line and "didemo_mIoU " in line
    metrics = json.loads((tmp_path / "D" / "metrics.json").read_text())
    rows = read_rows(tmp_path / "D" / "predictions.jsonl")
    assert [r["times"] for r in rows] == [[[0, 0], [3, 3], [0, 0], [0, 1]], [[1, 2], [1, 2], [1, 1], [2, 2]]]
    naive = naive_didemo(rows and [r["proposals"] for r in rows], [r["times"] for r in rows])
    assert (metrics["Rank@1"], metrics["Rank@5"], metrics["didemo_mIoU"]) == pytest.approx(
        (naive["Rank@1"], naive["Rank@5"], naive["mIoU"]), abs=1e-9)
    for key, value in naive_grounding(rows).items():
        assert metrics[key] == pytest.approx(value, abs=1e-9), key
    for row, seconds in zip(rows, (9, 10)):
        assert sorted(map(tuple, row["proposals"])) == sorted(didemo_proposals_list())
        # spans past the video's end hold no frame: ranked last, in the proposals' order
        past = [p for p in row["proposals"] if p[0] * 5 >= seconds]
        assert row["proposals"][-len(past):] == [list(p) for p in didemo_proposals_list() if p[0] * 5 >= seconds]
    # the ranking is the model's span scores' order
    from longvid.rewind.weights import load_weights

    config = rewind_run.load_run_config("rewind_tiny", [f"val_data={path}", *common])
    model = load_weights(metrics["weights"]).eval()
    data = rewind_run.read_checked(config, str(path), "eval", None)
    features = rewind_run.feature_files(config, model)
    for item, row in zip(data.items, rows):
        state = rewind_run.watch(model, [rewind_run._read(features, model, 1.0, item.video)], [item.text])
        scores = model.score_spans(state, [item.text], rewind_run.didemo_spans()[1])[0].tolist()
        ranked = [scores[didemo_proposals_list().index(tuple(p))] for p in row["proposals"]]
        assert ranked == sorted(ranked, reverse=True)


def didemo_proposals_list():
    from longvid.eval.metrics import didemo_proposals

    return didemo_proposals()


def test_train_evaluates_val_data_every_epoch_and_keeps_the_best(work, run_cli, tmp_path, monkeypatch):
    """``longvid train rewind_tiny ... val_data=F epochs=2``: after each epoch the val metrics go to
    log.jsonl; the best epoch by mIoU (the first of equals) is kept in rewind_best.safetensors
    (its weights are that step's) with best.json, and ``longvid eval`` uses it. Training is the
    same as without validation."""
    from safetensors.torch import load_file

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "V"
    args = ["stage=grounding", f"data={work['charades_train']}", f"val_data={work['charades_test']}", "batch_size=1",
            "epochs=2", "max_steps=6", "checkpoint_every=1", f"video_root={work['videos']}"]
    code, printed = run_cli("train", "rewind_tiny", *args, f"out_dir={out}")
    assert code == 0, printed
    assert "val data " in printed and "epoch 1 (step 3) val: R@0.3 " in printed and "epoch 2 (step 6) val: " in printed
    records = [json.loads(line) for line in open(out / "log.jsonl")]
    val = [r for r in records if "val" in r]
    assert [(r["step"], r["epoch"]) for r in val] == [(3, 1), (6, 2)] and all(r["val"]["samples"] == 3 for r in val)
    scores = [r["val"]["mIoU"] for r in val]
    best = json.loads((out / "best.json").read_text())
    assert best["criterion"] == "mIoU" and best["score"] == max(scores) and best["step"] == val[scores.index(max(scores))]["step"]
    assert f"best validation epoch {best['epoch']} (step {best['step']}, mIoU " in printed
    kept, final = load_file(out / "rewind_best.safetensors"), load_file(out / "rewind.safetensors")
    trained = [name for name in kept if name in final and not name.startswith(("text_head", "video_head", "logit"))]
    same = [torch.equal(kept[name], final[name]) for name in trained]
    assert all(same) if best["step"] == 6 else not all(same)  # the weights of the best step, not the last's
    code, printed = run_cli("eval", "rewind_tiny", f"val_data={work['charades_test']}", f"video_root={work['videos']}", f"out_dir={out}")
    assert code == 0, printed
    assert "the best validation epoch" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["weights"] == str(out / "rewind_best.safetensors")
    assert {k: metrics[k] for k in ("R@0.3", "R@0.5", "R@0.7", "mIoU")} == {k: best["metrics"][k] for k in ("R@0.3", "R@0.5", "R@0.7", "mIoU")}

    code, printed = run_cli("train", "rewind_tiny", *args, "eval_every_epoch=false", f"out_dir={tmp_path / 'P'}", "--quiet")
    assert code == 0, printed
    plain = [json.loads(line) for line in open(tmp_path / "P" / "log.jsonl")]
    assert [r["loss"] for r in plain] == [r["loss"] for r in records if "loss" in r]
    assert not (tmp_path / "P" / "best.json").exists()


def test_a_best_metric_the_val_data_lacks_is_refused_before_training(work, tmp_path, capsys):
    args = ["train", "rewind_tiny", f"data={work['charades_train']}", f"val_data={work['charades_test']}",
            f"video_root={work['videos']}", f"out_dir={tmp_path}", "best_metric=Rank@1", "--quiet"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "best_metric=Rank@1" in err and "R@0.3, R@0.5, R@0.7, mIoU" in err
    assert not (tmp_path / "log.jsonl").exists()
