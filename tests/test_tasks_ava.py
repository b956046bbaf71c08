"""AVA v2.2 from files in the published layouts (CSV, action-list pbtxt, excluded timestamps,
person boxes) on a generated movie: boxes through the box head, frame-mAP@0.5 against a naive
per-class AP loop, training and evaluation through the installed ``longvid`` script."""

import json
import os

import numpy as np
import pytest
import torch

from longvid.memvit.ava_files import load_action_list, load_excluded, load_keyframes
from longvid.errors import LongvidError
from longvid.eval.metrics import Box
from longvid.memvit.ava import AvaClips, ava_metrics
from longvid.memvit.augment import View
from longvid.video import write_video

PBTXT = """item {
  name: "bend/bow (at the waist)"
  id: 1
}
item {
  name: "crawl"
  id: 3
}
item {
  name: "stand"
  id: 12
}
"""
PBTXT_FULL = 'label {\n  name: "bend/bow (at the waist)"\n  label_id: 1\n  label_type: PERSON_MOVEMENT\n}\n'
# video_id, middle_frame_timestamp, x1, y1, x2, y2, action_id, person_id
TRAIN = """movieA0001,0902,0.100,0.200,0.500,0.900,12,0
movieA0001,0902,0.100,0.200,0.500,0.900,1,0
movieA0001,0902,0.550,0.100,0.950,0.950,3,1
movieA0001,0903,0.120,0.200,0.520,0.900,12,0
movieA0001,0904,0.140,0.200,0.540,0.900,12,0
movieA0001,0904,0.140,0.200,0.540,0.900,80,0
movieGone01,0902,0.1,0.1,0.2,0.2,12,0
"""
BOXES = """movieA0001,0902,0.101,0.199,0.500,0.900,,0.98
movieA0001,0902,0.550,0.100,0.950,0.950,,0.91
movieA0001,0902,0.000,0.000,0.100,0.100,,0.30
movieA0001,0903,0.120,0.200,0.520,0.900,,0.95
movieA0001,0904,0.140,0.200,0.540,0.900,,0.97
"""


@pytest.fixture(scope="module")
def ava(tmp_path_factory):
    root = tmp_path_factory.mktemp("ava")
    movies = root / "movies"
    movies.mkdir()
    write_video(str(movies / "movieA0001.mkv"), (np.full((24, 32, 3), (7 * i) % 250, np.uint8) for i in range(907)), fps=1, options={"g": "4"})
    (root / "ava_train_v2.2.csv").write_text(TRAIN)
    (root / "ava_val_v2.2.csv").write_text(TRAIN)
    (root / "ava_action_list_v2.2_for_activitynet_2019.pbtxt").write_text(PBTXT)
    (root / "ava_val_excluded_timestamps_v2.2.csv").write_text("movieA0001,0903\n")
    (root / "ava_val_predicted_boxes.csv").write_text(BOXES)
    return root


def test_files_in_the_published_layouts(ava, tmp_path):
    assert load_action_list(str(ava / "ava_action_list_v2.2_for_activitynet_2019.pbtxt")) == {1: "bend/bow (at the waist)", 3: "crawl", 12: "stand"}
    (tmp_path / "full.pbtxt").write_text(PBTXT_FULL)
    assert load_action_list(str(tmp_path / "full.pbtxt")) == {1: "bend/bow (at the waist)"}
    assert load_excluded(str(ava / "ava_val_excluded_timestamps_v2.2.csv")) == {("movieA0001", 903)}
    frames = load_keyframes(str(ava / "ava_train_v2.2.csv"), [1, 3, 12])
    first = frames[0]
    assert (first.video_id, first.timestamp, first.boxes.shape) == ("movieA0001", 902, (2, 4))
    assert first.labels.tolist() == [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]  # one box, two actions merged
    assert frames[2].actions == [[12, 80]] and frames[2].labels.tolist() == [[0.0, 0.0, 1.0]]  # 80: not evaluated
    dets = load_keyframes(str(ava / "ava_val_predicted_boxes.csv"), [1, 3, 12], detections=True, threshold=0.8)
    assert [d.boxes.shape[0] for d in dets] == [2, 1, 1]  # the 0.30 box is below the threshold
    (tmp_path / "bad.csv").write_text("movieA0001,0902,0.5,0.2,0.1,0.9,12,0\n")
    with pytest.raises(LongvidError, match=r"bad.csv:1: box .* is not normalized"):
        load_keyframes(str(tmp_path / "bad.csv"), [12])
    for row, message in [
        ("vid,0902,0.1,0.1,0.5\n", "bad.csv:2: expected 7 or 8 fields, got 5"),
        ("vid,0902,0.1,0.1,0.5,0.9,0,1\n", "bad.csv:2: action_id must be >= 1"),
        ("vid,09x2,0.1,0.1,0.5,0.9,3,1\n", "bad.csv:2: invalid literal"),
    ]:
        (tmp_path / "bad.csv").write_text("vid,0902,0.1,0.1,0.5,0.9,80,1\n" + row)
        with pytest.raises(LongvidError, match=message):
            load_keyframes(str(tmp_path / "bad.csv"), [12])
    # YouTube ids may start with '-' (the first movie of ava_val_v2.2.csv): kept as they are
    (tmp_path / "dash.csv").write_text("-5KQ66BBWC4,0902,0.077,0.151,0.283,0.811,80,1\n")
    assert [(k.video_id, k.timestamp) for k in load_keyframes(str(tmp_path / "dash.csv"), [80])] == [("-5KQ66BBWC4", 902)]


