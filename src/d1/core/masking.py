"""The forward (masking) process of masked diffusion LMs (docs/method.md §1).

Pure functions, whose only randomness comes from a passed `torch.Generator`:

- `mask_tokens`: the primitive. Each maskable position is replaced by the mask token
  independently with a given probability. The SFT forward process uses it on response tokens;
  diffu-GRPO's one-step estimator (docs/method.md §4) uses it on prompt tokens with `p_mask`.
- `forward_process`: LLaDA's forward process for masked SFT (docs/method.md §1, 3): draw `t ~ U(0, 1)` per
  sequence, mask each response token with probability `p = (1 - eps) * t + eps`, keep the prompt
  clean, and return `p` (the loss divides each token's cross-entropy by it).
- `blockwise_forward_process`: an opt-in variant for masked SFT that trains the states LLaDA's
  semi-autoregressive sampler visits (docs/method.md §2): the response is cut into blocks, one block is
  drawn, earlier blocks stay clean, the drawn block is masked with probability `p`, later blocks
  are masked whole; only the drawn block's masked tokens are scored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["ForwardSample", "blockwise_forward_process", "forward_process", "mask_tokens"]


def _uniform(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """U[0, 1) float32 samples of `shape` on `device`, drawn from `generator`.

    The draw happens on the generator's own device (so a CPU generator gives the same masks on
    CPU and GPU) and is then moved; masks are [B, L] so the copy is cheap.
    """
    gen_device = generator.device if generator is not None else device
    u = torch.rand(shape, generator=generator, device=gen_device, dtype=torch.float32)
    return u.to(device)


def _as_prob(prob: float | torch.Tensor, input_ids: torch.Tensor, name: str) -> torch.Tensor:
    """Validate `prob` and shape it to broadcast against [B, L] `input_ids`."""
    if isinstance(prob, torch.Tensor):
        p = prob.detach().to(device=input_ids.device, dtype=torch.float32)
        batch = input_ids.shape[0]
        if p.dim() == 0:
            pass
        elif p.dim() == 1 and p.shape[0] == batch:
            p = p[:, None]
        elif p.shape == input_ids.shape:
            pass
        else:
            raise ValueError(
                f"{name} must be a float, a per-sequence tensor of shape [{batch}] or a "
                f"per-token tensor of shape {list(input_ids.shape)}; got shape {list(p.shape)}."
            )
        if bool(((p < 0) | (p > 1) | torch.isnan(p)).any()):
            raise ValueError(f"{name} must lie in [0, 1]; got values outside that range.")
        return p
    prob = float(prob)
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1]; got {prob}.")
    return torch.tensor(prob, dtype=torch.float32, device=input_ids.device)


def mask_tokens(
    input_ids: torch.Tensor,
    maskable: torch.Tensor,
    prob: float | torch.Tensor,
    *,
    mask_id: int,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace each maskable token by `mask_id` independently with probability `prob` (docs/method.md §1).

    The primitive behind both the SFT forward process (response tokens, probability `t`) and
    diffu-GRPO's prompt masking (prompt tokens, probability `p_mask`, docs/method.md §4).

    Args:
        input_ids: [B, L] token ids (not modified).
        maskable: [B, L] bool, True where a token may be masked (e.g. response tokens, or real
            prompt tokens but not padding). False positions are never masked.
        prob: masking probability in [0, 1]: a float, a per-sequence tensor [B], or a per-token
            tensor [B, L]. Probability 1 masks every maskable token, 0 none.
        mask_id: the mask token id (LLaDA: 126336).
        generator: the source of randomness; one U[0, 1) draw of shape [B, L] (float32) is taken
            from it, on the generator's device. `None` uses torch's global RNG (not
            reproducible; pass a seeded generator).

    Returns:
        `(noisy_ids, is_masked)`: the ids with masked positions set to `mask_id`, and the [B, L]
        bool tensor of positions this call masked (a token that was already `mask_id` and is not
        drawn is not reported as masked).
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [B, L]; got shape {list(input_ids.shape)}.")
    if maskable.shape != input_ids.shape:
        raise ValueError(
            f"maskable must have the shape of input_ids {list(input_ids.shape)}; "
            f"got {list(maskable.shape)}."
        )
    if mask_id is None:
        raise ValueError("mask_id is required (LLaDA: 126336; use the model's DiffusionSpec).")
    p = _as_prob(prob, input_ids, "prob")
    u = _uniform(tuple(input_ids.shape), generator, input_ids.device)
    # u is in [0, 1), so `u < p` is never true for p = 0 and always true for p = 1.
    is_masked = maskable.to(torch.bool) & (u < p)
    noisy_ids = torch.where(is_masked, torch.full_like(input_ids, mask_id), input_ids)
    return noisy_ids, is_masked


@dataclass
class ForwardSample:
    """One draw of the forward process.

    Attributes:
        noisy_ids: [B, L] ids with the masked response tokens set to the mask id.
        is_masked: [B, L] bool, True at the masked positions the loss scores (response only;
            for `forward_process` every masked position, for `blockwise_forward_process` those
            of the drawn block).
        p_mask: [B] float32, each sequence's masking probability `(1 - eps) * t + eps`, or
            [B, L] per-token probabilities of being scored (`blockwise_forward_process`); the
            SFT loss divides each scored token's cross-entropy by it.
    """

    noisy_ids: torch.Tensor
    is_masked: torch.Tensor
    p_mask: torch.Tensor


def _masking_probability(
    input_ids: torch.Tensor,
    generator: torch.Generator | None,
    eps: float,
    t: float | torch.Tensor | None,
) -> torch.Tensor:
    """Per-sequence `p = (1 - eps) * t + eps` [B], with `t ~ U(0, 1)` drawn from `generator`
    when not given (one [B] draw); checks `input_ids` is [B, L], `eps` and `t`."""
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [B, L]; got shape {list(input_ids.shape)}.")
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"eps must lie in [0, 1); got {eps} (LLaDA uses 1e-3).")
    batch = input_ids.shape[0]
    device = input_ids.device
    if t is None:
        t_vec = _uniform((batch,), generator, device)
    elif isinstance(t, torch.Tensor):
        t_vec = t.detach().to(device=device, dtype=torch.float32)
        if t_vec.dim() == 0:
            t_vec = t_vec.expand(batch)
        if t_vec.shape != (batch,):
            raise ValueError(f"t must be a float or a [{batch}] tensor; got {list(t.shape)}.")
    else:
        t_vec = torch.full((batch,), float(t), dtype=torch.float32, device=device)
    if bool(((t_vec < 0) | (t_vec > 1) | torch.isnan(t_vec)).any()):
        raise ValueError("t must lie in [0, 1].")
    # The clamp only absorbs float32 rounding at t = 1 (0.999 + 0.001 may round above 1).
    return ((1.0 - eps) * t_vec + eps).clamp(max=1.0)


def forward_process(
    input_ids: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    mask_id: int,
    generator: torch.Generator | None,
    eps: float = 1e-3,
    t: float | torch.Tensor | None = None,
) -> ForwardSample:
    """LLaDA's forward process for masked SFT (docs/method.md §1, 3).

    Per sequence, `t ~ U(0, 1)` and `p = (1 - eps) * t + eps`: LLaDA's clamping maps `t` linearly
    onto `[eps, 1]`, so no sequence has masking probability 0 and the `1 / p` loss weight stays
    bounded by `1 / eps`. Each response token is then masked independently with probability `p`;
    prompt tokens (and padding outside `response_mask`) stay clean.

    Args:
        input_ids: [B, L] clean token ids (prompt ++ response).
        response_mask: [B, L] bool, True on response tokens (the only maskable ones; SFT's EOS
            padding belongs to the response).
        mask_id: the mask token id.
        generator: the source of randomness. Draw order: `t` ([B], skipped when `t` is given),
            then one [B, L] uniform draw for the masks.
        eps: the lower clamp of the masking probability (LLaDA: 1e-3).
        t: optional fixed time(s) in [0, 1] (a float or a [B] tensor), e.g. for evaluation on a
            fixed grid; the clamp is still applied.

    Returns:
        A `ForwardSample` (noisy ids, masked positions, per-sequence `p_mask`).
    """
    p_mask = _masking_probability(input_ids, generator, eps, t)
    noisy_ids, is_masked = mask_tokens(
        input_ids, response_mask, p_mask, mask_id=mask_id, generator=generator
    )
    return ForwardSample(noisy_ids=noisy_ids, is_masked=is_masked, p_mask=p_mask)


def blockwise_forward_process(
    input_ids: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    mask_id: int,
    block_length: int,
    generator: torch.Generator | None,
    eps: float = 1e-3,
    t: float | torch.Tensor | None = None,
    block: torch.Tensor | None = None,
) -> ForwardSample:
    """A block-wise ("semi-autoregressive") forward process for masked SFT.

    LLaDA's sampler decodes the response block by block (docs/method.md §2): while block k is decoded,
    blocks before it are clean and blocks after it are all masks. The uniform process of
    `forward_process` almost never shows a model that state (a clean prefix and a long run of
    masks), and small models trained only on it fail there (measured on the tiny models). This
    process draws exactly those states. Per sequence, with the response cut into
    `n = ceil(|R| / block_length)` blocks counted from the response's first token:

    - `t ~ U(0, 1)`, `p = (1 - eps) t + eps` (as `forward_process`), and a block `k ~ U{0..n-1}`;
    - blocks before k stay clean, each token of block k is masked with probability p, blocks
      after k are masked whole;
    - only block k's masked tokens are scored, each with the probability `p / n` of being
      scored (returned as the per-token `p_mask`).

    With that weight the SFT loss is an unbiased estimate of the sum over blocks of each block's
    masked-diffusion loss given the clean blocks before it (the block-wise ELBO of block
    diffusion LMs, with the later blocks present as masks the way LLaDA samples): the expected
    `sum CE / (p / n)` over k and the masks is `sum_k E[sum_{i in block k masked} CE / p]`.

    Args:
        input_ids: [B, L] clean ids (prompt ++ response).
        response_mask: [B, L] bool, the response (contiguous per row; EOS padding included).
        mask_id: the mask token id.
        block_length: the sampler's block length (d1: 32).
        generator: the source of randomness. Draw order: `t` ([B], skipped when given), the
            block ([B], skipped when `block` is given), then one [B, L] uniform mask draw.
        eps: the lower clamp of the masking probability (LLaDA: 1e-3).
        t: optional fixed time(s) in [0, 1] (float or [B]).
        block: optional fixed block indices [B] (each in 0..n_b-1).

    Returns:
        A `ForwardSample` whose `p_mask` is [B, L] (p / n at every response position).
    """
    if block_length < 1:
        raise ValueError(f"block_length must be >= 1; got {block_length}.")
    response = response_mask.to(torch.bool)
    resp_len = response.sum(dim=1)
    if bool((resp_len == 0).any()):
        raise ValueError("Every sequence needs at least one response position.")
    p = _masking_probability(input_ids, generator, eps, t)
    batch, length = input_ids.shape
    device = input_ids.device
    n_blocks = (resp_len + block_length - 1) // block_length
    if block is None:
        u = _uniform((batch,), generator, device)
        k = torch.minimum((u * n_blocks).long(), n_blocks - 1)
    else:
        k = block.to(device=device, dtype=torch.long).reshape(batch)
        if bool(((k < 0) | (k >= n_blocks)).any()):
            raise ValueError(f"block must lie in 0..n_blocks-1 per row; n_blocks = {n_blocks}.")
    # Block index of every response position, counted from the row's first response token.
    start = response.float().argmax(dim=1)
    offset = torch.arange(length, device=device)[None, :] - start[:, None]
    block_of = torch.where(response, offset.div(block_length, rounding_mode="floor"), -1)
    in_block = block_of == k[:, None]
    after = response & (block_of > k[:, None])
    _, is_masked = mask_tokens(input_ids, in_block, p, mask_id=mask_id, generator=generator)
    hidden = is_masked | after
    noisy_ids = torch.where(hidden, torch.full_like(input_ids, mask_id), input_ids)
    p_tok = torch.where(response, (p / n_blocks)[:, None], 0.0)
    return ForwardSample(noisy_ids=noisy_ids, is_masked=is_masked, p_mask=p_tok)
