import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import longvid
from longvid.errors import LongvidError
from longvid.core.encoders import FrozenImageEncoder
from longvid.rewind import (
    DFS, PRESETS, NoSelector, OracleSelector, RandomSelector, ReWind, RewindMemoryConfig, RewindState, UniformSelector,
    build_model, describe, get_config, select_frames, trainable_state_dict,
)
from longvid.rewind.model import pool_frame_features, sigmoid_contrastive_loss
from longvid.rewind.selection import relevance_scores
from longvid.core.stream import Frames
from longvid.core.tiny import tiny_llm

transformers = pytest.importorskip("transformers")


def tiny_vision(width, image_size, patch):
    """The shared frozen encoder on a random tiny CLIP tower: ``(image_size/patch)^2 + 1`` tokens."""
    config = transformers.CLIPVisionConfig(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=1,
                                           num_attention_heads=4, image_size=image_size, patch_size=patch)
    torch.manual_seed(0)
    return FrozenImageEncoder(transformers.CLIPVisionModel(config), image_size)


def build(config, image_size=32, patch=8, seed=0):
    torch.manual_seed(seed)
    vision = tiny_vision(config.memory.vision_dim, image_size, patch)
    model = ReWind(config, vision, tiny_llm(hidden=64)).eval()
    for p in model.memory.parameters():
        nn.init.normal_(p, std=0.2)
    return model


def watch(model, video, questions=None, step=None, state=None):
    """Feed ``video (B, 3, N, H, W)`` at 1 fps in steps of ``step`` frames (default: sub-clips), the
    ``questions`` as instructions."""
    batch, _, total = video.shape[:3]
    step = step or model.config.clip_frames
    state = model.init_state(batch, instructions=questions) if state is None else state
    times = torch.arange(total, dtype=torch.float64).expand(batch, -1)
    for start in range(0, total, step):
        frames = Frames(video[:, :, start : start + step].transpose(1, 2), times[:, start : start + step])
        _, state = model(frames, state)
    return state


def test_llm_input_length_paper_settings():
    paper = get_config("rewind_paper")
    memory = RewindMemoryConfig(**{**paper.memory.__dict__, "dim": 32, "vision_dim": 16, "text_dim": 64, "num_heads": 4,
                                   "perceiver_layers": 1, "mlp_ratio": 1.0})
    config = get_config("rewind_paper", memory=memory, llm_dim=64, lora_rank=4)
    assert (config.memory.num_read, config.memory.num_write, config.top_l, config.num_select, config.frame_tokens) == (32, 2, 64, 8, 32)
    model = build(config, image_size=64, patch=4)  # a 16x16 patch grid (+ CLS), as EVA-CLIP ViT-g at 224
    question = "what happens"
    ids, mask = model.tokenize([question])
    with torch.no_grad():
        state = watch(model, torch.rand(1, 3, 100, 64, 64), [question])
        (prompt,) = model.prompt_embeddings(state, ids, mask)
        assert prompt.shape == (100 * 2 + 1 + 8 * 32 + 3, 64)
        (early,) = model.prompt_embeddings(state, ids, mask, until=29.0)  # breakpoint: 30 frames seen
        assert early.shape == (30 * 2 + 1 + 8 * 32 + 3, 64)
    assert state.frames.num_stored() == [100] and state.frames.ram_nbytes == 100 * 257 * 16 * 4


@torch.no_grad()
def test_question_at_time_t_ignores_later_frames():
    model = build(get_config("rewind_tiny"))
    video, question = torch.rand(1, 3, 21, 32, 32), ["what color is the square"]
    ids, mask = model.tokenize(question)
    full = watch(model, video, question)
    cut = watch(model, video[:, :, :13], question)  # the stream as seen at t = 12 s
    assert model.select(full, question, until=12.0)[0].tolist() == model.select(cut, question)[0].tolist()
    (a,) = model.llm.hidden_states(model.prompt_embeddings(full, ids, mask, until=12.0))
    (b,) = model.llm.hidden_states(model.prompt_embeddings(cut, ids, mask))
    assert a.shape == b.shape and torch.allclose(a, b, atol=1e-4)
    assert torch.equal(model.generate(full, ids, mask, until=12.0, max_new_tokens=4), model.generate(cut, ids, mask, max_new_tokens=4))


