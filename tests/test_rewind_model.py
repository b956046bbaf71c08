import math

import pytest
import torch
import torch.nn as nn

from longvid.errors import LongvidError
from longvid.memory.rewind import RewindMemoryConfig
from longvid.memory.selection import relevance_scores
from longvid.models.encoders import FrozenImageEncoder
from longvid.models.llm import CausalLM
from longvid.models.rewind import ReWind, get_config, pool_frame_features, sigmoid_contrastive_loss
from longvid.models.tiny import save_tiny_llm

transformers = pytest.importorskip("transformers")


def tiny_vision(width, image_size, patch):
    """The shared frozen encoder on a random tiny CLIP tower: ``(image_size/patch)^2 + 1`` tokens."""
    config = transformers.CLIPVisionConfig(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=1,
                                           num_attention_heads=4, image_size=image_size, patch_size=patch)
    torch.manual_seed(0)
    return FrozenImageEncoder(transformers.CLIPVisionModel(config), image_size)


@pytest.fixture(scope="module")
def llm_folder(tmp_path_factory):
    return save_tiny_llm(str(tmp_path_factory.mktemp("llm")), hidden=64)


def build(config, llm_folder, image_size=32, patch=8, seed=0):
    torch.manual_seed(seed)
    vision = tiny_vision(config.memory.vision_dim, image_size, patch)
    model = ReWind(config, vision, CausalLM.from_pretrained(llm_folder)).eval()
    for p in model.memory.parameters():
        nn.init.normal_(p, std=0.2)
    return model


def watch(model, video, ids, state=None, clip=None, mask=None):
    """Feed ``video (B, 3, N, H, W)`` at 1 fps in sub-clips (padded tail)."""
    batch, _, total = video.shape[:3]
    clip = clip or model.config.clip_frames
    state = state or model.init_state(batch)
    for start in range(0, total, clip):
        chunk = video[:, :, start : start + clip]
        valid = chunk.shape[2]
        chunk = torch.cat([chunk, chunk[:, :, -1:].expand(-1, -1, clip - valid, -1, -1)], dim=2)
        times = torch.arange(start, start + clip, dtype=torch.float64).clamp(max=start + valid - 1).expand(batch, -1)
        _, state = model.observe(chunk, times, state, ids, mask, num_valid=torch.full((batch,), valid))
    return state


def test_llm_input_length_paper_settings(llm_folder):
    paper = get_config("rewind_paper")
    memory = RewindMemoryConfig(**{**paper.memory.__dict__, "dim": 32, "vision_dim": 16, "text_dim": 64, "num_heads": 4,
                                   "perceiver_layers": 1, "mlp_ratio": 1.0})
    config = get_config("rewind_paper", memory=memory, llm_dim=64, lora_rank=4)
    assert (config.memory.num_read, config.memory.num_write, config.top_l, config.num_select, config.frame_tokens) == (32, 2, 64, 8, 32)
    model = build(config, llm_folder, image_size=64, patch=4)  # a 16x16 patch grid (+ CLS), as EVA-CLIP ViT-g at 224
    video = torch.rand(1, 3, 100, 64, 64)
    ids = torch.randint(0, 50, (1, 7))
    with torch.no_grad():
        state = watch(model, video, ids)
        (prompt,) = model.prompt_embeddings(state, ids)
        assert prompt.shape == (100 * 2 + 1 + 8 * 32 + 7, 64)
        (early,) = model.prompt_embeddings(state, ids, until=29.0)  # breakpoint: 30 frames seen
        assert early.shape == (30 * 2 + 1 + 8 * 32 + 7, 64)
    assert state.buffer.num_stored == [100] and state.nbytes()["buffer_ram"] >= 100 * 256 * 16 * 4


@torch.no_grad()
def test_question_at_time_t_ignores_later_frames(llm_folder):
    model = build(get_config("rewind_tiny"), llm_folder)
    video, ids = torch.rand(1, 3, 21, 32, 32), torch.randint(0, 50, (1, 5))
    full = watch(model, video, ids)
    cut = watch(model, video[:, :, :13], ids)  # the stream as seen at t = 12 s
    assert model.select(full, ids, until=12.0)[0].tolist() == model.select(cut, ids)[0].tolist()
    a = model(full, ids, until=12.0).logits
    b = model(cut, ids).logits
    assert a.shape == b.shape and torch.allclose(a, b, atol=1e-4)
    assert torch.equal(model.generate(full, ids, until=12.0, max_new_tokens=4), model.generate(cut, ids, max_new_tokens=4))


