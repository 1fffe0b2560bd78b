"""From strings to completion strings: left padding with an attention mask, prompt encoding,
completion decoding (cut at the first EOS / end-of-turn token), and `generate_text`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from d1.core.sampling.config import SamplerConfig, sample
from d1.core.sampling.steps import SamplingStats

__all__ = [
    "completion_stop_ids",
    "decode_completions",
    "encode_prompts",
    "generate_text",
    "left_pad",
    "model_device",
    "pad_id",
]


def left_pad(
    sequences: Sequence[Sequence[int]], pad_id: int, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists into `(input_ids [B, P], attention_mask [B, P])` (1 = real token)."""
    if not sequences:
        raise ValueError("No sequences to pad.")
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        if len(seq):
            ids[i, width - len(seq) :] = torch.as_tensor(list(seq), dtype=torch.long)
            attn[i, width - len(seq) :] = 1
    return ids.to(device), attn.to(device)


def pad_id(tokenizer: Any) -> int:
    """The id prompts are left-padded with: pad, else EOS, else 0."""
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0


def encode_prompts(
    tokenizer: Any, prompts: Sequence[str], device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize prompt strings (no special tokens added) and left-pad them with a mask.

    Prompts are full text: apply the chat template first (it inserts LLaDA's BOS).
    """
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    return left_pad(encoded, pad_id(tokenizer), device)


# Special tokens that end a completion, where the tokenizer knows them.
_STOP_TOKENS = ("<|eot_id|>", "<|endoftext|>", "<|im_end|>", "<|end_of_text|>")


def completion_stop_ids(tokenizer: Any) -> list[int]:
    """Token ids that end a completion: EOS and the end-of-turn tokens the tokenizer has."""
    stop = set()
    if getattr(tokenizer, "eos_token_id", None) is not None:
        stop.add(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    stop.update(int(vocab[t]) for t in _STOP_TOKENS if t in vocab)
    return sorted(stop)


def decode_completions(
    tokenizer: Any, completion_ids: torch.Tensor, stop_ids: Sequence[int] | None = None
) -> list[str]:
    """Decode [B, G] completions, each cut before its first stop token, specials dropped."""
    stop = set(completion_stop_ids(tokenizer) if stop_ids is None else stop_ids)
    texts = []
    for row in completion_ids.tolist():
        cut = next((i for i, tok in enumerate(row) if tok in stop), len(row))
        texts.append(tokenizer.decode(row[:cut], skip_special_tokens=True))
    return texts


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's parameters (CPU for a model without any)."""
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def generate_text(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: list[str],
    *,
    config: SamplerConfig,
    mask_id: int | None,
    generator: torch.Generator | None = None,
    logit_shift: bool = False,
    stop_ids: Sequence[int] | None = None,
    stats: SamplingStats | None = None,
) -> list[str]:
    """Completions for prompt strings: left-pad with a mask, sample, decode.

    Args:
        model: the diffusion LM (inputs go to its parameters' device).
        tokenizer: its tokenizer; prompts are encoded without added special tokens, so apply
            the chat template beforehand for instruct models.
        prompts: full prompt strings.
        config: the sampler and its settings.
        mask_id: the mask token id.
        generator: sampling noise source on the model's device.
        logit_shift: True for Dream-style models.
        stop_ids: token ids that end a completion (default: `completion_stop_ids(tokenizer)`).
        stats: optional `SamplingStats` that receives the work done.

    Returns:
        One string per prompt: the completion up to its first EOS / end-of-turn token, special
        tokens dropped.
    """
    input_ids, attention_mask = encode_prompts(tokenizer, prompts, model_device(model))
    out = sample(
        model,
        input_ids,
        attention_mask,
        config=config,
        mask_id=mask_id,
        generator=generator,
        logit_shift=logit_shift,
        stats=stats,
        eos_id=getattr(tokenizer, "eos_token_id", None),
    )
    return decode_completions(tokenizer, out[:, input_ids.shape[1] :], stop_ids)
