"""The masked SFT loss (docs/method.md §3) against a slow per-token reference and a hand-computed case."""

from __future__ import annotations

import math

import pytest
import torch

from d1.core.masking import forward_process
from d1.recipes.sft.loss import masked_sft_loss


def slow_reference(logits, targets, is_masked, p_mask, response_mask):
    """Loop over sequences and tokens: sum CE/p over masked response tokens / |response|."""
    per_seq = []
    for b in range(targets.shape[0]):
        total = 0.0
        for i in range(targets.shape[1]):
            if is_masked[b, i]:
                logp = torch.log_softmax(logits[b, i].double(), dim=-1)[targets[b, i]]
                total += -logp.item() / p_mask[b].item()
        per_seq.append(total / int(response_mask[b].sum()))
    return sum(per_seq) / len(per_seq), per_seq


def make_batch(seed=0, batch=4, length=12, vocab=9):
    g = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, vocab - 1, (batch, length), generator=g)
    prompt_len = torch.randint(1, length - 2, (batch,), generator=g)
    response_mask = torch.arange(length)[None] >= prompt_len[:, None]
    sample = forward_process(targets, response_mask, mask_id=vocab - 1, generator=g)
    logits = torch.randn(batch, length, vocab, generator=g)
    return logits, targets, sample, response_mask


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_slow_reference(seed):
    logits, targets, s, resp = make_batch(seed)
    out = masked_sft_loss(logits, targets, s.is_masked, s.p_mask, resp)
    ref, ref_seq = slow_reference(logits, targets, s.is_masked, s.p_mask, resp)
    assert out.loss.item() == pytest.approx(ref, rel=1e-5)
    assert out.per_sequence.tolist() == pytest.approx(ref_seq, rel=1e-5)
    assert out.num_masked.tolist() == s.is_masked.sum(1).tolist()


def test_hand_computed_case():
    # Uniform logits over 2 tokens: every masked token's CE is ln 2.
    logits = torch.zeros(2, 6, 2)
    targets = torch.zeros(2, 6, dtype=torch.long)
    resp = torch.tensor([[0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1]], dtype=torch.bool)
    masked = torch.tensor([[0, 0, 1, 0, 1, 0], [0, 0, 0, 0, 1, 0]], dtype=torch.bool)
    p = torch.tensor([0.5, 0.25])
    out = masked_sft_loss(logits, targets, masked, p, resp)
    ln2 = math.log(2)
    # seq 0: 2 masked x ln2 / 0.5 over 4 response tokens = ln2; seq 1: ln2 / 0.25 over 3.
    assert out.per_sequence.tolist() == pytest.approx([ln2, 4 * ln2 / 3])
    assert out.loss.item() == pytest.approx((ln2 + 4 * ln2 / 3) / 2)
    assert out.unweighted.tolist() == pytest.approx([ln2, ln2])


def test_prompt_never_in_loss_and_gets_no_gradient():
    logits, targets, s, resp = make_batch(3)
    logits.requires_grad_(True)
    out = masked_sft_loss(logits, targets, s.is_masked, s.p_mask, resp)
    out.loss.backward()
    grad_rows = logits.grad.abs().sum(-1)
    assert torch.all(grad_rows[~resp] == 0)  # prompt positions: no gradient
    assert torch.all(grad_rows[resp & ~s.is_masked] == 0)  # clean response tokens: none either
    assert torch.all(grad_rows[s.is_masked] > 0)
    # Changing prompt logits leaves the loss unchanged.
    changed = logits.detach().clone()
    changed[~resp] += 5.0
    again = masked_sft_loss(changed, targets, s.is_masked, s.p_mask, resp)
    assert again.loss.item() == pytest.approx(out.loss.item(), rel=1e-6)


def test_normalised_by_response_length_including_eos_padding():
    logits, targets, s, resp = make_batch(4, batch=1, length=10)
    base = masked_sft_loss(logits, targets, s.is_masked, s.p_mask, resp)
    # Append 5 EOS-padding response positions, none masked: the loss shrinks by |R| / (|R|+5).
    pad = 5
    logits2 = torch.cat([logits, torch.randn(1, pad, logits.shape[-1])], dim=1)
    targets2 = torch.cat([targets, torch.zeros(1, pad, dtype=torch.long)], dim=1)
    masked2 = torch.cat([s.is_masked, torch.zeros(1, pad, dtype=torch.bool)], dim=1)
    resp2 = torch.cat([resp, torch.ones(1, pad, dtype=torch.bool)], dim=1)
    padded = masked_sft_loss(logits2, targets2, masked2, s.p_mask, resp2)
    r = int(resp.sum())
    assert padded.loss.item() == pytest.approx(base.loss.item() * r / (r + pad), rel=1e-6)


