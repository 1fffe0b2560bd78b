"""Sampling from masked diffusion LMs (docs/method.md §2).

Modules, one concept each:

- `steps`: the pieces every sampler is made of (schedule, canvas, proposals, top-k and
  threshold selection, CFG guide, checks, `SamplingStats`);
- `fast`: the decoding loop: LLaDA's semi-autoregressive low-confidence remasking sampler with
  Fast-dLLM's block KV cache, threshold decoding and EOS early exit as options;
- `reference`: LLaDA's sampler step for step (the loop with every option off) and its
  documentation;
- `registry`: the samplers `SamplerConfig.name` selects (an explicit table);
- `config`: `SamplerConfig` (every knob) and `sample` (runs it);
- `text`: strings in, strings out (`encode_prompts`, `decode_completions`, `generate_text`).

Import the public names from here: `from d1.core.sampling import SamplerConfig, sample`.
"""

from d1.core.sampling.config import SamplerConfig, sample
from d1.core.sampling.fast import cache_model, generate_fast
from d1.core.sampling.reference import generate
from d1.core.sampling.registry import SamplerEntry, get_sampler, register_sampler, sampler_names
from d1.core.sampling.steps import (
    CACHE_MODES,
    REMASKING,
    SamplingStats,
    SettingError,
    TraceFn,
    check_schedule,
    num_transfer_tokens,
    select_above_threshold,
)
from d1.core.sampling.text import (
    completion_stop_ids,
    decode_completions,
    encode_prompts,
    generate_text,
    left_pad,
    model_device,
    pad_id,
)

__all__ = [
    "CACHE_MODES",
    "REMASKING",
    "SamplerConfig",
    "SamplerEntry",
    "SamplingStats",
    "SettingError",
    "TraceFn",
    "cache_model",
    "check_schedule",
    "completion_stop_ids",
    "decode_completions",
    "encode_prompts",
    "generate",
    "generate_fast",
    "generate_text",
    "get_sampler",
    "left_pad",
    "model_device",
    "num_transfer_tokens",
    "pad_id",
    "register_sampler",
    "sample",
    "sampler_names",
    "select_above_threshold",
]