def naive_frame_map(detections, truths, classes, excluded):
    """Per class: detections by descending score, each matched to its best-IoU ground truth of
    the same keyframe (a true positive at IoU >= 0.5 when that one is still free); VOC AP as the
    area under the precision envelope; the mean over classes with ground truth."""

    def iou(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
        return w * h / union if union > 0 else 0.0

    aps = {}
    for c in classes:
        gts = [t for t in truths if t.label == c and t.frame not in excluded]
        if not gts:
            continue
        dets = sorted((d for d in detections if d.label == c and d.frame not in excluded), key=lambda d: -d.score)
        used, tp = set(), []
        for d in dets:
            best, best_iou = None, -1.0
            for j, g in enumerate(gts):
                if g.frame == d.frame and iou(d.box, g.box) > best_iou:
                    best, best_iou = j, iou(d.box, g.box)
            hit = best is not None and best_iou >= 0.5 and best not in used
            if hit:
                used.add(best)
            tp.append(hit)
        precisions, recalls, hits = [], [], 0
        for i, hit in enumerate(tp):
            hits += hit
            precisions.append(hits / (i + 1))
            recalls.append(hits / len(gts))
        ap, previous = 0.0, 0.0
        for i in range(len(tp)):
            if recalls[i] > previous:
                ap += (recalls[i] - previous) * max(precisions[i:])
                previous = recalls[i]
        aps[c] = 100.0 * ap
    return sum(aps.values()) / len(aps), aps


def test_frame_map_equals_a_naive_per_class_loop():
    frame = lambda t: ("m", t)  # noqa: E731
    truths = [Box(frame(902), (0.1, 0.1, 0.5, 0.5), 1), Box(frame(902), (0.6, 0.6, 0.9, 0.9), 1),
              Box(frame(903), (0.1, 0.1, 0.5, 0.5), 1), Box(frame(903), (0.1, 0.1, 0.5, 0.5), 3),
              Box(frame(904), (0.2, 0.2, 0.4, 0.4), 3), Box(frame(905), (0.0, 0.0, 1.0, 1.0), 12)]  # fmt: skip
    dets = [Box(frame(902), (0.1, 0.1, 0.5, 0.52), 1, 0.9), Box(frame(902), (0.1, 0.1, 0.5, 0.5), 1, 0.8),  # duplicate: FP
            Box(frame(902), (0.6, 0.6, 0.9, 0.9), 1, 0.3), Box(frame(906), (0.1, 0.1, 0.5, 0.5), 1, 0.95),  # no GT frame: FP
            Box(frame(903), (0.3, 0.3, 0.7, 0.7), 3, 0.7), Box(frame(904), (0.2, 0.2, 0.4, 0.4), 3, 0.6),
            Box(frame(903), (0.1, 0.1, 0.5, 0.5), 1, 0.99)]  # fmt: skip
    from longvid.eval.metrics import frame_map
    from longvid.memvit.ava_files import Keyframe

    for excluded in (set(), {frame(903)}):
        expected, per_class = naive_frame_map(dets, truths, [1, 3, 12], excluded)
        keep = lambda b: b.frame not in excluded  # noqa: E731
        result = frame_map([d for d in dets if keep(d)], [t for t in truths if keep(t)], 0.5, [1, 3, 12])
        assert result["mAP"] == pytest.approx(expected)
        assert result["per_class"] == pytest.approx(per_class)
    assert per_class[12] == 0.0 and 0 < expected < 100
    # ava_metrics leaves the excluded keyframes out of both sides
    truth_frames = [Keyframe("m", t.frame[1], torch.tensor([t.box]), actions=[[t.label]]) for t in truths]
    path = "/tmp/longvid-test-excluded.csv"
    with open(path, "w") as f:
        f.write("m,903\n")
    metrics = ava_metrics(dets, truth_frames, [1, 3, 12], path)
    assert metrics["map"] == pytest.approx(expected) and metrics["ap/12"] == 0.0
    os.remove(path)


def test_boxes_follow_the_crop_and_the_flip(tmp_path):
    path = str(tmp_path / "wide.mkv")
    write_video(path, (np.zeros((24, 48, 3), np.uint8) for _ in range(4)), fps=4)
    source = AvaClips([(path, [])], clip_frames=2, stride=1, size=16)
    boxes = torch.tensor([[0.25, 0.5, 0.5, 1.0]])
    # short side 24 -> 24x48, center 16 crop at top 4, left 16
    expected = torch.tensor([[12 - 16, 12 - 4, 24 - 16, 24 - 4]]).float().clamp(0, 16)
    assert torch.equal(source.box_pixels(boxes, 0), expected)
    flipped = source.box_pixels(boxes, 0, View(24, 0.0, 0.0, True))  # crop at 0, 0, then mirrored
    assert torch.equal(flipped, torch.tensor([[16 - 16, 12.0, 16 - 12, 16.0]]))  # x 12..24 clipped to 12..16, mirrored


def test_full_frame_boxes_and_padding(tmp_path):
    """Full-frame testing: boxes scaled to the whole resized frame; a movie narrower than the
    source's widest is padded at the right (boxes stay put) so both stack in one batch."""
    wide, narrow = str(tmp_path / "wide.mkv"), str(tmp_path / "narrow.mkv")
    write_video(wide, (np.full((24, 48, 3), 200, np.uint8) for _ in range(4)), fps=4)
    write_video(narrow, (np.full((24, 32, 3), 200, np.uint8) for _ in range(4)), fps=4)
    from longvid.memvit.ava_files import Keyframe

    keyframe = Keyframe("v", 1, torch.tensor([[0.25, 0.5, 0.5, 1.0]]), None, None)
    source = AvaClips([(wide, [keyframe]), (narrow, [keyframe])], clip_frames=2, stride=1, size=16, crop="full")
    assert torch.equal(source.box_pixels(keyframe.boxes, 0), torch.tensor([[8.0, 8.0, 16.0, 16.0]]))  # 16x32 frame
    assert torch.equal(source.box_pixels(keyframe.boxes, 1), torch.tensor([[0.25 * 21, 8.0, 0.5 * 21, 16.0]]))  # 16x21 frame
    (a,), (b,) = list(source.clips(0)), list(source.clips(1))
    assert a.shape == b.shape == (3, 2, 16, 32)
    assert b[..., 21:].abs().max() == 0 and b[..., :21].abs().min() > 0  # the padding is the narrow movie's right
    center = AvaClips([(wide, [keyframe])], clip_frames=2, stride=1, size=16)  # the center crop, as before
    assert next(iter(center.clips(0))).shape == (3, 2, 16, 16)
    with pytest.raises(ValueError, match="crop must be 'center' or 'full'"):
        AvaClips([(wide, [])], clip_frames=2, stride=1, size=16, crop="middle")


def test_full_frame_detections_equal_a_direct_model_call(ava):
    """Scores from the full-frame source equal the model run by hand on the whole resized
    frames with the boxes scaled to them."""
    from longvid.memvit.ava import collect_detections
    from longvid.memvit.model import build_model
    from longvid.video.reader import ClipReader

    torch.manual_seed(0)
    model = build_model("memvit_tiny_ava", num_frames=4, crop_size=32, num_classes=3, head="ava").eval()
    keyframes = [k for k in load_keyframes(str(ava / "ava_val_predicted_boxes.csv"), [1, 3, 12], detections=True, threshold=0.8)]
    movie = str(ava / "movies" / "movieA0001.mkv")
    source = AvaClips([(movie, keyframes)], clip_frames=4, stride=1, size=32, crop="full")
    found = collect_detections(model, source, 1, "cpu", [1, 3, 12])
    state = model.init_state(1)
    expected = []
    for k in keyframes:  # 32x24 frames -> short side 32: 32 x 43 (W = round(32 * 32 / 24))
        start = max(0.0, k.timestamp - 4 / 2)
        clip = next(iter(ClipReader(movie, 4, 1, short_side=32, crop=None, start=start, end=start + 4, tail="pad"))).frames
        assert clip.shape[-2:] == (32, 43)
        boxes = k.boxes * torch.tensor([43.0, 32.0, 43.0, 32.0])
        with torch.no_grad():
            logits, state = model(clip[None], state, boxes=torch.cat([torch.zeros(len(boxes), 1), boxes], 1))
        expected += logits.sigmoid().flatten().tolist()
    assert [b.score for b in found] == pytest.approx(expected, abs=1e-5)


def test_every_ava_file_is_closed(ava):
    """Reading the action list, the excluded timestamps and the box CSVs leaves no file open
    (a ResourceWarning, CPython's "unclosed file", fails the test)."""
    import gc
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        load_action_list(str(ava / "ava_action_list_v2.2_for_activitynet_2019.pbtxt"))
        load_excluded(str(ava / "ava_val_excluded_timestamps_v2.2.csv"))
        load_keyframes(str(ava / "ava_train_v2.2.csv"), [1, 3, 12])
        load_keyframes(str(ava / "ava_val_predicted_boxes.csv"), [1, 3, 12], detections=True, threshold=0.8)
        gc.collect()  # an unreferenced open file warns when collected
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_train_and_eval_tiny_ava(ava, run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # tiny model: threads only contend
    files = [f"action_list={ava / 'ava_action_list_v2.2_for_activitynet_2019.pbtxt'}", f"video_root={ava / 'movies'}"]
    out = tmp_path / "run"
    code, text = run_cli("train", "memvit_tiny_ava", f"data={ava / 'ava_train_v2.2.csv'}", *files, "max_steps=2", f"out_dir={out}")
    assert code == 0, text
    assert "ava_train_v2.2.csv: 3 keyframes in 1 movies; 1 movies missing (skipped)" in text
    assert "unclosed file" not in text  # issue 29: the .pbtxt was opened and never closed
    code, text = run_cli("eval", "memvit_tiny_ava", f"val_data={ava / 'ava_val_v2.2.csv'}", *files, f"out_dir={out}",
                         f"person_boxes={ava / 'ava_val_predicted_boxes.csv'}",
                         f"excluded_timestamps={ava / 'ava_val_excluded_timestamps_v2.2.csv'}", "--predictions", tmp_path / "dets.csv")  # fmt: skip
    assert code == 0, text
    assert "ava_val_v2.2.csv: 3 keyframes in 1 movies; tested on full frames (short side 32)" in text  # the paper's default
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"map", "ap/1", "ap/3", "ap/12"} and 0 <= metrics["map"] <= 100
    rows = (tmp_path / "dets.csv").read_text().splitlines()
    assert len(rows) == 4 * 3 and rows[0].startswith("movieA0001,0902,0.101,0.199,0.500,0.900,1,")  # 4 boxes x 3 classes
    code, text = run_cli("eval", "memvit_tiny_ava", f"val_data={ava / 'ava_val_v2.2.csv'}", *files, f"out_dir={out}",
                         f"person_boxes={ava / 'ava_val_predicted_boxes.csv'}", "ava_test_crop=center", "--predictions", tmp_path / "c.csv")
    assert code == 0, text
    assert "tested on the center 32 crop" in text
    center_rows = (tmp_path / "c.csv").read_text().splitlines()
    assert [r.rsplit(",", 1)[0] for r in center_rows] == [r.rsplit(",", 1)[0] for r in rows]
    assert [r.rsplit(",", 1)[1] for r in center_rows] != [r.rsplit(",", 1)[1] for r in rows]  # another view, other scores
    code, text = run_cli("eval", "memvit_tiny_ava", f"val_data={ava / 'ava_val_v2.2.csv'}", *files, f"out_dir={out}", "ava_test_crop=middle")
    assert code == 1 and "ava_test_crop must be 'full' or 'center', got 'middle'" in text, text
