import math

import pytest
import torch

import itertools

from longvid.errors import LongvidError
from longvid.rewind.selection import (
    DFS, Candidates, NoSelector, OracleSelector, RandomSelector, UniformSelector, dpc_knn, relevance_cut,
    relevance_scores, sample_top_indices, select_frames, top_indices,
)


def naive_dpc_knn(features, num_select, k):
    """Explicit loops over frames, following the convention in the docstring."""
    n = features.shape[0]
    if num_select >= n:
        return list(range(n))
    dist = [[torch.sqrt(((features[i] - features[j]) ** 2).sum()) for j in range(n)] for i in range(n)]
    density = []
    for i in range(n):
        others = sorted(dist[i][j] for j in range(n) if j != i)[: min(k, n - 1)]
        density.append(torch.exp(-(torch.stack(others) ** 2).mean()))
    scores = []
    for i in range(n):
        denser = [dist[i][j] for j in range(n) if density[j] > density[i]]
        delta = min(denser) if denser else max(dist[i])
        scores.append(float(density[i] * delta))
    ranked = sorted(range(n), key=lambda i: (-scores[i], i))
    return sorted(ranked[:num_select])


@pytest.mark.parametrize("seed", range(6))
def test_dpc_knn_matches_naive_loops(seed):
    gen = torch.Generator().manual_seed(seed)
    n = 20 + seed
    features = torch.randn(n, 5, generator=gen, dtype=torch.float64)
    for num_select, k in [(8, 5), (3, 1), (10, 30)]:
        assert dpc_knn(features, num_select, k).tolist() == naive_dpc_knn(features, num_select, k)


@pytest.mark.parametrize("seed", range(4))
def test_dpc_knn_matches_naive_with_ties(seed):
    gen = torch.Generator().manual_seed(100 + seed)
    base = torch.randint(0, 3, (10, 2), generator=gen).double()  # integer grid: many equal distances
    features = torch.cat([base, base[:4]])  # exact duplicate frames: equal scores
    features = features[torch.randperm(len(features), generator=gen)]
    for num_select in (1, 4, 7):
        assert dpc_knn(features, num_select, 3).tolist() == naive_dpc_knn(features, num_select, 3)


def test_dpc_knn_ties_go_to_lower_index():
    # Equal densities (k=1): every frame gets its largest distance: scores 11, 10, 10, 11.
    features = torch.tensor([[0.0], [1.0], [10.0], [11.0]])
    assert dpc_knn(features, 1, 1).tolist() == [0]
    assert dpc_knn(features, 3, 1).tolist() == [0, 1, 3]


