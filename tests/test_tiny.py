"""Tiny random transformers models: built in memory without touching the global RNG, and
the same weights when written to a folder and loaded back by path."""

import pytest
import torch

from longvid.core.encoders import FrozenImageEncoder
from longvid.core.llm import CausalLM
from longvid.core.tiny import save_tiny_llm, save_tiny_vision, tiny_llm, tiny_vision

pytest.importorskip("transformers")


def test_in_memory_parts_equal_the_saved_ones_and_leave_the_rng_alone(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    llm, encoder = tiny_llm(seed=4), tiny_vision(seed=5)
    assert torch.equal(torch.rand(3), expected)
    loaded_llm = CausalLM.from_pretrained(save_tiny_llm(str(tmp_path / "llm"), seed=4))
    loaded_encoder = FrozenImageEncoder.from_pretrained(save_tiny_vision(str(tmp_path / "vision"), seed=5))
    for a, b in zip(llm.state_dict().values(), loaded_llm.state_dict().values()):
        assert torch.equal(a, b)
    frames = torch.rand(2, 3, 32, 32)
    assert torch.equal(encoder(frames), loaded_encoder(frames))
    assert llm.tokenize_prompts(["what color"]) == loaded_llm.tokenize_prompts(["what color"])
    assert not any(p.requires_grad for p in llm.parameters()) and not any(p.requires_grad for p in encoder.parameters())
