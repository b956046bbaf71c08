import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from longvid.errors import LongvidError
from longvid.core.llm import (
    IGNORE, CausalLM, answer_log_likelihood, build_generation_inputs, build_training_inputs, next_token_loss, position_ids,
)
from longvid.core.tiny import save_tiny_llm

torch.set_num_threads(1)  # tiny tensors: threads only contend on a shared machine

REF = os.environ.get("LONGVID_REFERENCE", "/work/shared/reference") + "/malmm_tiny/qformer_memory_ref.npz"


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def llm(request, tmp_path_factory):
    folder = save_tiny_llm(str(tmp_path_factory.mktemp(request.param)), arch=request.param)
    return CausalLM.from_pretrained(folder)


@pytest.mark.skipif(not os.path.exists(REF), reason="malmm_tiny reference not available")
def test_sequences_match_official_layout():
    data = np.load(REF)
    table = torch.from_numpy(data["param::llm_embed.weight"])
    embed = lambda ids: F.embedding(ids, table)
    prefix = torch.from_numpy(data["A::llm_inputs_embeds"][:, :8])
    ids, mask = data["A::llm_prompt_ids"], data["A::llm_attention_mask"][:, 8:]
    prompts = [[int(i) for i, m in zip(row, mrow) if m] for row, mrow in zip(ids, mask)]
    embeds, attn = build_generation_inputs(prefix, prompts, embed, pad_id=0)
    torch.testing.assert_close(embeds, torch.from_numpy(data["A::llm_inputs_embeds"]), rtol=0, atol=1e-6)
    assert attn.tolist() == data["A::llm_attention_mask"].tolist()
    labels = data["train::llm_labels"]
    answers = [[int(x) for x in row if x != -100] for row in labels]
    embeds, attn, got_labels = build_training_inputs(prefix, prompts, answers, embed, pad_id=0)
    torch.testing.assert_close(embeds, torch.from_numpy(data["train::llm_inputs_embeds"]), rtol=0, atol=1e-6)
    assert attn.tolist() == data["train::llm_attention_mask"].tolist()
    assert got_labels.tolist() == labels.tolist()


def test_log_likelihood_matches_loop():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, -100, 3, 4, -100], [-100, 1, 2, 6, 0]])
    want = []
    for b in range(2):
        total = 0.0
        for i in range(1, 5):
            if labels[b, i] != -100:
                total += logits[b, i - 1].log_softmax(-1)[labels[b, i]].item()
        want.append(total)
    torch.testing.assert_close(answer_log_likelihood(logits, labels), torch.tensor(want))


def test_loss_score_generate(llm):
    torch.manual_seed(0)
    D = llm.hidden_size
    prefix = torch.randn(2, 3, D, requires_grad=True)
    prompts = ["question what color is the circle", "which shape"]
    loss = llm.loss(prefix, prompts, ["red", "blue square"])
    loss.backward()
    assert torch.isfinite(loss) and prefix.grad.abs().sum() > 0
    assert all(p.grad is None for p in llm.model.parameters())
    # the loss equals the mean over answer tokens of -log p computed from score()
    n_tokens = len(llm.tokenize_answers(["red"])[0]) + len(llm.tokenize_answers(["blue square"])[0])
    s_red = llm.score(prefix[:1], prompts[:1], ["red"])[0, 0]
    s_blue = llm.score(prefix[1:], prompts[1:], ["blue square"])[0, 0]
    torch.testing.assert_close(loss.detach(), -(s_red + s_blue) / n_tokens, rtol=1e-4, atol=1e-4)
    scores = llm.score(prefix.detach(), prompts, ["red", "green", "blue"])
    assert scores.shape == (2, 3) and torch.all(scores < 0)
    out = llm.generate(prefix.detach(), prompts, num_beams=3, max_new_tokens=4, num_return_sequences=2)
    assert len(out) == 2 and all(len(o) == 2 and all(isinstance(s, str) for s in o) for o in out)


def _ragged(llm, seed=0):
    """Three prefixes of different lengths, prompts and answers of different lengths."""
    g = torch.Generator().manual_seed(seed)
    prefixes = [torch.randn(n, llm.hidden_size, generator=g) for n in (4, 1, 6)]
    return prefixes, ["what color is the circle", "which shape", "red"], ["red", "blue square", "what color is the circle"]