@torch.no_grad()
def test_batched_streams_match_single_streams():
    model = build(get_config("rewind_tiny"), seed=1)
    video, questions = torch.rand(2, 3, 11, 32, 32), ["what color is the square", "what happens"]  # 6 and 3 tokens
    ids, mask = model.tokenize(questions)
    both = watch(model, video, questions)
    hidden = model.llm.hidden_states(model.prompt_embeddings(both, ids, mask))  # ragged: 6 and 3 question tokens
    for b in range(2):
        alone = watch(model, video[b : b + 1], questions[b : b + 1])
        (single,) = model.llm.hidden_states(model.prompt_embeddings(alone, *model.tokenize(questions[b : b + 1])))
        assert torch.allclose(single, hidden[b], atol=1e-4)


@torch.no_grad()
@pytest.mark.parametrize("step", [1, 3, 20])
def test_steps_of_any_size_give_the_same_memory_and_selection(step):
    """T one-frame steps equal one T-frame step: sub-clips count from the stream's first frame."""
    model = build(get_config("rewind_tiny"), seed=8)
    nn.init.normal_(model.select_query.weight, std=0.5)  # a trained query: DFS is not a tie
    video, questions = torch.rand(2, 3, 20, 32, 32), ["what color is the square", "where is the circle"]
    by_clip = watch(model, video, questions)
    other = watch(model, video, questions, step=step)
    assert torch.allclose(other.memory.tokens, by_clip.memory.tokens, atol=1e-5)
    assert [f.tolist() for f in model.select(other, questions)] == [f.tolist() for f in model.select(by_clip, questions)]
    assert all(torch.allclose(other.frames.stream_features(b), by_clip.frames.stream_features(b), atol=1e-5) for b in range(2))


@torch.no_grad()
def test_selection_over_a_state_is_dfs_over_its_frames():
    """The model's selection equals DFS computed by hand over the memory tokens of every frame fed."""
    model = build(get_config("rewind_tiny"), seed=9)
    nn.init.normal_(model.select_query.weight, std=0.5)
    questions = ["what color is the square", "where is the circle"]
    state = watch(model, torch.rand(2, 3, 19, 32, 32), questions, step=5)
    ids, mask = model.tokenize(questions)
    words = model.llm.embed(ids) * mask[..., None]
    query = model.select_query(words.sum(1) / mask.sum(1, keepdim=True))  # (B, D)
    c = model.config
    for b, chosen in enumerate(model.select(state, questions)):
        tokens = state.memory.tokens[b, : 2 * 19].reshape(19, 2, -1)  # every frame's two tokens
        keys = model.select_key((tokens[:, 0] + tokens[:, 1]) / 2)  # (19, D) each frame's mean token
        relevance = model.log_scale.exp() * torch.stack([F.cosine_similarity(k, query[b], dim=0) for k in keys])
        assert torch.allclose(model.frame_candidates(state, ids, mask)[b].relevance, relevance, atol=1e-4)
        assert chosen.tolist() == select_frames(relevance, tokens.mean(1), c.top_l, c.num_select, c.dpc_k).tolist()
        assert len(chosen) == c.num_select


@torch.no_grad()
def test_padded_frames_leave_their_stream_as_it_was():
    model = build(get_config("rewind_tiny"), seed=10)
    questions = ["what color is the square", "what happens"]
    state = watch(model, torch.rand(2, 3, 5, 32, 32), questions)
    pixels, times = torch.rand(2, 4, 3, 32, 32), torch.arange(5, 9, dtype=torch.float64).expand(2, -1)
    out, after = model(Frames(pixels, times, torch.tensor([[True, True, False, False], [False] * 4])), state)
    kept, other = after.index_select(torch.tensor([1])), state.index_select(torch.tensor([1]))
    assert torch.all(out["memory_tokens"][1] == 0) and torch.all(out["memory_tokens"][0, 2:] == 0)
    assert kept.memory.num_frames.tolist() == [5] and kept.frames.num_stored() == [5]
    assert torch.equal(kept.memory.frame_tokens(0)[0], other.memory.frame_tokens(0)[0])
    assert torch.equal(kept.memory.open, other.memory.open) and torch.equal(kept.memory.summary, other.memory.summary)
    # Stream 0 read its two real frames only: the same as a step of those two.
    _, two = model(Frames(pixels[:, :2], times[:, :2]), state)
    assert torch.equal(after.memory.frame_tokens(0)[0], two.memory.frame_tokens(0)[0])
    with pytest.raises(LongvidError, match="padding after a stream's last frame"):
        model(Frames(pixels, times, torch.tensor([[True, False, True, False], [True] * 4])), state)
    with pytest.raises(LongvidError, match="3 questions for 2 streams"):
        model.answer(state, questions + ["what"])
    for wrong in (["what"], "ab"):
        with pytest.raises(LongvidError, match="one instruction per stream: a list of 2 strings"):
            model.init_state(2, instructions=wrong)


