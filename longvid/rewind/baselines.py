"""The uniform-frame baseline of ReWind's grounding benchmark: the same LLM without memory.

:class:`UniformFrames` reads ``num_frames`` uniformly sampled frames of a whole video
(their features pooled and projected as ReWind's selected frames):
``[separator][num_frames x frame tokens][instruction]``, and the same grounding head points
at the sampled frames.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from longvid.core.llm import CausalLM
from longvid.rewind.config import RewindConfig
from longvid.rewind.grounding import GroundingHead
from longvid.core.seeding import seeded
from longvid.rewind.model import add_lora, pool_frame_features
from longvid.rewind.selection import uniform_indices


class UniformFrames(nn.Module):
    """The LLM (with LoRA) reading ``num_frames`` uniformly sampled frames instead of memory + DFS;
    its new weights are drawn from ``seed`` (the global RNG is left as it was)."""

    def __init__(self, config: RewindConfig, llm: CausalLM, num_frames: int, seed: int = 0):
        super().__init__()
        self.config, self.num_frames = config, num_frames
        with seeded(seed):
            self.llm = add_lora(llm, config)
            self.frame_proj = nn.Linear(config.memory.vision_dim, config.llm_dim)
            self.separator = nn.Parameter(torch.randn(config.llm_dim) * 0.02)
            self.grounding = GroundingHead(config.llm_dim, config.ground_dim)
        for name, param in self.llm.named_parameters():
            param.requires_grad_("lora_" in name)

    def sampled(self, total: int) -> Tensor:
        """Indices ``(K,)`` of the uniformly sampled frames of a ``total``-frame video."""
        return uniform_indices(total, self.num_frames)

    def ground_logits(self, features: Tensor, questions: list[str]) -> Tensor:
        """Pointer logits ``(B, 2, K)`` over the sampled frames of ``features (B, N, P, D_v)``."""
        picked = features[:, self.sampled(features.shape[1])]  # (B, K, P, D_v)
        batch, count = picked.shape[:2]
        frames = self.frame_proj(pool_frame_features(picked.flatten(0, 1), self.config.frame_pool))  # (B*K, t, E)
        frames = frames.reshape(batch, count * self.config.frame_tokens, -1)
        prompts = [torch.cat([self.separator[None], frames[b], self.llm.embed(torch.tensor([row]))[0]])
                   for b, row in enumerate(self.llm.tokenize_prompts(questions))]  # B x (1 + K * t + L_b, E)
        hidden = self.llm.hidden_states(prompts)  # B x (1 + K * t + L_b, E)
        states = torch.stack([h[1 : 1 + frames.shape[1]] for h in hidden])  # (B, K * t, E)
        states = states.reshape(batch, count, self.config.frame_tokens, -1).mean(2)  # (B, K, E)
        last = torch.stack([h[-1] for h in hidden])  # (B, E)
        return self.grounding(states, last, torch.ones(batch, count, dtype=torch.bool))

    def prompt_length(self, question: str) -> int:
        """LLM input tokens for one question."""
        return 1 + self.num_frames * self.config.frame_tokens + len(self.llm.tokenize_prompts([question])[0])
