import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import longvid
from longvid.data.synth import write_demo_video
from conftest import longvid_script, wait_until_blocked_opening_a_fifo
from longvid.cli import main
from longvid.data.labels import load_labels
from longvid.outputs import read_records
from longvid.predict import StreamSettings, expand_videos, run_stream, stream_predictions
from longvid.video import ClipReader

SETTINGS = StreamSettings(clip_frames=16, stride=2, size=64, topk=3, keep_scores=True, background=False)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return longvid.build_model("memvit_tiny").eval()


@pytest.fixture(scope="module")
def clips_videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stream")
    paths = []
    for i, seconds in enumerate([5.0, 3.0, 4.0]):
        path = folder / f"video{i}.mp4"
        write_demo_video(path, seconds=seconds, width=80, height=64, seed=i)
        paths.append(str(path))
    return paths


def clip_scores(records, video):
    return [np.array(r["scores"]) for r in records if r.get("video") == video and "clip" in r]


def test_online_equivalence_with_manual_model_calls(model, clips_videos):
    video = clips_videos[0]
    records = list(stream_predictions(model, video, SETTINGS))
    state = model.init_state(1)
    manual = []
    with torch.inference_mode():
        for clip in ClipReader(video, clip_frames=16, stride=2, short_side=64, crop=64):
            logits, state = model(clip.frames[None], state)
            manual.append(torch.softmax(logits.float(), -1).double()[0].numpy())  # as the stream computes them
    streamed = clip_scores(records, video)
    assert len(streamed) == len(manual) == 5  # ceil(150 / 32)
    for a, b in zip(streamed, manual):
        np.testing.assert_array_equal(a, b)
    assert records[-1] == {"video": video, "status": "done", "clips": 5, "seconds": records[-1]["seconds"]}


def test_memory_isolation_alone_after_another_and_batched(model, clips_videos):
    a, b, c = clips_videos
    exact = StreamSettings(**{**SETTINGS.__dict__, "topk": 10})

    def scores_of(videos, batch_streams):
        out = {}
        for r in stream_predictions(model, videos, exact, batch_streams=batch_streams):
            if "clip" in r:
                out.setdefault(r["video"], []).append(r["scores"])
        return out

    alone = scores_of([b], 1)[b]
    assert scores_of([a, b], 1)[b] == alone  # after another video: bit-identical
    beside_a = scores_of([a, b], 2)[b]
    assert scores_of([c, b], 2)[b] == beside_a  # batched: the neighbour stream cannot change B's bits
    # Batched vs alone differs only by float rounding: PyTorch's CPU matrix kernels pick
    # their blocking by the batch size, so bits are not batch-invariant (the memory is).
    np.testing.assert_allclose(np.array(beside_a), np.array(alone), rtol=0, atol=1e-6)
    # and the memory matters: B's later clips differ from running each clip with an empty memory
    fresh = []
    with torch.inference_mode():
        for clip in ClipReader(b, clip_frames=16, stride=2, short_side=64, crop=64):
            logits, _ = model(clip.frames[None], model.init_state(1))
            fresh.append(torch.softmax(logits.float(), -1).double()[0].numpy())
    assert np.abs(np.array(alone[-1]) - fresh[-1]).max() > 1e-4


def test_batched_streams_refill_slots_in_order(model, clips_videos):
    records = list(stream_predictions(model, clips_videos, SETTINGS, batch_streams=2))
    done = [r["video"] for r in records if r.get("status") == "done"]
    assert sorted(done) == sorted(clips_videos)
    for video in clips_videos:
        indices = [r["clip"] for r in records if r.get("video") == video and "clip" in r]
        assert indices == list(range(len(indices)))