@torch.no_grad()
def test_a_stream_is_bitwise_unchanged_by_neighbours_of_other_lengths():
    """Neighbours that watch more or fewer frames (padding marked invalid) change the padded
    width of the batch's memory, not the stream's outputs, memory, selected frames or LLM prompt
    (bitwise), nor its answers' scores (to rounding)."""
    model = build_model("rewind_tiny").eval()

    def run(neighbour_frames: int):
        state, outs = model.init_state(3), []
        for s in range(4):
            frames = Frames.cat([model.dummy_inputs(1, seed=10 * neighbour_frames + s), model.dummy_inputs(1, seed=s),
                                 model.dummy_inputs(1, seed=20 * neighbour_frames + s)])
            valid = torch.arange(8)[None] < torch.tensor([[neighbour_frames], [5], [neighbour_frames]])
            out, state = model(Frames(frames.pixels, frames.timestamps, valid), state)
            outs.append(out["memory_tokens"][1])
        return outs, state

    (longer, a), (shorter, b) = run(8), run(2)
    assert a.memory.tokens.shape != b.memory.tokens.shape
    assert all(torch.equal(x, y) for x, y in zip(longer, shorter))
    assert torch.equal(a.memory.frame_tokens(1)[0], b.memory.frame_tokens(1)[0])
    questions = ["what happens"] * 3
    assert torch.equal(model.select(a, questions)[1], model.select(b, questions)[1])
    ids, mask = model.tokenize(questions)
    assert torch.equal(model.prompt_embeddings(a, ids, mask)[1], model.prompt_embeddings(b, ids, mask)[1])
    # the LLM reads the batch left-padded to its longest prompt: one thread's kernels round a row
    # differently with another padding (~5e-7 here), so the answers' scores agree to rounding
    assert torch.allclose(model.score(a, questions, ["red", "blue"])[1], model.score(b, questions, ["red", "blue"])[1],
                          atol=1e-5, rtol=0)


def test_stage2_loss_trains_memory_projections_and_lora_only():
    model = build(get_config("rewind_tiny"), seed=2)
    trainable = model.set_stage(2)
    questions = ["what color is the square", "where is the circle"]
    ids, mask = model.tokenize(questions)
    answers = ["red green", "blue"]
    state = watch(model, torch.rand(2, 3, 10, 32, 32), questions)
    loss = model.answer_loss(state, questions, answers)
    # Reference: cross-entropy of each answer token given everything before it, each stream alone and unpadded.
    expected, count = 0.0, 0
    for prompt, answer in zip(model.prompt_embeddings(state, ids, mask), model.llm.tokenize_answers(answers)):
        sequence = torch.cat([prompt, model.llm.embed(torch.tensor([answer]))[0]])[None]
        logits = model.llm.model(inputs_embeds=sequence).logits[0, len(prompt) - 1 : -1]  # (A, V)
        expected += sum(-torch.log_softmax(logits[i], -1)[answer[i]] for i in range(len(answer)))
        count += len(answer)
    assert torch.allclose(loss, expected / count, atol=1e-5)
    loss.backward()
    names = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any("lora_" in n for n in names) and "separator" in names and "frame_proj.weight" in names
    assert any(n.startswith("memory.perceive") for n in names) and "memory_proj.weight" in names
    assert not any(n.startswith("encoder") or ("llm" in n and "lora_" not in n) for n in names)
    assert all(p.requires_grad for p in trainable) and not model.video_head.weight.requires_grad


