"""Answering questions from live memory (longvid.answers) with a toy frame model whose
answer states exactly which frames its memory holds: every answer must see the frames up
to its time, no more, no fewer, whatever the batching."""

import json
import os
from dataclasses import dataclass

import pytest
import torch

from conftest import gray_frames
from longvid.answers import AskSettings, stream_answers
from longvid.cli import main
from longvid.errors import LongvidError
from longvid.core.stream import Frames
from longvid.video import write_video


@dataclass(frozen=True)
class CountState:
    """Per stream: frames seen, their summed pixel mean, the last frame's time."""

    count: torch.Tensor  # (B,) long
    total: torch.Tensor  # (B,) float64
    last: torch.Tensor  # (B,) float64

    @property
    def batch_size(self) -> int:
        return self.count.shape[0]

    def reset(self, mask):
        keep = ~mask
        return CountState(self.count * keep, self.total * keep, self.last * keep)

    def index_select(self, index):
        return CountState(self.count[index], self.total[index], self.last[index])

    def index_copy(self, index, rows):
        return CountState(self.count.index_copy(0, index, rows.count), self.total.index_copy(0, index, rows.total),
                          self.last.index_copy(0, index, rows.last))


class CountingModel(torch.nn.Module):
    """A frame-based stream model whose answer lists what its memory holds."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def init_state(self, batch_size, device=None, instructions=None):
        zeros = torch.zeros(batch_size, dtype=torch.float64, device=device)
        return CountState(torch.zeros(batch_size, dtype=torch.long, device=device), zeros, zeros.clone())

    def forward(self, frames: Frames, state: CountState):
        valid = frames.valid_mask()
        means = frames.pixels.double().mean(dim=(2, 3, 4)) * valid  # (B, T)
        last = torch.where(valid.any(1), (frames.timestamps * valid).amax(1), state.last)
        return {}, CountState(state.count + valid.sum(1), state.total + means.sum(1), last)

    def answer(self, state, questions):
        return [f"{q} {int(c)} frames to {float(t):g} s, mean {float(s) / max(int(c), 1):.5f}"
                for q, c, t, s in zip(questions, state.count, state.last, state.total)]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("answers")
    paths = []
    for name, count in (("long", 50), ("short", 23)):  # 5 s and 2.3 s at 10 fps
        paths.append(str(folder / f"{name}.mp4"))
        write_video(paths[-1], gray_frames(count, 32, 32), fps=10)
    return paths


def answers(records):
    return [(os.path.basename(r["video"]), r["time"], r["answer"]) for r in records if "answer" in r]


def test_every_answer_sees_the_frames_up_to_its_time(clips):
    settings = AskSettings(("what?",), every=2.0, fps=2.0, step_frames=3, size=16)
    records = list(stream_answers(CountingModel(), clips[0], settings))
    got = [(r["time"], r["answer"].split(", mean")[0]) for r in records if "answer" in r]
    # frames at 0, 0.5, ..., 4.5 s: 5 up to 2 s, 9 up to 4 s, all 10 at the end (4.5 s)
    assert got == [(2.0, "what? 5 frames to 2 s"), (4.0, "what? 9 frames to 4 s"), (4.5, "what? 10 frames to 4.5 s")]
    assert records[-1]["status"] == "done" and records[-1]["frames"] == 10 and records[-1]["answers"] == 3


def test_batched_streams_answer_as_each_alone(clips):
    settings = AskSettings(("q1", "q2"), every=1.5, at=(0.7,), fps=2.0, step_frames=4, size=16)
    alone = [a for video in clips for a in answers(stream_answers(CountingModel(), video, settings))]
    together = answers(stream_answers(CountingModel(), clips + clips[::-1], settings, batch_streams=2))
    assert sorted(together) == sorted(alone + alone)
    short = [a for a in alone if a[0] == "short.mp4"]
    assert [t for _, t, _ in short] == [0.7, 0.7, 1.5, 1.5, 2.0, 2.0]  # the end: the last frame at 2.0 s


def test_no_end_answer_twice_and_unreadable_videos(clips, tmp_path):
    settings = AskSettings(("q",), at=(4.5,), fps=2.0, size=16)  # 4.5 s is the last frame: no extra end answer
    records = list(stream_answers(CountingModel(), [str(tmp_path / "missing.mp4"), clips[0]], settings))
    assert records[0]["status"] == "error" and "missing.mp4" in records[0]["video"]
    assert [r["time"] for r in records if "answer" in r] == [4.5]


@pytest.mark.parametrize("change, message", [
    (dict(questions=()), "at least one"), (dict(every=0.0), "--every"), (dict(at=(-1.0,)), "--at"), (dict(fps=0.0), "--fps"),
])
def test_bad_settings(change, message):
    with pytest.raises(LongvidError, match=message):
        AskSettings(**{"questions": ("q",), **change})


def test_stream_asks_a_tiny_lmm_as_a_user_types_it(clips, run_cli, tmp_path):
    out = tmp_path / "answers.jsonl"
    code, printed = run_cli("stream", clips[0], "--model", "malmm_tiny", "--ask", "what is happening?", "--ask", "what color?",
                            "--every", "2", "--fps", "2", "--out", out, "--allow-untrained")
    assert code == 0, printed
    assert "Traceback" not in printed and "\r" not in printed and "RANDOM trainable weights" in printed
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["time"], r["question"]) for r in records if "answer" in r] == [
        (t, q) for t in (2.0, 4.0, 4.5) for q in ("what is happening?", "what color?")
    ]
    assert all(isinstance(r["answer"], str) for r in records if "answer" in r)
    assert records[-1]["status"] == "done" and records[-1]["frames"] == 10


@pytest.mark.parametrize("args, message", [
    (["--ask", "q", "--model", "rewind_tiny"], "needs trained weights (--checkpoint FILE)"),
    (["--ask", "q", "--model", "malmm_tiny"], "needs trained weights (--checkpoint FILE)"),
    (["--every", "5"], "give the question with --ask"),
    (["--ask", "q", "--every", "0"], "--every must be > 0"),
    (["--ask", "q", "--at", "1,x"], "--at takes comma-separated seconds"),
    (["--ask", "q", "--model", "memvit_tiny"], "--ask needs a model that answers questions"),
    (["--model", "malmm_tiny"], "answers questions: give --ask"),
])
def test_stream_ask_mistakes_are_one_line(clips, tmp_path, capsys, args, message):
    assert main(["stream", clips[0], "--out", str(tmp_path / "o.jsonl"), "--quiet", *args]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("longvid: error: ") and message in err