@torch.no_grad()
def test_batched_streams_match_single_streams(llm_folder):
    model = build(get_config("rewind_tiny"), llm_folder, seed=1)
    video, ids = torch.rand(2, 3, 11, 32, 32), torch.randint(0, 50, (2, 5))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    both = watch(model, video, ids, mask=mask)
    logits = model(both, ids, mask).logits[:, -1]
    for b in range(2):
        alone = watch(model, video[b : b + 1], ids[b : b + 1, : int(mask[b].sum())])
        assert torch.allclose(model(alone, ids[b : b + 1, : int(mask[b].sum())]).logits[0, -1], logits[b], atol=1e-4)


def test_stage2_loss_trains_memory_projections_and_lora_only(llm_folder):
    model = build(get_config("rewind_tiny"), llm_folder, seed=2)
    trainable = model.set_stage(2)
    video, ids = torch.rand(2, 3, 10, 32, 32), torch.randint(0, 50, (2, 4))
    answer, answer_mask = torch.randint(0, 50, (2, 3)), torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    state = watch(model, video, ids)
    out = model(state, ids, answer_ids=answer, answer_mask=answer_mask)
    # Reference: cross-entropy of each answer token given everything before it.
    expected, count = 0.0, 0
    for b in range(2):
        n = int(answer_mask[b].sum())
        logits = out.logits[b, -n - 1 : -1]  # left padding: every sequence ends with its answer
        expected += sum(-torch.log_softmax(logits[i], -1)[answer[b, i]] for i in range(n))
        count += n
    assert torch.allclose(out.loss, expected / count, atol=1e-5)
    out.loss.backward()
    names = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any("lora_" in n for n in names) and "separator" in names and "frame_proj.weight" in names
    assert any(n.startswith("memory.perceive") for n in names) and "memory_proj.weight" in names
    assert not any(n.startswith("vision") or ("llm" in n and "lora_" not in n) for n in names)
    assert all(p.requires_grad for p in trainable) and not model.video_head.weight.requires_grad


def test_stage1_sigmoid_contrastive_loss(llm_folder):
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

    model = build(get_config("rewind_tiny"), llm_folder, seed=3)
    model.set_stage(1)
    state = model.init_state(2)
    clip, ids = torch.rand(2, 3, 4, 32, 32), torch.zeros(2, 0, dtype=torch.long)  # no instruction in stage 1
    written, _ = model.observe(clip, torch.zeros(2, 4, dtype=torch.float64), state, ids)
    loss = model.contrastive_loss(written, torch.tensor([4, 3]), torch.randint(0, 50, (2, 6)), torch.ones(2, 6, dtype=torch.bool))
    loss.backward()
    names = {n for n, p in model.named_parameters() if p.grad is not None}
    assert {"log_scale", "bias", "video_head.weight", "text_head.weight"} <= names
    assert any(n.startswith("memory.perceive") for n in names)
    assert not any(n.startswith(("llm", "vision", "frame_proj", "memory_proj", "separator")) for n in names)


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


def test_text_api_answers_scores_and_trains(llm_folder):
    model = build(get_config("rewind_tiny"), llm_folder, seed=4)
    questions = ["what color is the square", "where is the circle"]
    ids, mask = model.tokenize(questions)
    state = watch(model, torch.rand(2, 3, 9, 32, 32), ids, mask=mask)
    answers = model.answer(state, questions, max_new_tokens=3)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    scores = model.score(state, questions, ["red", "blue green"])
    assert scores.shape == (2, 2) and torch.all(scores < 0)
    # The score of a candidate is its answer log-likelihood: minus the loss times its token count (with EOS).
    single = watch(model, torch.rand(1, 3, 9, 32, 32), ids[:1, : int(mask[0].sum())])
    nll = model.answer_loss(single, questions[:1], ["blue green"])
    assert torch.allclose(model.score(single, questions[:1], ["blue green"])[0, 0], -3 * nll, atol=1e-4)