def test_stage1_sigmoid_contrastive_loss():
    gen = torch.Generator().manual_seed(3)
    video, text = torch.randn(4, 8, generator=gen), torch.randn(4, 8, generator=gen)
    scale, bias = torch.tensor(math.log(10.0)), torch.tensor(-10.0)
    v, t = video / video.norm(dim=1, keepdim=True), text / text.norm(dim=1, keepdim=True)
    expected = 0.0
    for i in range(4):
        for j in range(4):
            z = 1.0 if i == j else -1.0
            expected -= math.log(1 / (1 + math.exp(-z * (10.0 * float(v[i] @ t[j]) - 10.0))))
    assert math.isclose(float(sigmoid_contrastive_loss(video, text, scale, bias)), expected / 4, rel_tol=1e-5)

    model = build(get_config("rewind_tiny"), seed=3)
    model.set_stage(1)
    state = model.init_state(2)  # no instruction in stage 1
    clip = Frames(torch.rand(2, 4, 3, 32, 32), torch.zeros(2, 4, dtype=torch.float64))
    out, _ = model(clip, state)
    loss = model.contrastive_loss(out["memory_tokens"], torch.tensor([4, 3]), torch.randint(0, 50, (2, 6)),
                                  torch.ones(2, 6, dtype=torch.bool))
    loss.backward()
    names = {n for n, p in model.named_parameters() if p.grad is not None}
    assert {"log_scale", "bias", "video_head.weight", "text_head.weight"} <= names
    assert any(n.startswith("memory.perceive") for n in names)
    assert not any(n.startswith(("llm", "encoder", "frame_proj", "memory_proj", "separator")) for n in names)


def test_pool_frame_features_and_errors():
    features = torch.arange(2 * 17 * 3, dtype=torch.float32).reshape(2, 17, 3)  # CLS + 4x4 grid
    pooled = pool_frame_features(features, (2, 2))
    grid = features[:, 1:].reshape(2, 4, 4, 3)
    assert torch.allclose(pooled[:, 1], grid[:, 0:2, 2:4].mean(dim=(1, 2)))
    with pytest.raises(LongvidError, match="square patch grid"):
        pool_frame_features(torch.randn(1, 7, 3), (2, 2))
    with pytest.raises(LongvidError, match="unknown ReWind preset"):
        get_config("rewind_huge")
    with pytest.raises(LongvidError, match="must equal llm_dim"):
        get_config("rewind_tiny", llm_dim=32)
    with pytest.raises(LongvidError, match="unknown config field.*use_dfs.* for ReWind preset"):
        get_config("rewind_tiny", use_dfs=False)


def test_text_api_answers_scores_and_trains():
    model = build(get_config("rewind_tiny"), seed=4)
    questions = ["what color is the square", "where is the circle"]
    state = watch(model, torch.rand(2, 3, 9, 32, 32), questions)
    answers = model.answer(state, questions, max_new_tokens=3)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    scores = model.score(state, questions, ["red", "blue green"])
    assert scores.shape == (2, 2) and torch.all(scores < 0)
    # The score of a candidate is its answer log-likelihood: minus the loss times its token count (with EOS).
    single = watch(model, torch.rand(1, 3, 9, 32, 32), questions[:1])
    nll = model.answer_loss(single, questions[:1], ["blue green"])
    assert torch.allclose(model.score(single, questions[:1], ["blue green"])[0, 0], -3 * nll, atol=1e-4)


@torch.no_grad()
def test_selectors_choose_what_the_llm_reads():
    model = build(get_config("rewind_tiny"), seed=11)
    questions = ["what color is the square", "where is the circle"]
    state = watch(model, torch.rand(2, 3, 12, 32, 32), questions)
    ids, mask = model.tokenize(questions)
    assert [f.tolist() for f in model.select(state, questions, selector=UniformSelector(3))] == [[0, 6, 11]] * 2
    oracle = OracleSelector(2, [[(4.0, 6.0)], [(9.0, 10.0)]], torch.Generator())
    assert [f.tolist() for f in model.select(state, questions, selector=oracle)][0] == [4, 5]
    # score(selector=...) reads the frames the selector picks, for every candidate alike.
    frames = model.select(state, questions, selector=RandomSelector(2, torch.Generator().manual_seed(1)))
    drawn = model.score(state, questions, ["red", "blue"], selector=RandomSelector(2, torch.Generator().manual_seed(1)))
    assert torch.equal(drawn, model.score(state, questions, ["red", "blue"], frames=frames))
    (prompt, _) = model.prompt_embeddings(state, ids, mask, frames=model.select(state, questions, selector=NoSelector()))
    assert len(prompt) == 2 * 12 + 1 + len(model.llm.tokenize_prompts(questions[:1])[0])  # memory tokens only
    no_dpc = DFS(8, 2, 2, dpc=False)
    assert len(model.select(state, questions, selector=no_dpc)[0]) == 2