def _naive_sequence(llm, prefix, prompt, answer):
    """One sample alone, built by hand: ``[prefix][prompt][answer + eos]`` and its labels."""
    prompt_ids, answer_ids = llm.tokenize_prompts([prompt])[0], llm.tokenize_answers([answer])[0]
    words = llm.embed(torch.tensor([prompt_ids + answer_ids]))[0]
    labels = torch.tensor([IGNORE] * (len(prefix) + len(prompt_ids)) + answer_ids)
    return torch.cat([prefix, words])[None], labels[None]


@pytest.mark.parametrize("padding", ["right", "left"])
def test_ragged_prefixes_equal_each_sample_alone(llm, padding):
    prefixes, prompts, answers = _ragged(llm)
    batched = llm.log_likelihood(prefixes, prompts, answers, padding=padding)  # (B,)
    for b, (prefix, prompt, answer) in enumerate(zip(prefixes, prompts, answers)):
        embeds, labels = _naive_sequence(llm, prefix, prompt, answer)
        alone = answer_log_likelihood(llm.model(inputs_embeds=embeds).logits, labels)[0]
        torch.testing.assert_close(batched[b], alone, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(llm.score(prefixes, prompts, ["red", "blue"], padding=padding)[b],
                                   llm.score([prefix], [prompt], ["red", "blue"], padding=padding)[0], rtol=1e-5, atol=1e-5)
        hidden = llm.hidden_states(prefixes, prompts)[b]
        torch.testing.assert_close(hidden, llm.hidden_states([prefix], [prompt])[0], rtol=1e-5, atol=1e-5)
        assert hidden.shape == (len(prefix) + len(llm.tokenize_prompts([prompt])[0]), llm.hidden_size)
        assert llm.generate(prefixes, prompts, num_beams=2, max_new_tokens=3)[b] == llm.generate([prefix], [prompt], num_beams=2, max_new_tokens=3)[0]
    tokens = sum(len(a) for a in llm.tokenize_answers(answers))
    torch.testing.assert_close(llm.loss(prefixes, prompts, answers, padding=padding), -batched.sum() / tokens, rtol=1e-5, atol=1e-5)
    normalized = llm.log_likelihood(prefixes, prompts, answers, normalize=True, padding=padding)
    assert torch.equal(normalized, batched / torch.tensor([len(a) for a in llm.tokenize_answers(answers)]))


def test_repetition_penalty_reaches_every_generated_token_whatever_the_padding():
    """``transformers`` skips the penalty on a left-padded row's first generated tokens (as many as its
    padded columns); the adapter's penalty does not, so a ragged batch generates as each sample alone."""
    from longvid.core.tiny import tiny_llm

    llm = tiny_llm(init_std=0.5, seed=1)
    prefixes, prompts, _ = _ragged(llm, seed=1)
    batched = llm.generate_ids(prefixes, prompts, repetition_penalty=3.0, max_new_tokens=8, do_sample=False)
    for b, (prefix, prompt) in enumerate(zip(prefixes, prompts)):
        alone = llm.generate_ids([prefix], [prompt], repetition_penalty=3.0, max_new_tokens=8, do_sample=False)[0]
        assert torch.equal(batched[b, : len(alone)], alone)
        assert len(set(alone.tolist())) == len(alone)  # a penalty of 3 forbids repeats in this tiny LLM


def test_no_prompt_means_the_prefix_is_the_whole_prompt(llm):
    prefixes, prompts, answers = _ragged(llm)
    words = [torch.cat([p, llm.embed(torch.tensor([ids]))[0]]) for p, ids in zip(prefixes, llm.tokenize_prompts(prompts))]
    assert torch.equal(llm.log_likelihood(words, None, answers), llm.log_likelihood(prefixes, prompts, answers))
    embeds, mask = build_generation_inputs(words, [[]] * 3, llm.embed, llm.pad_id)
    assert embeds.shape[1] == max(len(w) for w in words) and mask[:, -1].all()


def test_padding_sides_are_the_same_sequences():
    """Left and right padding place each sample's tokens and labels identically, only shifted."""
    embed = lambda ids: ids[..., None].float().expand(*ids.shape, 2)
    prefixes = [torch.full((n, 2), -1.0) for n in (2, 1)]
    right = build_training_inputs(prefixes, [[5], [6, 7]], [[8, 3], [3]], embed, pad_id=0, padding="right")
    left = build_training_inputs(prefixes, [[5], [6, 7]], [[8, 3], [3]], embed, pad_id=0, padding="left")
    assert right[1].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]] and left[1].tolist() == [[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]]
    assert right[2].tolist() == [[IGNORE, IGNORE, IGNORE, 8, 3], [IGNORE, IGNORE, IGNORE, 3, IGNORE]]
    assert left[2][1].tolist() == [IGNORE, IGNORE, IGNORE, IGNORE, 3]
    assert torch.equal(left[0][1, 1:], right[0][1, :4]) and position_ids(left[1])[1].tolist() == [0, 0, 1, 2, 3]
    embeds, mask = build_generation_inputs(prefixes, [[5], [6, 7]], embed, pad_id=0)  # [pad][prefix][pad][prompt]
    assert mask.tolist() == [[1, 1, 0, 1], [0, 1, 1, 1]] and embeds[:, :, 0].tolist() == [[-1, -1, 0, 5], [0, -1, 6, 7]]