def test_failures_are_records_and_the_run_goes_on(model, clips_videos, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    out = tmp_path / "out.jsonl"
    summary = run_stream(model, [str(bad), clips_videos[1]], out=str(out), settings=SETTINGS, progress=False)
    records = read_records(str(out))
    assert records[0] == {"video": str(bad), "status": "error", "error": records[0]["error"]}
    assert "not a readable video file" in records[0]["error"]
    assert summary.done == 1 and summary.failed == 1 and summary.clips == 3


def test_save_scores_and_aggregate(model, clips_videos, tmp_path):
    settings = StreamSettings(**{**SETTINGS.__dict__, "keep_scores": False, "aggregate": True})
    out = tmp_path / "out.jsonl"
    run_stream(model, clips_videos[:2], out=str(out), settings=settings, save_scores=str(tmp_path / "scores"), progress=False)
    records = read_records(str(out))
    assert not any("scores" in r for r in records)
    done = [r for r in records if r.get("status") == "done"]
    arrays = [np.load(r["scores_file"]) for r in done]
    assert [a.shape for a in arrays] == [(5, 10), (3, 10)]
    aggregate = [r for r in records if r.get("aggregate") == "video"][0]
    mean = arrays[0].mean(0)
    assert aggregate["top"][0]["label"] == int(np.argmax(mean))
    assert aggregate["top"][0]["score"] == pytest.approx(float(mean.max()), abs=1e-6)


def test_labels_files(tmp_path):
    (tmp_path / "l.txt").write_text("walk\nrun\n\njump\n")
    (tmp_path / "l.csv").write_text("id,name\n1,run\n0,walk\n2,jump\n")
    (tmp_path / "l.json").write_text('{"walk": 0, "run": 1, "jump": 2}')
    (tmp_path / "bad.json").write_text('{"0": "walk", "2": "jump"}')
    for name in ["l.txt", "l.csv", "l.json"]:
        assert load_labels(tmp_path / name) == ["walk", "run", "jump"]
    with pytest.raises(longvid.LongvidError, match="missing"):
        load_labels(tmp_path / "bad.json")


def test_expand_videos(tmp_path, clips_videos):
    listing = tmp_path / "list.txt"
    listing.write_text(f"{clips_videos[0]}\n# comment\n\n{clips_videos[1]}\n")
    folder = os.path.dirname(clips_videos[0])
    assert expand_videos([str(listing), os.path.join(folder, "video*.mp4")]) == clips_videos[:2] + clips_videos
    with pytest.raises(longvid.LongvidError, match="no files match"):
        expand_videos([str(tmp_path / "*.mkv")])


def test_cli_stream_labels_and_exit_codes(clips_videos, tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"class{i}" for i in range(10)))
    out = tmp_path / "out.jsonl"
    code = main(["stream", clips_videos[1], "--model", "memvit_tiny", "--labels", str(labels), "--out", str(out), "--quiet", "--size", "64", "--tau", "2"])
    assert code == 0
    records = read_records(str(out))
    assert records[0]["top"][0]["label"].startswith("class") and len(records[0]["top"]) == 5
    assert main(["stream", str(tmp_path / "missing.mp4"), "--out", str(out), "--quiet"]) == 1
    assert main(["stream", clips_videos[1], "--dtype", "float16", "--quiet"]) == 1
    assert "float16 needs --device cuda" in capsys.readouterr().err


def strict_records(path) -> list[dict]:
    """Every line of ``path``: whole, and valid JSON (no bare NaN / Infinity)."""
    def refuse(constant):
        raise ValueError(f"{constant} is not valid JSON")

    with open(path) as f:
        lines = f.readlines()
    assert all(line.endswith("\n") for line in lines)  # every line whole
    return [json.loads(line, parse_constant=refuse) for line in lines]


