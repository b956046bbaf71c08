"""The benchmark's generated videos: chance by construction, determinism, cue timing, annotations."""

import av
from av.video.reformatter import VideoReformatter
import numpy as np
import pytest
import torch

import longvid
from longvid.data import synth
from longvid.data.synth import SynthSpec, recall_sample, scene_clips
from longvid.errors import LongvidError
from longvid.data.annotations import load_annotations

torch.set_num_threads(1)
SPEC = SynthSpec()


def paired_clips(seed: int, num_clips: int, distance: int) -> torch.Tensor:
    """uint8 clips ``(K, N, C, T, H, W)`` of one scene seed, one video per cue class."""
    samples = [recall_sample(seed, SPEC, num_clips, distance, cls=c) for c in range(SPEC.num_classes)]
    return torch.stack([scene_clips(s.scene, SPEC, normalize=False) for s in samples])


@pytest.mark.parametrize("distance", [1, 2, 4])
def test_clips_after_the_cue_do_not_depend_on_the_cue_class(distance):
    clips = paired_clips(seed=11, num_clips=6, distance=distance)
    cue_clip = 6 - 1 - distance
    after = clips[:, cue_clip + 1 :]
    assert torch.equal(after, after[:1].expand_as(after))  # identical for every class
    before = clips[:, :cue_clip]
    assert torch.equal(before, before[:1].expand_as(before))
    cue = clips[:, cue_clip].flatten(1).float()
    assert torch.cdist(cue, cue).fill_diagonal_(float("inf")).min() > 0  # the cue clip tells classes apart


def test_short_term_model_is_at_chance_for_d_ge_2():
    """A model without memory sees only the last clip: the same for every class, so
    over the K videos of a scene it is right exactly once -> accuracy 1/K."""
    torch.manual_seed(0)
    model = longvid.build_model("mvit_tiny", num_classes=SPEC.num_classes, num_frames=SPEC.clip_frames, crop_size=SPEC.size).eval()
    hits = 0
    seeds = range(5)
    for seed in seeds:
        clips = paired_clips(seed, num_clips=4, distance=2)  # (K, N, C, T, H, W)
        last = synth.normalize_frames(clips[:, -1])
        with torch.no_grad():
            logits, _ = model(last, model.init_state(SPEC.num_classes))
        hits += int((logits.argmax(1) == torch.arange(SPEC.num_classes)).sum())
    assert hits == len(seeds)  # exactly chance: 1 of K per scene


def test_determinism_and_seed_dependence():
    a, la, da = synth.recall_batch([3, 4], SPEC, 5, (1, 3))
    b, lb, db = synth.recall_batch([3, 4], SPEC, 5, (1, 3))
    assert torch.equal(a, b) and torch.equal(la, lb) and torch.equal(da, db)
    assert a.dtype == torch.uint8 and a.shape == (2, 5, 3, SPEC.clip_frames, SPEC.size, SPEC.size)
    assert not torch.equal(a[0], a[1])
    c, _, _ = synth.recall_batch([5], SPEC, 5, (1, 3))
    assert not torch.equal(a[0], c[0])


def test_cue_is_visible_only_on_its_frames():
    sample = recall_sample(7, SPEC, 5, 2, cls=0)  # red square
    clips = paired_clips(7, 5, 2).float()  # (K, N, C, T, H, W)
    cue_clip = 2
    diff = (clips[0] - clips[1]).abs().amax(dim=(1, 3, 4))  # (N, T) frames where red vs green differ
    first, last = SPEC.cue_samples()
    expected = torch.zeros_like(diff, dtype=torch.bool)
    expected[cue_clip, first : last + 1] = True
    assert torch.equal(diff > 0, expected)
    start, end = sample.target
    times = synth.clip_times(SPEC, 5)[cue_clip]
    assert [bool(start <= t < end) for t in times] == expected[cue_clip].tolist()
    assert sample.label == 0 and sample.answer == "red square" and sample.distance == 2