@torch.no_grad()
def test_reread_frames_carry_their_order_and_cell_codes():
    model = build(get_config("rewind_tiny"), seed=3)  # K_c = 2 frames of 2 x 2 cells
    nn.init.normal_(model.frame_order, std=1.0)
    nn.init.normal_(model.frame_cell, std=1.0)
    question = ["where is the circle"]
    state = watch(model, torch.rand(1, 3, 12, 32, 32), question)
    ids, mask = model.tokenize(question)
    picked = torch.tensor([1, 4, 9])  # a third frame past K_c takes the last order code
    (prompt,) = model.prompt_embeddings(state, ids, mask, frames=[picked])
    expected = []
    for place, frame in enumerate(picked.tolist()):
        grid = state.frames.read(0, torch.tensor([frame]))[0, 1:].reshape(4, 4, -1)  # (4, 4, D_v) without CLS
        for row in range(2):
            for col in range(2):
                cell = grid[2 * row : 2 * row + 2, 2 * col : 2 * col + 2].mean((0, 1))  # (D_v,)
                codes = model.frame_order[min(place, 1)] + model.frame_cell[2 * row + col]
                expected.append(model.frame_proj(cell) + codes)
    start = 2 * 12 + 1  # after the memory tokens and the separator
    torch.testing.assert_close(prompt[start : start + 12], torch.stack(expected))


def test_watch_and_evaluation():
    from longvid.rewind.evaluate import VideoQuestion, evaluate_grounding, evaluate_qa, parse_interval

    assert parse_interval("from 12.5 to 3 s") == (3.0, 12.5) and parse_interval("never") is None
    model = build(get_config("rewind_tiny"), seed=5)
    video, times = torch.rand(1, 3, 11, 32, 32), torch.arange(11, dtype=torch.float64)[None]
    question = "what color is the square"
    with torch.no_grad():
        reference = watch(model, video, [question], step=1)
        state = model.watch(Frames(video.transpose(1, 2), times), model.init_state(1, instructions=[question]))
    assert torch.allclose(state.memory.tokens, reference.memory.tokens, atol=1e-5)
    candidates = ["red", "blue"]
    choice = int(model.score(state, [question], candidates)[0].argmax())
    right, wrong = candidates[choice], candidates[1 - choice]
    items = [VideoQuestion(video[0], times[0], question, answer) for answer in (right, right, wrong)]
    assert evaluate_qa(model, items, candidates) == {"accuracy": pytest.approx(200 / 3), "samples": 3.0}
    question = "when does the red flash"
    grounding = evaluate_grounding(model, [VideoQuestion(video[0], times[0], question, (2.0, 4.0))], 3)
    assert set(grounding) == {"R@0.3", "R@0.5", "R@0.7", "mIoU", "readable"}
    with torch.no_grad():  # the same answer, scored by hand
        state = model.watch(Frames(video.transpose(1, 2), times), model.init_state(1, instructions=[question]))
        interval = parse_interval(model.answer(state, [question], max_new_tokens=3)[0])
    start, end = interval or (0.0, 0.0)
    overlap = max(0.0, min(end, 4.0) - max(start, 2.0))
    iou = overlap / ((end - start) + (4.0 - 2.0) - overlap)
    assert grounding["mIoU"] == pytest.approx(100 * iou) and grounding["readable"] == (100.0 if interval else 0.0)