def _default_signals() -> None:
    """The run starts with the signals a terminal gives: a harness started in the background
    (``cmd &`` without job control) ignores SIGINT, and the CLI rightly keeps an ignored signal ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.mark.parametrize("signum, code, message", [(signal.SIGINT, 130, "longvid: interrupted"),
                                                   (signal.SIGTERM, 143, "longvid: stopped by SIGTERM")],
                         ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_run_with_a_valid_file_and_resume_finishes(tmp_path, signum, code, message):
    videos = []
    for i in range(6):
        videos.append(str(tmp_path / f"v{i}.mp4"))
        # the first video short, the others long enough that the signal lands before the run ends
        write_demo_video(videos[-1], seconds=3.0 if i == 0 else 15.0, width=64, height=48, seed=i)
    listing = tmp_path / "videos.txt"
    listing.write_text("\n".join(videos) + "\n")
    out, log = tmp_path / "out.jsonl", tmp_path / "log.txt"
    command = [longvid_script(), "stream", str(listing), "--out", str(out), "--size", "64", "--tau", "2", "--threads", "1"]
    with open(log, "w") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, preexec_fn=_default_signals)
        deadline = time.time() + 120
        while time.time() < deadline:  # wait until the first video is complete, then stop the run
            if out.exists() and '"status": "done"' in out.read_text():
                break
            time.sleep(0.05)
        process.send_signal(signum)
        process.wait(timeout=60)
    assert process.returncode == code, log.read_text()
    assert log.read_text().splitlines()[-1] == message
    partial = strict_records(out)
    finished_before = [r["video"] for r in partial if r.get("status") == "done"]
    assert 1 <= len(finished_before) < len(videos)
    assert main(["stream", str(listing), "--out", str(out), "--quiet", "--size", "64", "--tau", "2", "--resume"]) == 0
    records = read_records(str(out))
    assert [r for r in records if r.get("video") in finished_before] == [r for r in partial if r.get("video") in finished_before]
    for video in videos:
        done = [r for r in records if r.get("video") == video and r.get("status") == "done"]
        assert len(done) == 1  # resume skipped the complete videos and redid the cut-off one
        clip_ids = [r["clip"] for r in records if r.get("video") == video and "clip" in r]
        assert clip_ids == list(range(done[0]["clips"]))


@pytest.mark.skipif(not os.path.exists("/proc/self/wchan"), reason="needs Linux /proc")
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_opening_a_fifo_stops_the_run(tmp_path, clips_videos, signum, code):
    fifo, out, log = tmp_path / "live.mp4", tmp_path / "out.jsonl", tmp_path / "log.txt"
    os.mkfifo(fifo)
    command = [longvid_script(), "stream", str(fifo), clips_videos[1], "--model", "memvit_tiny", "--out", str(out), "--size", "32"]
    with open(log, "w") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, preexec_fn=_default_signals)
        wait_until_blocked_opening_a_fifo(process.pid)
        process.send_signal(signum)
        process.wait(timeout=60)
    assert process.returncode == code, log.read_text()  # was: an error record for the FIFO, and the run went on
    assert strict_records(out) == []


def test_multi_head_models_report_each_head(clips_videos):
    torch.manual_seed(0)
    model = longvid.build_model("memvit_tiny", head="verb_noun", num_classes=(3, 4)).eval()
    records = list(stream_predictions(model, clips_videos[1], SETTINGS))
    clip = records[0]
    assert set(clip["top"]) == {"verb", "noun"} and len(clip["top"]["verb"]) == 3
    verb, noun = np.array(clip["scores"][:3]), np.array(clip["scores"][3:])
    assert verb.sum() == pytest.approx(1.0) and noun.sum() == pytest.approx(1.0)  # softmax per head


def test_labels_must_match_the_classes(model, clips_videos):
    with pytest.raises(longvid.LongvidError, match="name 3 classes but the model has 10"):
        list(stream_predictions(model, clips_videos[1], SETTINGS, labels=["a", "b", "c"]))


def test_torchrun_ranks_share_the_videos_and_merge(model, clips_videos, tmp_path):
    from longvid.core.checkpoints import save_checkpoint

    weights = tmp_path / "tiny.safetensors"
    save_checkpoint(model, weights)  # every process loads the same weights
    out = tmp_path / "out.jsonl"
    options = ["--checkpoint", str(weights), "--quiet", "--size", "64", "--tau", "2", "--threads", "1"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "longvid", "stream", *clips_videos, "--out", str(out), *options]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    merged = read_records(str(out))
    assert not list(tmp_path.glob("out.jsonl.part*"))
    single = tmp_path / "single.jsonl"
    assert main(["stream", *clips_videos, "--out", str(single), *options]) == 0

    def clip_records(records):
        return sorted((r["video"], r["clip"], json.dumps(r["top"])) for r in records if "clip" in r)

    assert clip_records(merged) == clip_records(read_records(str(single)))
    assert sorted(r["video"] for r in merged if r.get("status") == "done") == sorted(clips_videos)