def test_task_labels_match_their_events():
    for seed in range(20):
        count = synth.make_sample("count", seed, SPEC, 6)
        target = count.meta["target_class"]
        assert count.label == sum(e.cls == target for e in count.scene.events) == int(count.answer)
        order = synth.make_sample("order", seed, SPEC, 6)
        first = min(order.scene.events, key=lambda e: e.clip)
        assert order.label == first.cls and order.answer == synth.class_name(first.cls)
        ground = synth.make_sample("grounding", seed, SPEC, 6)
        event = next(e for e in ground.scene.events if e.cls == ground.label)
        assert ground.target == ground.scene.event_interval(event, SPEC)
        assert ground.query == f"the {synth.class_name(ground.label)} flashes"
        qa = synth.make_sample("qa", seed, SPEC, 6)
        assert qa.task in ("recall", "count", "order") and qa.question and qa.answer
    with pytest.raises(LongvidError, match="unknown task"):
        synth.make_sample("dance", 0, SPEC, 6)
    with pytest.raises(LongvidError, match="distance"):
        recall_sample(0, SPEC, 3, 3)


def decoded_frames(path) -> np.ndarray:
    reformatter = VideoReformatter()  # not PyAV's thread-local one (see video_files.rgb)
    with av.open(str(path)) as container:
        return np.stack([reformatter.reformat(f, format="rgb24").to_ndarray() for f in container.decode(video=0)])


@pytest.mark.parametrize("ext", ["csv", "json"])
def test_dataset_files_and_annotations(tmp_path, ext):
    spec = SynthSpec(noise=0.0)
    path = synth.write_dataset(tmp_path, "recall", 2, spec, num_clips=4, distances=(2,), fps=8.0, size=64,
                               annotations=f"ann.{ext}")
    ann = load_annotations(path)
    assert len(ann) == 2
    for i, row in enumerate(ann.samples):
        sample = synth.make_sample("recall", i, spec, 4, (2,))
        assert row.label == (sample.label,)
        assert row.start == 0.0 and row.end == pytest.approx(4 * spec.clip_seconds)
        assert row.meta["answer"] == sample.answer and row.meta["query"] == sample.query
        assert (row.meta["target_start"], row.meta["target_end"]) == pytest.approx(sample.target)
        frames = decoded_frames(row.video)  # (F, H, W, 3)
        assert len(frames) == 4 * spec.clip_seconds * 8
        mid = (sample.target[0] + sample.target[1]) / 2
        cue = np.array(synth.COLOURS[synth.CLASSES[sample.label][0]]) * 255
        pixels = frames[int(mid * 8)].reshape(-1, 3).astype(float)
        assert (np.abs(pixels - cue).max(axis=1) < 40).mean() > 0.05  # the cue colour is on screen
        other = frames[int((sample.target[1] + 1.0) * 8)].reshape(-1, 3).astype(float)
        assert (np.abs(other - cue).max(axis=1) < 40).mean() < 0.01


def test_files_after_the_cue_are_identical_across_classes(tmp_path):
    frames = []
    for cls in (0, 1):
        sample = recall_sample(3, SPEC, 3, 1, cls=cls)
        synth.write_scene(tmp_path / f"{cls}.mp4", sample.scene, SPEC, fps=8.0, width=48, height=48)
        frames.append(decoded_frames(tmp_path / f"{cls}.mp4"))
    per_clip = int(SPEC.clip_seconds * 8)
    assert np.array_equal(frames[0][2 * per_clip :], frames[1][2 * per_clip :])
    assert not np.array_equal(frames[0][per_clip : 2 * per_clip], frames[1][per_clip : 2 * per_clip])


def test_demo_video_and_moving_shapes(tmp_path):
    count = synth.write_demo_video(tmp_path / "demo.mp4", seconds=3.0, fps=8.0, width=64, height=48)
    assert count == 24 and len(decoded_frames(tmp_path / "demo.mp4")) == 24
    sample = synth.demo_sample(3.0)
    assert sample.distance == 2 and sample.scene.num_clips == 3
    frames = list(synth.moving_shapes(1.5, fps=10.0, width=32, height=24))
    assert len(frames) == 15 and frames[0].shape == (24, 32, 3) and frames[0].dtype == np.uint8


def test_annotation_extension_is_checked(tmp_path):
    with pytest.raises(LongvidError, match=r"\.csv, \.json or \.jsonl"):
        synth.write_annotations(tmp_path / "ann.txt", [])