def test_frame_contrastive_loss_against_a_loop():
    """The frame-level SigLIP loss scores every frame against every caption through the DFS
    projections, with the same logit as the relevance (plus the bias)."""
    model = build(get_config("rewind_tiny"), seed=6)
    tokens = torch.randn(5, 2, 32)
    ids, mask = model.tokenize(["the red square flashes", "an object flashes", "the blue disk flashes"])
    positives = torch.tensor([[1, 1, 0], [0, 0, 0], [0, 1, 1], [0, 0, 0], [1, 1, 0]], dtype=torch.bool)
    loss = model.frame_contrastive_loss(tokens, positives, ids, mask)
    words = model.llm.embed(ids) * mask[..., None]
    texts = model.select_query(words.sum(1) / mask.sum(1, keepdim=True))  # (3, D)
    total = 0.0
    for i in range(5):
        key = model.select_key(tokens[i].mean(0))
        for j in range(3):
            logit = model.log_scale.exp() * F.cosine_similarity(key, texts[j], dim=0) + model.bias
            total -= float(F.logsigmoid(logit if positives[i, j] else -logit))
    assert math.isclose(float(loss), total / 5, rel_tol=1e-5)
    with torch.no_grad():  # the relevance of a caption to a frame is that logit without the bias
        query = model.instruction_query(ids[:1], mask[:1])[0]
        relevance = relevance_scores(model.frame_keys(tokens), query)
        cosine = F.cosine_similarity(model.select_key(tokens.mean(1)), texts[0][None], dim=1)
        assert torch.allclose(relevance, model.log_scale.exp() * cosine, atol=1e-5)


def test_policy_weight_trains_the_dfs_projections():
    model = build(get_config("rewind_tiny"), seed=7)
    model.set_stage(2)
    nn.init.normal_(model.select_query.weight, std=0.5)  # a trained query: draws are no longer uniform
    questions, answers = ["what color is the square", "where is the circle"], ["red", "blue green"]
    ids, mask = model.tokenize(questions)
    state = watch(model, torch.rand(2, 3, 12, 32, 32), questions)

    def query_grad(weight, seed=0, selector=None):
        model.zero_grad()
        torch.manual_seed(seed)
        loss = model.answer_loss(state, questions, answers, policy_weight=weight, selector=selector)
        loss.backward(retain_graph=True)
        grad = model.select_query.weight.grad
        return loss, 0.0 if grad is None else float(grad.abs().sum())

    assert query_grad(None)[1] == 0.0 and query_grad(0.0)[1] == 0.0  # cross-entropy alone cannot reach selection
    assert query_grad(2.0, selector=UniformSelector(2))[1] == 0.0  # only a learned selector is trained
    loss, grad = query_grad(2.0)
    assert grad > 0
    # The loss is the drawn frames' cross-entropy plus the REINFORCE term against DFS's frames.
    torch.manual_seed(0)
    frames, log_probs = model.sample_selection(state, ids, mask)
    assert all(len(f) == model.config.num_select for f in frames)
    lengths = torch.tensor([len(a) for a in model.llm.tokenize_answers(answers)])
    assert lengths.tolist() == [2, 3]
    def mean_nll(frames=None):
        prompts = model.prompt_embeddings(state, ids, mask, frames=frames)
        return -model.llm.log_likelihood(prompts, None, answers, normalize=True, padding="left")

    drawn, chosen = mean_nll(frames), mean_nll()
    assert torch.allclose(loss, drawn.mean(), atol=1e-5)  # the REINFORCE term adds gradient, not value
    model.zero_grad()
    (2.0 * ((drawn - chosen).detach() * log_probs).mean()).backward()
    assert torch.allclose(model.select_query.weight.grad.abs().sum(), torch.tensor(grad), rtol=1e-4)
    # mean_nll is each stream's mean token cross-entropy: its token-weighted mean is the usual loss.
    assert torch.allclose((chosen * lengths).sum() / lengths.sum(), model.answer_loss(state, questions, answers), atol=1e-5)


# -- building and the state ----------------------------------------------------------------


def test_build_model_is_seeded_and_leaves_the_global_rng_alone():
    rng = torch.get_rng_state()
    a, b = longvid.build_model("rewind_tiny"), build_model("rewind_tiny")
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    other = build_model("rewind_tiny", seed=1)
    assert not torch.equal(other.memory.read_queries, a.memory.read_queries)
    assert any("lora_" in name for name in trainable_state_dict(a))  # LoRA as the preset says
    assert not any("lora_" in name for name, _ in build_model("rewind_tiny", lora_rank=0).named_parameters())
    assert set(PRESETS) == {"rewind_paper", "rewind_tiny"} and "tiny random" in describe("rewind_tiny")
    assert "encoder=" in describe("rewind_paper")
    with pytest.raises(LongvidError, match="rewind_paper needs an image encoder"):
        build_model("rewind_paper")


