"""A toy bidirectional model for the GRPO update and objective tests: tiny, deterministic per
seed, and recording every forward call (inputs, grad mode, training mode)."""

from __future__ import annotations

import torch

VOCAB = 23


class Recorder(torch.nn.Module):
    """A small bidirectional model that records every forward call (inputs, grad mode)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.emb = torch.nn.Parameter(torch.randn(VOCAB, 12, generator=g))
        self.pos = torch.nn.Parameter(torch.randn(32, 12, generator=g) * 0.5)
        self.out = torch.nn.Parameter(torch.randn(12, VOCAB, generator=g))
        self.calls: list[tuple[torch.Tensor, bool, bool]] = []
        self.tag = "policy"

    def forward(self, input_ids, attention_mask=None):
        self.calls.append((input_ids.clone(), torch.is_grad_enabled(), self.training))
        x = self.emb[input_ids] + self.pos[: input_ids.shape[1]]
        keep = torch.ones_like(input_ids, dtype=x.dtype)
        if attention_mask is not None:
            keep = attention_mask.to(x.dtype)
        ctx = (x * keep[..., None]).sum(1, keepdim=True) / keep.sum(1, keepdim=True)[..., None]
        return torch.tanh(x + ctx) @ self.out
