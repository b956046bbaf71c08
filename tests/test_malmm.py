import os
from dataclasses import replace

import numpy as np
import pytest
import torch

from longvid.errors import LongvidError
from longvid.models.llm import CausalLM
from longvid.models.malmm import MALMM, PRESETS, get_config, load_malmm_weights
from longvid.models.tiny import save_tiny_llm

torch.set_num_threads(1)  # tiny tensors: threads only contend on a shared machine

REF = os.environ.get("LONGVID_REFERENCE", "/work/shared/reference") + "/malmm_tiny/qformer_memory_ref.npz"


def tiny(length=3, **qformer_overrides):
    cfg = get_config("malmm_tiny")
    return MALMM(replace(cfg, qformer=replace(cfg.qformer, memory_bank_length=length, **qformer_overrides))).eval()


def randomize(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.image_pe.weight.normal_(0, 0.5, generator=g)
    return model


@pytest.mark.skipif(not os.path.exists(REF), reason="malmm_tiny reference not available")
def test_whole_model_matches_official_llm_visual_inputs():
    data = np.load(REF)
    params = {k[len("param::"):]: torch.from_numpy(data[k]) for k in data.files if k.startswith("param::")}
    cfg = get_config("malmm_tiny")
    cfg = replace(cfg, qformer=replace(cfg.qformer, vocab_size=120, memory_bank_length=5))
    model = MALMM(cfg).eval()
    load_malmm_weights(model, params)
    ids, mask = torch.from_numpy(data["A::qformer_input_ids"]), torch.from_numpy(data["A::qformer_attention_mask"])
    with torch.no_grad():
        _, state = model(torch.from_numpy(data["A::frames"]), ids, mask)
        prefix = model.visual_prefix(state)
    torch.testing.assert_close(prefix, torch.from_numpy(data["A::llm_inputs_embeds"][:, :8]), rtol=0, atol=1e-4)


def test_bank_never_exceeds_length():
    model = randomize(tiny(length=3))
    state = None
    tokens = torch.randn(2, 25, 10, 48)
    with torch.no_grad():
        for t in range(25):
            _, state = model(tokens[:, t : t + 1], None, None, state)
            memory = state.memory
            assert memory.visual.num_slots == min(t + 1, 3)
            assert all(bank.num_slots == min(t + 1, 3) for bank in memory.query)
            assert torch.all(memory.visual.counts.sum(1) == t + 1)
    assert state.frames_seen.tolist() == [25, 25]


def flat(state):
    m = state.memory
    return [m.visual.slots, m.visual.counts, *[b.slots for b in m.query], *[b.counts for b in m.query], state.queries, state.frames_seen]


def test_online_state_equals_rerun_from_scratch():
    model = randomize(tiny(length=3))
    tokens = torch.randn(2, 9, 10, 48)
    ids = torch.randint(1, 100, (2, 4))
    with torch.no_grad():
        state = None
        for t, chunk in enumerate([(0, 2), (2, 3), (3, 7), (7, 9)]):
            _, state = model(tokens[:, chunk[0] : chunk[1]], ids, None, state)
            _, scratch = model(tokens[:, : chunk[1]], ids, None)
            for a, b in zip(flat(state), flat(scratch)):
                assert torch.equal(a, b)


def test_streams_in_a_batch_never_share_memory():
    """Stream 1 restarts (is_first) at frame 4 on a different video; both streams must equal
    their own single-stream runs."""
    model = randomize(tiny(length=3))
    a, b = torch.randn(2, 10, 10, 48)
    ids = torch.randint(1, 100, (2, 5))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    with torch.no_grad():
        state = None
        outs = []
        for t in range(10):
            frame = torch.stack([a[t], b[t]])
            is_first = torch.tensor([t == 0, t in (0, 4)])
            q, state = model.step(frame, ids, mask, state if state is not None else model.init_state(2), is_first)
            outs.append(q)
        alone_a, state_a = model(a[None], ids[:1], mask[:1])
        alone_b, state_b = model(b[None, 4:], ids[1:], mask[1:])
    torch.testing.assert_close(outs[-1][:1], alone_a, rtol=0, atol=1e-5)
    torch.testing.assert_close(outs[-1][1:], alone_b, rtol=0, atol=1e-5)
    assert state.frames_seen.tolist() == [10, 6]
    torch.testing.assert_close(state.memory.visual.slots[1:], state_b.memory.visual.slots, rtol=0, atol=1e-5)


def test_no_memory_baseline_concatenates_frames():
    model = tiny(length=0)
    tokens = torch.randn(2, 3, 10, 48)
    with torch.no_grad():
        queries, state = model(tokens)
        single, _ = model(tokens[:, 1:2])
    assert queries.shape == (2, 24, 64) and state.memory is None
    torch.testing.assert_close(queries[:, 8:16], single, rtol=0, atol=1e-5)


def test_nsa_preset_is_bounded():
    model = MALMM(get_config("malmm_tiny_nsa")).eval()
    with torch.no_grad():
        queries, state = model(torch.randn(1, 12, 10, 48))
    assert queries.shape == (1, 8, 64) and all(b.num_slots == 8 for b in state.memory.query)


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory):
    from transformers import AutoTokenizer

    folder = save_tiny_llm(str(tmp_path_factory.mktemp("llm")))
    return CausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)


def test_training_loss_reaches_last_frame_only_and_answers_from_any_state(tiny_llm):
    llm, tokenizer = tiny_llm
    torch.manual_seed(0)
    model = MALMM(get_config("malmm_tiny"), llm=llm, text_tokenizer=tokenizer)
    model.train()
    tokens = torch.randn(2, 6, 10, 48)
    prompts = ["question what color is the circle", "which shape is first"]
    loss = model.loss(tokens, prompts, ["red", "square"])
    loss.backward()
    grad_pe = model.image_pe.weight.grad
    assert torch.isfinite(loss)
    assert grad_pe[5].abs().sum() > 0 and grad_pe[:5].abs().sum() == 0  # only the last frame's row
    assert model.llm_proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in llm.model.parameters())
    model.eval()
    ids, mask = model.tokenize_instructions(prompts)
    with torch.no_grad():
        _, state = model(tokens[:, :3], ids, mask)
    answers = model.answer(state, prompts)
    assert len(answers) == 2 and all(isinstance(a[0], str) for a in answers)
    assert model.score(state, prompts, ["red", "blue", "square"]).shape == (2, 3)


def test_errors():
    with pytest.raises(LongvidError, match="unknown MA-LMM preset"):
        get_config("nope")
    with pytest.raises(LongvidError, match="no language model"):
        tiny().answer(tiny().init_state(1), ["x"])
    with pytest.raises(LongvidError, match="not found"):
        load_malmm_weights(tiny(), "/nonexistent.pth")
    assert {"malmm_qa", "malmm_cls", "malmm_caption", "malmm_tiny", "malmm_tiny_nsa"} <= set(PRESETS)
