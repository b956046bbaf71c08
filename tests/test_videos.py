"""The one video resolver (``longvid.data.videos``) on its own, and through each family's readers
and runs: any common extension, DiDeMo's ``<name>.mov.mp4`` download, ActivityNet's mixed
``.mp4/.mkv/.webm`` with or without ``v_``, ties, missing videos."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from longvid.data.videos import (
    VIDEO_EXTENSIONS,
    VideoFinder,
    extension_order,
    find_video,
)
from longvid.malmm.datasets import find_videos, read_dataset
from longvid.memvit.ava_files import find_movie
from longvid.memvit.epic_files import find_video as find_epic_video
from longvid.memvit.kinetics_files import find_video as find_kinetics_video
from longvid.rewind.data import read_data
from longvid.video import write_video
from test_rewind_data import ACTIVITYNET, DIDEMO  # rows of the official files, as released

FORMATS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "reference", "formats")
SAMPLES = FORMATS if os.path.isdir(FORMATS) else "/work/shared/reference/formats"

DIDEMO_VIDEOS = ("12090392@N02_13482799053_87ef417396.mov", "21574226@N00_2952305418_f51d7c8b2a.mov")


def touch(folder, *names):
    for name in names:
        path = os.path.join(folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "wb").close()


# -- the resolver on its own -------------------------------------------------------------------


@pytest.mark.parametrize("ext", VIDEO_EXTENSIONS + (".MP4", ".Mkv", ".WEBM"))
def test_every_common_extension_in_any_case(tmp_path, ext):
    touch(tmp_path, f"clip{ext}", "clip.txt", "clip.json")
    assert find_video(str(tmp_path), "clip") == str(tmp_path / f"clip{ext}")


def test_didemo_names_find_the_aws_download_and_converted_copies(tmp_path):
    name = "12345@N00_6789_abc.mov"
    touch(tmp_path, "12345@N00_6789_abc.mp4")  # a converted copy
    assert find_video(str(tmp_path), name) == str(tmp_path / "12345@N00_6789_abc.mp4")
    touch(tmp_path, f"{name}.mp4")  # the AWS script's '%s/%s.mp4' % (dir, video): beats a converted copy
    assert find_video(str(tmp_path), name) == str(tmp_path / f"{name}.mp4")
    touch(tmp_path, name)  # the original file as named: first
    assert find_video(str(tmp_path), name) == str(tmp_path / name)


def test_ties_go_by_the_extension_order_then_the_preferred_one(tmp_path):
    touch(tmp_path, "v_x.webm", "v_x.mkv", "v_x.avi")
    assert find_video(str(tmp_path), "v_x") == str(tmp_path / "v_x.mkv")  # .mkv before .webm and .avi
    touch(tmp_path, "v_x.mp4")
    assert find_video(str(tmp_path), "v_x") == str(tmp_path / "v_x.mp4")  # .mp4 first
    assert find_video(str(tmp_path), "v_x", prefer=["webm"]) == str(tmp_path / "v_x.webm")  # a preferred extension wins
    assert extension_order([".WEBM", ".ts"])[:3] == (".webm", ".ts", ".mp4")
    touch(tmp_path, "y.mp4", "y.MP4")
    assert find_video(str(tmp_path), "y") == str(tmp_path / "y.MP4")  # same extension: by name
    finder = VideoFinder(str(tmp_path))
    assert [finder.find("v_x") for _ in range(3)] == [str(tmp_path / "v_x.mp4")] * 3


def test_folders_and_other_names_in_order_and_missing_is_none(tmp_path):
    touch(tmp_path, "abseiling/a_000000_000010.mkv", "air_drumming/b_000000_000010.mp4", "c_000000_000010.mp4",
          "abseiling/c_000000_000010.mp4", "x.mp4/inside.mp4", "N7ppHQNikv8.webm")
    finder = VideoFinder(str(tmp_path))
    folders = ("", "abseiling", "air_drumming")
    assert finder.find("a_000000_000010", folders) == str(tmp_path / "abseiling" / "a_000000_000010.mkv")
    assert finder.find("c_000000_000010", folders) == str(tmp_path / "c_000000_000010.mp4")  # the first folder given
    assert finder.find("v_N7ppHQNikv8", names=("N7ppHQNikv8",)) == str(tmp_path / "N7ppHQNikv8.webm")
    assert finder.find("x") is None  # a folder named x.mp4 is no video
    assert finder.find("gone", folders) is None and find_video(str(tmp_path / "nowhere"), "a") is None
    # each family's own look-up, on the same resolver
    assert find_kinetics_video(str(tmp_path), "air drumming", "b_000000_000010") == str(tmp_path / "air_drumming" / "b_000000_000010.mp4")
    touch(tmp_path, "P03/videos/P03_21.MP4", "movie1.webm")
    assert find_epic_video(str(tmp_path), "P03", "P03_21") == str(tmp_path / "P03" / "videos" / "P03_21.MP4")
    assert find_movie(str(tmp_path), "movie1") == str(tmp_path / "movie1.webm") and find_movie(str(tmp_path), "gone") is None


def test_index_of_a_tree_by_relative_path_and_bare_name(tmp_path):
    touch(tmp_path, "P03/cam01/P03_cereals.avi", "a/b/c/deep.mp4", "a/b/c/d/too_deep.mp4", "z/dup.mp4", "dup.mkv")
    index = VideoFinder(str(tmp_path)).index(max_depth=3)
    assert index.find("P03/cam01/P03_cereals") == index.find("P03_cereals") == str(tmp_path / "P03/cam01/P03_cereals.avi")
    assert index.find("deep") is not None and index.find("too_deep") is None  # 3 folders deep at most
    assert index.find("dup") == str(tmp_path / "dup.mkv")  # the root before its folders
    assert index.find("nope", names=("z/dup",)) == str(tmp_path / "z/dup.mp4") and len(index) == 4


# -- through the families --------------------------------------------------------------------


def test_activitynet_mixed_extensions_with_and_without_v_in_both_families(tmp_path):
    """MA-LMM's activitynet_qa names videos without ``v_``, ActivityNet Captions with it; the
    download mixes .mp4/.mkv/.webm and may or may not keep ``v_``: both families find them all."""
    videos = tmp_path / "videos"
    touch(videos, "v_1QIUV7WYKXg.webm", "5k2Ot6-wOgc.mkv", "v_9eniCub7u60.mp4", "v_9eniCub7u60.webm", "FADShG5lyB8.mp4",
          "QOlSCBRmfWY.mkv")
    items = read_dataset("activitynet_qa", os.path.join(SAMPLES, "activitynet_qa_test.sample.json"))
    summary = find_videos(items, str(videos), "activitynet_qa")
    assert summary.missing == () and summary.found == {
        "1QIUV7WYKXg": str(videos / "v_1QIUV7WYKXg.webm"), "5k2Ot6-wOgc": str(videos / "5k2Ot6-wOgc.mkv"),
        "9eniCub7u60": str(videos / "v_9eniCub7u60.mp4"), "FADShG5lyB8": str(videos / "FADShG5lyB8.mp4")}
    (tmp_path / "train.json").write_text(ACTIVITYNET)
    anet = read_data(str(tmp_path / "train.json"), str(videos))
    assert {i.video for i in anet.items} == {str(videos / "QOlSCBRmfWY.mkv")}
    touch(videos, "v_QOlSCBRmfWY.webm")  # the name as written wins over the other spelling
    assert {i.video for i in read_data(str(tmp_path / "train.json"), str(videos)).items} == {str(videos / "v_QOlSCBRmfWY.webm")}
    os.remove(videos / "v_QOlSCBRmfWY.webm")
    os.remove(videos / "QOlSCBRmfWY.mkv")
    data = read_data(str(tmp_path / "train.json"), str(videos))  # missing: the path it was expected at
    assert data.found_missing() == ([], [str(videos / "v_QOlSCBRmfWY.mp4")])


def test_rewind_video_ext_is_the_preferred_extension(tmp_path):
    touch(tmp_path, "AO8RW.mp4", "AO8RW.webm")
    (tmp_path / "train.txt").write_text("AO8RW 0.0 6.9##a person is putting a book on a shelf.\n")
    assert read_data(str(tmp_path / "train.txt")).items[0].video == str(tmp_path / "AO8RW.mp4")
    assert read_data(str(tmp_path / "train.txt"), ext=".webm").items[0].video == str(tmp_path / "AO8RW.webm")


def _write(path, seconds, level):
    frames = (np.full((32, 40, 3), (level + 7 * i) % 255, np.uint8) for i in range(seconds * 2))
    write_video(str(path), frames, fps=2)


def test_didemo_found_as_mov_mp4_through_rewind_train_and_eval(tmp_path, run_cli, monkeypatch):
    """DiDeMo's AWS download (``<name>.mov.mp4``) trained and evaluated from the CLI; eval's
    videos come from ``val_video_root``."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    videos = tmp_path / "didemo_videos"
    videos.mkdir()
    for k, name in enumerate(DIDEMO_VIDEOS):
        _write(videos / f"{name}.mp4", 20, 40 + 90 * k)
    (tmp_path / "train_data.json").write_text(DIDEMO)
    (tmp_path / "empty").mkdir()
    out = tmp_path / "D"
    code, text = run_cli("train", "rewind_tiny", "stage=grounding", f"data={tmp_path / 'train_data.json'}", f"video_root={videos}",
                         "max_steps=2", "batch_size=2", f"out_dir={out}")
    assert code == 0, text
    assert "2 rows, 2 videos: 2 found, 0 missing" in text
    code, text = run_cli("eval", "rewind_tiny", f"val_data={tmp_path / 'train_data.json'}", f"video_root={tmp_path / 'empty'}",
                         f"val_video_root={videos}", "max_new_tokens=4", f"out_dir={out}")
    assert code == 0, text
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["target"] for r in rows] == [[0.0, 5.0], [5.0, 15.0]]
    code, text = run_cli("eval", "rewind_tiny", f"val_data={tmp_path / 'train_data.json'}", f"video_root={tmp_path / 'empty'}",
                         f"out_dir={out}")
    assert code == 1 and "video " in text and "not found and 1 more" in text, text


def test_malmm_reads_val_data_videos_from_val_video_root(tmp_path):
    from longvid.malmm.run import MALMMRun, read_items

    path = os.path.join(SAMPLES, "msvd_qa_test.sample.json")
    touch(tmp_path / "train", "jfrrO5K_vKM_55_65.avi")
    touch(tmp_path / "val", "jfrrO5K_vKM_55_65.mkv")
    run = MALMMRun(dataset="msvd_qa", video_root=str(tmp_path / "train"), val_video_root=str(tmp_path / "val"))
    said = []
    assert {v for _, v in read_items(run, path, "val", "evaluation", said.append)} == {str(tmp_path / "val" / "jfrrO5K_vKM_55_65.mkv")}
    assert {v for _, v in read_items(run, path, "train", "training", said.append)} == {str(tmp_path / "train" / "jfrrO5K_vKM_55_65.avi")}
    assert said == [f"{path}: 1 videos found, 0 missing"] * 2