def test_build_model_loads_backbones_and_weights_by_path(tmp_path):
    from safetensors.torch import save_file

    from longvid.core.tiny import save_tiny_llm, save_tiny_vision

    vision, llm = save_tiny_vision(str(tmp_path / "vision"), hidden=48), save_tiny_llm(str(tmp_path / "llm"), hidden=32)
    model = build_model("rewind_tiny", encoder=vision, llm=llm, seed=3)
    assert (model.config.memory.vision_dim, model.config.llm_dim, model.config.memory.text_dim) == (48, 32, 32)
    weights = str(tmp_path / "w.safetensors")
    save_file({k: v.contiguous() for k, v in trainable_state_dict(model).items()}, weights)
    loaded = build_model("rewind_tiny", encoder=vision, llm=llm, checkpoint=weights)
    assert all(torch.equal(v, trainable_state_dict(loaded)[k]) for k, v in trainable_state_dict(model).items())
    with pytest.raises(LongvidError, match="no such weights file"):
        build_model("rewind_tiny", checkpoint=tmp_path / "missing.safetensors")


@torch.no_grad()
def test_state_rows_move_copy_and_convert():
    model = build_model("rewind_tiny").eval()
    state = model.init_state(3, instructions=["what color is the square", "what happens", "where is the circle"])
    for seed in range(2):
        _, state = model(model.dummy_inputs(3, seed=seed), state)
    swapped = state.index_select(torch.tensor([2, 0]))
    assert swapped.batch_size == 2 and torch.equal(swapped.memory.tokens[1], state.memory.tokens[0])
    assert torch.equal(swapped.frames.stream_features(0), state.frames.stream_features(2))
    back = state.reset(torch.tensor([True, False, True])).index_copy(torch.tensor([2, 0]), swapped)
    assert all(torch.equal(v, state.state_dict()[k]) for k, v in back.state_dict().items())
    short = model.init_state(1, instructions=["a"])  # a shorter instruction and no frames
    mixed = state.index_copy(torch.tensor([1]), short)
    assert mixed.memory.num_frames.tolist() == [16, 0, 16] and mixed.instruction_mask[1].sum() == 2
    assert mixed.frames.num_stored() == [16, 0, 16]
    wider = model.init_state(2).index_copy(torch.tensor([1]), state.index_select(torch.tensor([0])))  # more frames, longer text
    assert torch.equal(wider.memory.frame_tokens(1)[0], state.memory.frame_tokens(0)[0]) and wider.memory.num_frames.tolist() == [0, 16]
    assert torch.equal(wider.instruction_ids[1], state.instruction_ids[0]) and not wider.instruction_mask[0].any()
    assert state.nbytes == sum(t.numel() * t.element_size() for k, t in state.state_dict().items()
                               if k not in ("memory.num_write", "frames.keep_every"))
    double = state.to(dtype=torch.float64)
    assert double.memory.tokens.dtype == torch.float64 and double.memory.times.dtype == torch.float64
    assert double.memory.num_frames.dtype == torch.long and double.instruction_ids.dtype == torch.long
    assert state.detach().memory.tokens is not state.memory.tokens
    with pytest.raises(LongvidError, match=r"reset mask must have shape \(3,\)"):
        state.reset(torch.tensor([True]))


@torch.no_grad()
def test_a_spilled_state_saves_and_continues_in_ram(tmp_path):
    model = build_model("rewind_tiny").eval()
    state = model.init_state(2, instructions=["what color is the square", "what happens"], keep_every=3,
                             spill_dir=tmp_path / "spill")
    for seed in range(2):
        _, state = model(model.dummy_inputs(2, seed=seed), state)
    assert state.frames.ram_nbytes == 0 and state.frames.disk_nbytes > 0 and state.frames.num_stored() == [6, 6]
    longvid.save_state(state, tmp_path / "state.safetensors")
    loaded = longvid.load_state(tmp_path / "state.safetensors")
    assert isinstance(loaded, RewindState) and loaded.frames.disk_nbytes == 0
    assert loaded.frames.ram_nbytes == state.frames.disk_nbytes and loaded.frames.keep_every == 3
    questions, step = ["what color is the square", "what happens"], model.dummy_inputs(2, seed=5)

    def same_scores(a, b):
        assert torch.equal(model.score(a, questions, ["red", "blue"]), model.score(b, questions, ["red", "blue"]))

    same_scores(state, loaded)
    same_scores(model(step, state)[1], model(step, loaded)[1])
    # A fresh state (nothing stored yet) and the storage dtype policy survive the round trip too.
    longvid.save_state(model.init_state(2, feature_dtype=torch.float16), tmp_path / "fresh.safetensors")
    fresh = longvid.load_state(tmp_path / "fresh.safetensors")
    assert fresh.frames.num_stored() == [0, 0] and fresh.frames.dtype == torch.float16
    assert model(step, fresh)[1].frames.stream_features(0).dtype == torch.float16


