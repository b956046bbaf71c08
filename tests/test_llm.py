import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from longvid.errors import LongvidError
from longvid.models.llm import CausalLM, answer_log_likelihood, build_generation_inputs, build_training_inputs
from longvid.models.tiny import save_tiny_llm

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


def test_prefix_width_error(llm):
    with pytest.raises(LongvidError, match="width"):
        llm.score(torch.zeros(1, 2, llm.hidden_size + 1), ["what"], ["red"])
    with pytest.raises(LongvidError, match="cannot load"):
        CausalLM.from_pretrained("/nonexistent/llm")