def test_rejects_masked_prompt_and_bad_shapes():
    logits, targets, s, resp = make_batch(5)
    bad = s.is_masked.clone()
    bad[:, 0] = True  # position 0 is always prompt here
    with pytest.raises(ValueError, match="prompt"):
        masked_sft_loss(logits, targets, bad, s.p_mask, resp)
    with pytest.raises(ValueError, match="p_mask"):
        masked_sft_loss(logits, targets, s.is_masked, s.p_mask[:2], resp)
    with pytest.raises(ValueError, match="response position"):
        masked_sft_loss(logits, targets, torch.zeros_like(resp), s.p_mask, torch.zeros_like(resp))


def test_per_token_p_mask_and_nothing_masked():
    logits, targets, s, resp = make_batch(6)
    per_token = s.p_mask[:, None].expand_as(targets)
    a = masked_sft_loss(logits, targets, s.is_masked, s.p_mask, resp)
    b = masked_sft_loss(logits, targets, s.is_masked, per_token, resp)
    assert torch.equal(a.per_sequence, b.per_sequence)
    none = masked_sft_loss(logits, targets, torch.zeros_like(resp), s.p_mask, resp)
    assert none.loss.item() == 0.0


class _Recorder(torch.nn.Module):
    """A stand-in model: records the noisy ids it sees, returns fixed random logits."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits, self.seen = logits, []

    def forward(self, input_ids, attention_mask=None):
        from types import SimpleNamespace

        self.seen.append(input_ids.clone())
        return SimpleNamespace(logits=self.logits)


@pytest.mark.parametrize("fraction", [0.0, 0.5, 1.0])
def test_sft_batch_loss_semi_ar_mixture_matches_a_manual_draw(fraction):
    """Each row draws its process from its own keyed generator (a U[0,1) draw < fraction picks
    the block-wise one), then the masks; fraction 0 draws exactly as LLaDA's uniform process."""
    from d1.core.masking import blockwise_forward_process
    from d1.recipes.sft.trainer import sft_batch_loss
    from d1.training.data import keyed_generator

    logits, targets, _, resp = make_batch(5, batch=6, length=40)
    batch = {"input_ids": targets, "response_mask": resp, "index": torch.arange(10, 16)}
    model = _Recorder(logits)
    kw = {"mask_id": 8, "eps": 1e-3, "seed": 3, "key": ("train", 0)}
    out = sft_batch_loss(model, batch, semi_ar_fraction=fraction, block_length=8, **kw)
    rows, kinds = [], []
    for b in range(6):
        gen = keyed_generator(3, ("train", 0), 10 + b)
        block = fraction > 0 and float(torch.rand(1, generator=gen)) < fraction
        kinds.append(block)
        row = (targets[b : b + 1], resp[b : b + 1])
        if block:
            s = blockwise_forward_process(*row, mask_id=8, block_length=8, generator=gen)
            p = s.p_mask
        else:
            s = forward_process(*row, mask_id=8, generator=gen)
            p = s.p_mask[:, None].expand(1, 40)
        rows.append((s.noisy_ids, s.is_masked, p))
    noisy, masked, p = (torch.cat(x) for x in zip(*rows, strict=True))
    assert torch.equal(model.seen[0], noisy)
    expected = masked_sft_loss(logits, targets, masked, p, resp)
    assert out.loss.item() == pytest.approx(expected.loss.item(), rel=1e-6)
    assert 0 < sum(kinds) < 6 if fraction == 0.5 else sum(kinds) == 6 * fraction
    if fraction == 0.0:  # the default path: identical to the uniform process alone
        plain = sft_batch_loss(_Recorder(logits), batch, **kw)
        assert plain.loss.item() == out.loss.item()


def test_semi_ar_config_is_validated():
    from d1.config import ConfigError
    from d1.recipes.sft.config import SFTConfig

    with pytest.raises(ConfigError, match="semi_ar_fraction"):
        SFTConfig(semi_ar_fraction=1.5).validate()
    with pytest.raises(ConfigError, match="semi_ar_block_length"):
        SFTConfig(semi_ar_block_length=0).validate()
