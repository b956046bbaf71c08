"""The shipped demo weights: ``longvid stream`` on a ``longvid demo-video`` names the cue."""

import pytest
import torch

from longvid.data.synth import demo_sample, write_demo_video
from longvid.loading import load_stream_model, shipped_labels, shipped_weights
from longvid.predict import settings_for, stream_predictions

torch.set_num_threads(1)
pytestmark = pytest.mark.skipif(shipped_weights("memvit_tiny_recall") is None, reason="no shipped demo weights")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stream_names_the_cue_of_a_demo_video(tmp_path, seed):
    path = tmp_path / "demo.mp4"
    write_demo_video(path, seconds=6.0, fps=16.0, seed=seed)
    sample = demo_sample(6.0, seed=seed)
    model, note = load_stream_model(None)
    assert "shipped" in note
    labels = shipped_labels("memvit_tiny_recall")
    records = [r for r in stream_predictions(model.eval(), str(path), settings_for(model), labels=labels) if "clip" in r]
    assert len(records) == sample.scene.num_clips
    cue_clip = sample.scene.events[0].clip
    for record in records[cue_clip:]:  # the cue clip and every clip within reach after it
        assert record["top"][0]["label"] == sample.answer
