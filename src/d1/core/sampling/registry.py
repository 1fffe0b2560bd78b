"""The samplers `SamplerConfig.name` can select, and `sample`, which runs one.

An explicit table: each entry names the function and the optional `SamplerConfig` fields it
takes (`cache`, `threshold`, `early_exit`), so a setting that a sampler does not have is an
error at config time, never silently dropped. A new sampler is one module of this package and
one `register_sampler` call (or one entry below).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from d1.core.sampling.fast import generate_fast
from d1.core.sampling.reference import generate

__all__ = ["SamplerEntry", "get_sampler", "register_sampler", "sampler_names"]


@dataclass(frozen=True)
class SamplerEntry:
    """A registered sampler.

    Attributes:
        fn: takes the reference sampler's signature (model, input_ids, attention_mask, and the
            keywords gen_length, block_length, steps, temperature, cfg_scale, remasking, mask_id,
            generator, logit_shift, trace, stats) plus the `options` it declares.
        options: the optional `SamplerConfig` fields it takes ("cache", "threshold",
            "early_exit"); `sample` passes exactly these.
        default_cache: its block KV cache mode when `SamplerConfig.cache` is None ("none": no
            cache).
        description: one line for help texts.
    """

    fn: Callable[..., object]
    options: frozenset[str] = frozenset()
    default_cache: str = "none"
    description: str = ""


_SAMPLERS: dict[str, SamplerEntry] = {
    "reference": SamplerEntry(
        generate, description="LLaDA's sampler, step for step (a full forward per step)"
    ),
    "fast": SamplerEntry(
        generate_fast,
        options=frozenset({"cache", "threshold", "early_exit"}),
        default_cache="dual",
        description="Fast-dLLM: block KV cache (cache=none|prefix|dual), threshold decoding, "
        "EOS early exit",
    ),
}


def register_sampler(
    name: str,
    fn: Callable[..., object],
    *,
    options: frozenset[str] | set[str] = frozenset(),
    default_cache: str = "none",
    description: str = "",
) -> None:
    """Make `fn` selectable as `SamplerConfig(name=name)` (see `SamplerEntry`)."""
    unknown = set(options) - {"cache", "threshold", "early_exit"}
    if unknown:
        raise ValueError(f"Unknown sampler options {sorted(unknown)}.")
    _SAMPLERS[name] = SamplerEntry(fn, frozenset(options), default_cache, description)


def sampler_names() -> list[str]:
    """Names `SamplerConfig.name` accepts."""
    return sorted(_SAMPLERS)


def get_sampler(name: str) -> SamplerEntry:
    """The entry of sampler `name`; ValueError listing the known names otherwise."""
    entry = _SAMPLERS.get(name)
    if entry is None:
        raise ValueError(f"Unknown sampler {name!r}; choose one of {', '.join(sampler_names())}.")
    return entry
