"""Decoding in a forked child: the same clips, damage, warnings and errors as decoding in
this process, and no child left behind when the consumer stops or the child dies."""

import multiprocessing
import os
import warnings

import pytest
import torch

from longvid.video import ClipReader, VideoDecodeWarning, VideoError
from longvid.video.reader import _Progress
from longvid.video.worker import can_fork, clips_from_child

pytestmark = pytest.mark.skipif(not can_fork(), reason="decoding processes need fork (Linux)")

RAW = dict(short_side=None, crop=None, mean=None, std=None, dtype=torch.uint8)


def same_clips(a, b) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x.frames, y.frames) and torch.equal(x.timestamps, y.timestamps)
        and (x.index, x.start, x.end, x.num_valid) == (y.index, y.start, y.end, y.num_valid)
        for x, y in zip(a, b)
    )


@pytest.mark.parametrize("options", [RAW, dict(short_side=32, crop=32)])
def test_a_decoding_process_yields_the_clips_of_decoding_here(videos, options):
    here = list(ClipReader(videos["vfr"], clip_frames=4, stride=2, **options))
    there = list(ClipReader(videos["vfr"], clip_frames=4, stride=2, background="process", queue_size=1, **options))
    assert len(here) > 3 and same_clips(here, there)


def test_a_damaged_video_reports_the_same_damage_and_warning(videos):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        here = ClipReader(videos["truncated"], clip_frames=8, stride=2, **RAW)
        here_clips = list(here)
        there = ClipReader(videos["truncated"], clip_frames=8, stride=2, background="process", **RAW)
        stream = iter(there)
        there_clips = list(stream)
    assert same_clips(here_clips, there_clips)
    assert here.damage is not None and there.damage == here.damage == stream.damage
    messages = [str(w.message) for w in caught if issubclass(w.category, VideoDecodeWarning)]
    assert len(messages) == 2 and messages[0] == messages[1]  # warned here, in the consumer, as before


def test_a_decoding_error_is_raised_here_with_its_message(videos):
    with pytest.raises(VideoError) as here:
        list(ClipReader(videos["garbage"], clip_frames=2, stride=1, **RAW))
    with pytest.raises(VideoError) as there:
        list(ClipReader(videos["garbage"], clip_frames=2, stride=1, background="process", **RAW))
    assert str(there.value) == str(here.value) and there.value.reason == here.value.reason


def test_other_errors_keep_their_type():
    def decode():
        yield from ()
        raise KeyError("no such thing")

    with pytest.raises(KeyError, match="no such thing"):
        list(clips_from_child(decode, _Progress(), 1, "video.mp4"))


def test_a_child_that_dies_is_an_error_not_a_hang():
    def decode():
        yield from ()
        os._exit(3)

    with pytest.raises(VideoError, match=r"video.mp4: the decoding process ended unexpectedly \(exit code 3\)"):
        list(clips_from_child(decode, _Progress(), 1, "video.mp4"))


def test_stopping_early_ends_the_child(videos):
    stream = iter(ClipReader(videos["cfr"], clip_frames=2, stride=1, background="process", queue_size=1, **RAW))
    next(stream)
    assert len(multiprocessing.active_children()) == 1
    stream.close()
    assert multiprocessing.active_children() == []


def test_stopping_early_ends_the_child_even_under_a_sigterm_handler(videos):
    """The CLI handles SIGTERM (to flush its records); a forked child inherits the handler,
    which must not keep it alive, blocked on a full queue, when the parent stops early."""
    import signal
    import threading

    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        def stop_early():
            stream = iter(ClipReader(videos["cfr"], clip_frames=1, stride=1, background="process", queue_size=1, **RAW))
            next(stream)
            stream.close()

        worker = threading.Thread(target=stop_early, daemon=True)
        worker.start()
        worker.join(timeout=60)
        assert not worker.is_alive(), "the parent is still waiting for its decoding child"
        assert multiprocessing.active_children() == []
    finally:
        signal.signal(signal.SIGTERM, previous)