def test_equal_prefixes_keep_instructblips_batch_bitwise(llm):
    """A ``(B, P, D)`` prefix reads as MA-LMM always did: ``[prefix][prompt][answer][pad]`` with pad-token
    embeddings and default positions, the loss from shifted logits."""
    torch.manual_seed(0)
    prefix, prompts, answers = torch.randn(2, 3, llm.hidden_size), ["what color is the circle", "which shape"], ["red", "blue square"]
    rows = [p + a for p, a in zip(llm.tokenize_prompts(prompts), llm.tokenize_answers(answers))]
    length = max(len(r) for r in rows)
    ids = torch.tensor([r + [llm.pad_id] * (length - len(r)) for r in rows])
    mask = torch.cat([torch.ones(2, 3, dtype=torch.long), (torch.arange(length) < torch.tensor([[len(r)] for r in rows])).long()], 1)
    labels = torch.full((2, 3 + length), IGNORE)
    for b, (p, a) in enumerate(zip(llm.tokenize_prompts(prompts), llm.tokenize_answers(answers))):
        labels[b, 3 + len(p) : 3 + len(p) + len(a)] = torch.tensor(a)
    logits = llm.model(inputs_embeds=torch.cat([prefix, llm.embed(ids)], 1), attention_mask=mask).logits
    shifted = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE)
    assert torch.equal(llm.loss(prefix, prompts, answers), shifted)
    assert torch.equal(llm.log_likelihood(prefix, prompts, answers), answer_log_likelihood(logits, labels))


def test_next_token_loss_sums_as_each_lmm_did(llm):
    """Left: ``transformers``' loss from ``labels`` (ReWind); right: InstructBLIP's shifted logits. Both are
    the mean answer-token cross-entropy, to float rounding."""
    torch.manual_seed(0)
    embeds, labels = torch.randn(2, 6, llm.hidden_size), torch.tensor([[IGNORE] * 3 + [4, 5, 3], [IGNORE] * 4 + [6, 3]])
    out = llm.model(inputs_embeds=embeds, labels=labels)
    assert torch.equal(next_token_loss(out.logits, labels, "left"), out.loss)
    shifted = F.cross_entropy(out.logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE)
    assert torch.equal(next_token_loss(out.logits, labels, "right"), shifted)
    tokens = [-out.logits[b, i - 1].log_softmax(-1)[labels[b, i]] for b in range(2) for i in range(1, 6) if labels[b, i] != IGNORE]
    torch.testing.assert_close(next_token_loss(out.logits, labels, "right"), torch.stack(tokens).mean())


def test_prefix_width_error(llm):
    with pytest.raises(LongvidError, match="width"):
        llm.score(torch.zeros(1, 2, llm.hidden_size + 1), ["what"], ["red"])
    with pytest.raises(LongvidError, match=r"\(P_b, D\)"):
        llm.score([torch.zeros(2, llm.hidden_size), torch.zeros(2, 3, llm.hidden_size)], ["what", "why"], ["red"])
    with pytest.raises(LongvidError, match="padding"):
        llm.loss(torch.zeros(1, 2, llm.hidden_size), ["what"], ["red"], padding="middle")
    with pytest.raises(LongvidError, match="cannot load"):
        CausalLM.from_pretrained("/nonexistent/llm")