def _left_pad(rows):
    """Hand-built left padding of ``(L_b, D)`` rows: embeds ``(B, L, D)`` (zeros on pads), mask and positions ``(B, L)``."""
    length = max(len(row) for row in rows)
    embeds, mask = torch.zeros(len(rows), length, rows[0].shape[1]), torch.zeros(len(rows), length, dtype=torch.long)
    for b, row in enumerate(rows):
        embeds[b, length - len(row):], mask[b, length - len(row):] = row, 1
    return embeds, mask, (mask.cumsum(-1) - 1).clamp(min=0)


def _reference_outputs(model, prompts, answers):
    """``[prompt_b][answer_b + eos]`` left-padded by hand: the LLM's output (its ``loss`` from ``labels``) and labels ``(B, L)``."""
    answer_ids = model.llm.tokenize_answers(answers)
    embeds, mask, positions = _left_pad([torch.cat([p, model.llm.embed(torch.tensor([a]))[0]]) for p, a in zip(prompts, answer_ids)])
    labels = torch.full(mask.shape, -100)
    for b, answer in enumerate(answer_ids):
        labels[b, -len(answer):] = torch.tensor(answer)
    return model.llm.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, labels=labels), labels


def test_the_llm_reads_ragged_prompts_left_padded():
    """Streams with memories and questions of different lengths: the shared adapter's loss, answer
    log-likelihoods, scores, hidden states and generation are bitwise those of a hand-built
    left-padded batch (the layout ReWind was trained with)."""
    from longvid.core.llm import answer_log_likelihood

    model = build(get_config("rewind_tiny"), seed=3)
    model.set_stage(2)
    questions, answers = ["what color is the square", "what happens"], ["red", "blue square"]
    state = watch(model, torch.rand(2, 3, 9, 32, 32), questions)
    state = state.index_copy(torch.tensor([1]), watch(model, torch.rand(1, 3, 5, 32, 32), questions[1:]))
    ids, mask = model.tokenize(questions)
    prompts = model.prompt_embeddings(state, ids, mask)
    assert len(prompts[0]) != len(prompts[1])
    out, labels = _reference_outputs(model, prompts, answers)
    loss = model.answer_loss(state, questions, answers)
    assert torch.equal(loss, out.loss)
    assert torch.equal(*(torch.autograd.grad(x, model.separator, retain_graph=True)[0] for x in (loss, out.loss)))
    assert torch.equal(model.llm.log_likelihood(prompts, None, answers, padding="left"), answer_log_likelihood(out.logits, labels))
    with torch.no_grad():
        scores = model.score(state, questions, ["red", "blue square"])
        for k, candidate in enumerate(["red", "blue square"]):
            out, labels = _reference_outputs(model, prompts, [candidate] * 2)
            assert torch.equal(scores[:, k], answer_log_likelihood(out.logits, labels))
        embeds, attention, positions = _left_pad(prompts)
        hidden = model.llm.model(inputs_embeds=embeds, attention_mask=attention, position_ids=positions,
                                 output_hidden_states=True).hidden_states[-1]  # (B, L, D)
        ragged = model.llm.hidden_states(prompts)
        assert all(torch.equal(hidden[b, hidden.shape[1] - len(p):], h) for b, (p, h) in enumerate(zip(prompts, ragged)))
        generated = model.llm.model.generate(inputs_embeds=embeds, attention_mask=attention, max_new_tokens=5, do_sample=False,
                                             pad_token_id=model.llm.pad_id, eos_token_id=model.llm.tokenizer.eos_token_id)
        assert torch.equal(generated, model.generate(state, ids, mask, max_new_tokens=5))
