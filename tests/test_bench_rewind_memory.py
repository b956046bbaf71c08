import torch
import torch.nn.functional as F

from longvid.rewind.bench_memory import cue_labels, probe_accuracy, within_video_cosine


def test_cue_labels_mark_the_frames_inside_each_cue():
    times = torch.arange(8, dtype=torch.float64)
    assert cue_labels(times, [(2, 0.5, 2.5), (0, 5.5, 6.5)], no_cue=4).tolist() == [4, 2, 2, 4, 4, 4, 0, 4]


def test_probe_reads_a_linear_code_and_not_noise():
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 16, generator=generator) * 3

    def data(count):
        labels = torch.randint(5, (count,), generator=generator)
        return centres[labels] + torch.randn(count, 16, generator=generator), labels

    (x, y), (x_test, y_test) = data(400), data(200)
    assert probe_accuracy(x, y, x_test, y_test, 5) == {"cue": 100.0, "balanced": 100.0}
    noise = probe_accuracy(torch.randn(400, 16, generator=generator), y, torch.randn(200, 16, generator=generator), y_test, 5)
    assert noise["balanced"] < 40  # chance is 20


def test_within_video_cosine_against_a_loop():
    vectors = torch.randn(3, 4, 6, generator=torch.Generator().manual_seed(1))
    pairs = [float(F.cosine_similarity(v[i], v[j], dim=0)) for v in vectors for i in range(4) for j in range(4) if i != j]
    assert abs(within_video_cosine(vectors) - sum(pairs) / len(pairs)) < 1e-6
    assert abs(within_video_cosine(torch.ones(2, 3, 5)) - 1.0) < 1e-12