def test_watch_and_evaluation(llm_folder):
    from longvid.eval.rewind import VideoQuestion, evaluate_grounding, evaluate_qa, parse_interval

    assert parse_interval("from 12.5 to 3 s") == (3.0, 12.5) and parse_interval("never") is None
    model = build(get_config("rewind_tiny"), llm_folder, seed=5)
    video, times = torch.rand(1, 3, 11, 32, 32), torch.arange(11, dtype=torch.float64)[None]
    ids, mask = model.tokenize(["what color is the square"])
    with torch.no_grad():
        reference = watch(model, video, ids, mask=mask)
        state = model.watch(video, times, ids, mask)
    assert torch.allclose(state.memory.tokens, reference.memory.tokens, atol=1e-5)
    candidates = ["red", "blue"]
    choice = int(model.score(state, ["what color is the square"], candidates)[0].argmax())
    right, wrong = candidates[choice], candidates[1 - choice]
    items = [VideoQuestion(video[0], times[0], "what color is the square", answer) for answer in (right, right, wrong)]
    assert evaluate_qa(model, items, candidates) == {"accuracy": pytest.approx(200 / 3), "samples": 3.0}
    question = "when does the red flash"
    grounding = evaluate_grounding(model, [VideoQuestion(video[0], times[0], question, (2.0, 4.0))], 3)
    assert set(grounding) == {"R@0.3", "R@0.5", "R@0.7", "mIoU", "readable"}
    ids, mask = model.tokenize([question])  # the same answer, scored by hand
    with torch.no_grad():
        interval = parse_interval(model.answer(model.watch(video, times, ids, mask), [question], max_new_tokens=3)[0])
    start, end = interval or (0.0, 0.0)
    overlap = max(0.0, min(end, 4.0) - max(start, 2.0))
    iou = overlap / ((end - start) + (4.0 - 2.0) - overlap)
    assert grounding["mIoU"] == pytest.approx(100 * iou) and grounding["readable"] == (100.0 if interval else 0.0)


def test_untrained_dfs_query_scores_every_frame_alike(llm_folder):
    model = build(get_config("rewind_tiny"), llm_folder, seed=6)
    ids = torch.randint(0, 50, (1, 5))
    with torch.no_grad():
        state = watch(model, torch.rand(1, 3, 12, 32, 32), ids)
        tokens, _ = state.memory.frame_tokens(0)
        query = model.instruction_query(ids, None)[0]
        scores = relevance_scores(model.frame_keys(tokens), query)
    assert torch.count_nonzero(query) == 0  # select_query starts at zero: uniform draws, ties in top-L
    assert len(scores) == 12 and torch.all(scores == scores[0])


def test_policy_weight_trains_the_dfs_projections(llm_folder):
    model = build(get_config("rewind_tiny"), llm_folder, seed=7)
    model.set_stage(2)
    nn.init.normal_(model.select_query.weight, std=0.5)  # a trained query: draws are no longer uniform
    questions, answers = ["what color is the square", "where is the circle"], ["red", "blue green"]
    ids, mask = model.tokenize(questions)
    state = watch(model, torch.rand(2, 3, 12, 32, 32), ids, mask=mask)

    def query_grad(weight, seed=0):
        model.zero_grad()
        torch.manual_seed(seed)
        loss = model.answer_loss(state, questions, answers, policy_weight=weight)
        loss.backward(retain_graph=True)
        grad = model.select_query.weight.grad
        return loss, 0.0 if grad is None else float(grad.abs().sum())

    assert query_grad(None)[1] == 0.0 and query_grad(0.0)[1] == 0.0  # cross-entropy alone cannot reach selection
    loss, grad = query_grad(2.0)
    assert grad > 0
    # The loss is the drawn frames' cross-entropy plus the REINFORCE term against DFS's frames.
    torch.manual_seed(0)
    frames, log_probs = model.sample_selection(state, ids, mask)
    assert all(len(f) == model.config.num_select for f in frames)
    answer_ids = torch.stack([torch.tensor(model.llm.tokenize_answers([a])[0] + [model.llm.pad_id] * 3)[:3] for a in answers])
    answer_mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    assert [len(model.llm.tokenize_answers([a])[0]) for a in answers] == [2, 3]
    drawn = model.answer_nll(state, ids, mask, answer_ids, answer_mask, frames=frames)
    chosen = model.answer_nll(state, ids, mask, answer_ids, answer_mask)
    assert torch.allclose(loss, drawn.mean(), atol=1e-5)  # the REINFORCE term adds gradient, not value
    model.zero_grad()
    (2.0 * ((drawn - chosen).detach() * log_probs).mean()).backward()
    assert torch.allclose(model.select_query.weight.grad.abs().sum(), torch.tensor(grad), rtol=1e-4)
    # answer_nll is each stream's mean token cross-entropy: its token-weighted mean is the usual loss.
    out = model(state, ids, mask, answer_ids, answer_mask)
    assert torch.allclose((chosen * answer_mask.sum(1)).sum() / answer_mask.sum(), out.loss, atol=1e-5)