def test_dpc_knn_picks_one_frame_per_cluster():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0]])
    features = (centres.repeat_interleave(6, dim=0) + 0.1 * torch.randn(18, 2, generator=gen))
    chosen = dpc_knn(features, 3, 4)
    assert sorted(int(i) // 6 for i in chosen) == [0, 1, 2]
    assert chosen.tolist() == sorted(chosen.tolist())


def test_dpc_knn_small_inputs_and_errors():
    assert dpc_knn(torch.randn(3, 4), 8, 5).tolist() == [0, 1, 2]
    with pytest.raises(LongvidError, match="k >= 1"):
        dpc_knn(torch.randn(5, 4), 2, 0)
    with pytest.raises(LongvidError, match=r"\(N, D\)"):
        dpc_knn(torch.randn(5, 4, 2), 2, 1)


def test_top_indices_ties_and_order():
    scores = torch.tensor([1.0, 3.0, 2.0, 3.0, 2.0])
    assert top_indices(scores, 3).tolist() == [1, 2, 3]
    assert top_indices(scores, 10).tolist() == [0, 1, 2, 3, 4]


def test_relevance_scores_match_loops():
    gen = torch.Generator().manual_seed(1)
    tokens, query = torch.randn(7, 2, 16, generator=gen), torch.randn(16, generator=gen)
    expected = [sum(float(tokens[i, t] @ query) for t in range(2)) / 2 / math.sqrt(16) for i in range(7)]
    assert torch.allclose(relevance_scores(tokens, query), torch.tensor(expected), atol=1e-5)


def test_top_l_picks_frames_matching_planted_instruction():
    gen = torch.Generator().manual_seed(2)
    num_frames, dim = 100, 32
    tokens = 0.1 * torch.randn(num_frames, 2, dim, generator=gen)
    instruction = torch.randn(dim, generator=gen)
    planted = [5, 17, 18, 40, 41, 42, 77, 90]
    tokens[planted, 0] += instruction  # these frames "show" what the instruction asks about
    candidates = top_indices(relevance_scores(tokens, instruction), len(planted))
    assert candidates.tolist() == planted
    # Full DFS: L = 8 relevant frames, then K_c = 3 representatives among them.
    chosen = select_frames(relevance_scores(tokens, instruction), tokens.mean(1), top_l=8, num_select=3, k=2)
    assert len(chosen) == 3 and set(chosen.tolist()) <= set(planted)
    assert chosen.tolist() == sorted(chosen.tolist())


def plackett_luce_log_prob(scores, order):
    """log P(draw sequence ``order``) with explicit probabilities, one draw at a time."""
    left, total = list(range(len(scores))), 0.0
    for index in order:
        weights = [math.exp(float(scores[j].detach())) for j in left]
        total += math.log(math.exp(float(scores[index].detach())) / sum(weights))
        left.remove(index)
    return total


def test_sample_top_indices_log_prob_matches_explicit_draws():
    scores = torch.tensor([0.3, -1.2, 2.0, 0.0, 0.7], requires_grad=True)
    for seed in range(5):
        generator = torch.Generator().manual_seed(seed)
        drawn, log_prob = sample_top_indices(scores, 3, generator)
        assert len(drawn) == 3 and torch.equal(drawn, drawn.sort().values)
        # The Gumbel draw order is the order of score + noise; recover it with the same generator.
        noise = torch.rand(5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
        order = torch.argsort(scores.detach() + (-torch.log(-torch.log(noise))).float(), descending=True)[:3].tolist()
        assert sorted(order) == drawn.tolist()
        assert math.isclose(float(log_prob.detach()), plackett_luce_log_prob(scores, order), rel_tol=1e-5)


def test_sample_top_indices_frequencies_and_gradient_are_right():
    """Draw frequencies match the Plackett-Luce probabilities, and the score-function estimate
    mean(f * grad log p) matches the exact gradient of E[f] (f: frame 0 is among the draws)."""
    scores = torch.tensor([0.5, -0.5, 1.0, 0.0], requires_grad=True)
    exact = sum(torch.exp(sum(s - torch.logsumexp(scores[[j for j in range(4) if j not in order[:i]]], 0)
                              for i, s in enumerate(scores[list(order)])))
                for order in itertools.permutations(range(4), 2) if 0 in order)  # P(frame 0 drawn)
    (exact_grad,) = torch.autograd.grad(exact, scores)
    generator = torch.Generator().manual_seed(0)
    hits, estimate, draws = 0, torch.zeros(4), 4000
    for _ in range(draws):
        drawn, log_prob = sample_top_indices(scores, 2, generator)
        hit = float(0 in drawn.tolist())
        hits += hit
        if hit:
            estimate += torch.autograd.grad(log_prob, scores)[0]
    assert abs(hits / draws - float(exact.detach())) < 0.025
    assert torch.allclose(estimate / draws, exact_grad, atol=0.03)


def test_sample_top_indices_small_inputs():
    drawn, log_prob = sample_top_indices(torch.zeros(3), 5)
    assert drawn.tolist() == [0, 1, 2] and math.isclose(float(log_prob), -math.log(6), rel_tol=1e-6)  # 1/3! orders
    with pytest.raises(LongvidError, match="count"):
        sample_top_indices(torch.zeros(3), -1)


def test_select_frames_without_dpc_keeps_the_most_relevant():
    tokens = torch.randn(10, 2, 4)
    relevance = relevance_scores(tokens, torch.randn(4))
    expected = top_indices(relevance, 3)
    assert torch.equal(select_frames(relevance, tokens.mean(1), top_l=6, num_select=3, k=2, dpc=False), expected)


def candidates(n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return Candidates(torch.arange(n, dtype=torch.float64), torch.randn(n, generator=gen), torch.randn(n, 3, generator=gen))


def test_dfs_selector_is_top_l_then_dpc_knn():
    streams = [candidates(12, seed=1), candidates(5, seed=2), candidates(0)]
    chosen = DFS(top_l=6, num_select=3, k=2)(streams)
    for c, frames in zip(streams, chosen):
        top = top_indices(c.relevance, 6)
        assert torch.equal(frames, top[dpc_knn(c.vectors[top], 3, 2)])
    assert [len(f) for f in chosen] == [3, 3, 0]
    assert DFS(6, 3, 2).learned and not UniformSelector(3).learned


def naive_relevance_cut(relevance, top_l, min_keep):
    """Loops: rank the frames, try every n >= 1 with a frame after it, keep the first largest drop."""
    min_keep = max(min_keep, 1)
    values = relevance.tolist()
    ranked = sorted(range(len(values)), key=lambda i: (-values[i], i))
    best_n, best_drop = None, -math.inf
    for n in range(min_keep, min(top_l, len(values) - 1) + 1):
        drop = values[ranked[n - 1]] - values[ranked[n]]
        if drop > best_drop:
            best_n, best_drop = n, drop
    if best_n is None:
        best_n = min(top_l, len(values))
    return sorted(ranked[:best_n])


@pytest.mark.parametrize("seed", range(8))
def test_relevance_cut_matches_naive_loops(seed):
    gen = torch.Generator().manual_seed(seed)
    n = 3 + seed * 3
    relevance = torch.randn(n, generator=gen).round(decimals=1)  # rounded: equal values and equal drops happen
    for top_l, min_keep in [(4, 2), (8, 2), (n, 1), (n + 3, 2), (3, 3), (2, 4), (4, 0)]:
        assert relevance_cut(relevance, top_l, min_keep).tolist() == naive_relevance_cut(relevance, top_l, min_keep)


def test_relevance_cut_keeps_the_moments_a_question_is_about():
    # one moment: frames 5 and 6 stand out; two moments: frames 2, 3 then, lower, 9, 10
    one = torch.tensor([0.0, 0.1, -0.2, 0.3, 0.0, 6.0, 5.8, 0.2, 0.1, 0.0, 0.4, 0.0])
    two = torch.tensor([0.0, 0.1, 6.0, 5.9, 0.0, 0.2, 0.1, 0.0, 0.3, 4.1, 4.0, 0.0])
    assert relevance_cut(one, top_l=4, min_keep=2).tolist() == [5, 6]
    assert relevance_cut(two, top_l=4, min_keep=2).tolist() == [2, 3, 9, 10]
    assert relevance_cut(two, top_l=3, min_keep=2).tolist() == [2, 3]  # never more than L


def test_dfs_with_the_cut_reads_both_frames_of_one_moment_and_one_frame_of_each_of_two():
    """The failure the cut fixes: with one relevant moment, DPC-KNN over the top L keeps one of
    its frames and one unrelated frame; with the cut it reads that moment's two frames, and with
    two moments still one frame of each."""
    vectors = torch.zeros(12, 3)
    vectors[5] = vectors[6] = torch.tensor([4.0, 0.0, 0.0])  # the moment's two (near-identical) frames
    vectors[6, 1] = 0.1
    vectors[3], vectors[10] = torch.tensor([0.0, 3.0, 0.0]), torch.tensor([0.0, 3.1, 0.2])
    one = torch.tensor([0.0, 0.1, -0.2, 0.3, 0.0, 6.0, 5.8, 0.2, 0.1, 0.0, 0.4, 0.0])  # top 4: 5, 6, 10, 3
    plain = select_frames(one, vectors, top_l=4, num_select=2, k=2)
    assert len(set(plain.tolist()) & {5, 6}) == 1
    assert select_frames(one, vectors, top_l=4, num_select=2, k=2, cut=True).tolist() == [5, 6]
    two = torch.tensor([0.0, 0.1, 0.0, 4.0, 0.0, 6.0, 5.9, 0.0, 0.3, 0.2, 4.1, 0.0])  # moments {5, 6} and {3, 10}
    chosen = DFS(top_l=4, num_select=2, k=2, cut=True)([Candidates(torch.arange(12.0), two, vectors)])[0]
    assert len(set(chosen.tolist()) & {5, 6}) == 1 and len(set(chosen.tolist()) & {3, 10}) == 1


def test_uniform_random_and_no_selectors():
    streams = [candidates(9), candidates(2)]
    assert [f.tolist() for f in UniformSelector(3)(streams)] == [[0, 4, 8], [0, 1]]
    first = RandomSelector(3, torch.Generator().manual_seed(0))(streams)
    again = RandomSelector(3, torch.Generator().manual_seed(0))(streams)
    assert [f.tolist() for f in first] == [f.tolist() for f in again]  # drawn from the generator given
    assert all(len(set(f.tolist())) == len(f) and f.tolist() == sorted(f.tolist()) for f in first)
    assert [len(f) for f in first] == [3, 2]
    assert [f.tolist() for f in NoSelector()(streams)] == [[], []]


def test_oracle_reads_annotated_frames_first():
    streams = [candidates(10), candidates(10), candidates(10)]
    intervals = [[(2.0, 4.0)], [(0.5, 1.5), (8.0, 20.0)], [(3.0, 3.5)]]  # frames 2-3; 1, 8, 9; 3
    chosen = OracleSelector(3, intervals, torch.Generator().manual_seed(0))(streams)
    assert set(chosen[0].tolist()) > {2, 3} and chosen[1].tolist() == [1, 8, 9]
    assert 3 in chosen[2].tolist() and len(chosen[2]) == 3  # topped up with random other frames
    with pytest.raises(LongvidError, match="annotations for 3 streams, not 2"):
        OracleSelector(3, intervals, torch.Generator())(streams[:2])


def test_oracle_covers_every_interval_before_a_second_frame_of_one():
    streams = [candidates(10)] * 20
    intervals = [[(0.0, 4.0), (6.0, 8.0)]] * 20  # frames 0-3 and 6-7
    for chosen in OracleSelector(2, intervals, torch.Generator().manual_seed(0))(streams):
        assert int((chosen < 4).sum()) == 1 and int(((chosen >= 6) & (chosen < 8)).sum()) == 1
    drawn = OracleSelector(3, intervals, torch.Generator().manual_seed(0))(streams)
    assert all(set(c.tolist()) <= {0, 1, 2, 3, 6, 7} for c in drawn)  # a second frame of an interval, not outside
    assert len({tuple(c.tolist()) for c in drawn}) > 1  # in random order
