"""StreamSampler: videos played as sequential streams, sharded, progressive, resumable."""

import json

import pytest
import torch

from longvid.engine.sampler import StreamSampler, segments
from longvid.data.sources import TensorVideos


def numbered_videos(lengths):
    """Video v's clip k is filled with the value 100 * v + k, so batches can be read back."""
    videos = [torch.stack([torch.full((1, 1, 1, 1), 100.0 * v + k) for k in range(n)]) for v, n in enumerate(lengths)]
    return TensorVideos(videos, [{"label": v} for v in range(len(lengths))])


def play(sampler):
    """[(slot values, is_first, valid)] per step."""
    return [(b.clips.flatten().tolist(), b.is_first.tolist(), b.valid.tolist()) for b in sampler]


def test_streams_play_videos_in_order_and_refill_slots():
    sampler = StreamSampler(numbered_videos([3, 1, 2, 2]), batch_size=2, shuffle=False)
    steps = play(sampler)
    assert steps == [
        ([0.0, 100.0], [True, True], [True, True]),
        ([1.0, 200.0], [False, True], [True, True]),  # video 1 ended -> video 2 in slot 1
        ([2.0, 201.0], [False, False], [True, True]),
        ([300.0, 0.0], [True, False], [True, False]),  # video 3 takes slot 0; slot 1 is empty
        ([301.0, 0.0], [False, False], [True, False]),
    ]
    batch = next(iter(StreamSampler(numbered_videos([3, 1]), batch_size=2, shuffle=False)))
    assert batch.targets["label"].tolist() == [0, 1] and batch.video.tolist() == [0, 1] and batch.clip.tolist() == [0, 0]


def test_progressive_segments_restart_memory():
    source = numbered_videos([5, 2])
    assert segments(source, 2) == [(0, 0, 2), (0, 2, 2), (0, 4, 1), (1, 0, 2)]
    steps = play(StreamSampler(source, batch_size=1, clips_per_video=2, shuffle=False))
    assert [s[0][0] for s in steps] == [0, 1, 2, 3, 4, 100, 101]
    assert [s[1][0] for s in steps] == [True, False, True, False, True, True, False]


def test_sharding_across_ranks_is_a_partition_in_temporal_order():
    lengths = [3, 1, 4, 2, 2, 5, 1]
    source = numbered_videos(lengths)
    seen = []
    for rank in range(3):
        sampler = StreamSampler(source, batch_size=2, shuffle=True, seed=7, rank=rank, world_size=3)
        per_video = {}
        for batch in sampler:
            for v, k in zip(batch.video.tolist(), batch.clip.tolist()):
                if v >= 0:
                    per_video.setdefault(v, []).append(k)
        for v, ks in per_video.items():
            assert ks == list(range(lengths[v]))  # each stream in temporal order
        seen += list(per_video)
    assert sorted(seen) == list(range(len(lengths)))  # every video on exactly one rank
    a = play(StreamSampler(source, 2, seed=7, rank=1, world_size=3))
    assert a == play(StreamSampler(source, 2, seed=7, rank=1, world_size=3))  # deterministic


def test_sampler_state_resumes_exactly():
    source = numbered_videos([3, 1, 4, 2, 2])
    full = play(StreamSampler(source, batch_size=2, seed=3))
    first = StreamSampler(source, batch_size=2, seed=3)
    head = [next(iter(first)) for _ in range(3)]
    state = json.loads(json.dumps(first.state_dict()))
    second = StreamSampler(source, batch_size=2, seed=3)
    second.load_state_dict(state)
    rest = play(second)
    assert [(b.clips.flatten().tolist(), b.is_first.tolist(), b.valid.tolist()) for b in head] + rest == full
    with pytest.raises(Exception, match="same number of processes"):
        StreamSampler(source, 2, rank=0, world_size=2).load_state_dict(state)


@pytest.mark.parametrize("lengths, batch", [([3, 1, 2, 2], 2), ([7, 1, 1, 1, 5, 2, 9, 1], 3), ([1] * 5, 2), ([4], 3)])
def test_len_is_the_number_of_steps(lengths, batch):
    for shuffle in (False, True):
        sampler = StreamSampler(numbered_videos(lengths), batch_size=batch, shuffle=shuffle, seed=3)
        assert len(sampler) == len(play(StreamSampler(numbered_videos(lengths), batch_size=batch, shuffle=shuffle, seed=3)))
