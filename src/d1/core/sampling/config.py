"""`SamplerConfig`, every sampling knob in one object, and `sample`, which runs it.

The same config is what a GRPO YAML's `grpo.sampler:` section, an eval YAML's `sampler:`
section, and the `--sampler` / `--sampler-option` flags of `d1 eval`, `d1 select` and
`d1 generate` fill; it is passed whole to `sample` (no field is renamed or rebuilt on the way).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from d1.config import ConfigError
from d1.core.models.loading import model_family
from d1.core.sampling.registry import get_sampler, sampler_names
from d1.core.sampling.steps import (
    SamplingStats,
    SettingError,
    TraceFn,
    check_fast_options,
    check_options,
    check_schedule,
)

__all__ = ["SamplerConfig", "sample"]

# Optional fields and their "off" values: a sampler that does not declare one (registry
# `options`) must see it off.
_OPTION_OFF: dict[str, tuple[Any, ...]] = {
    "cache": (None, "none"),
    "threshold": (None,),
    "early_exit": (False,),
}


@dataclass
class SamplerConfig:
    """Which sampler to run and all its settings (docs/method.md §2).

    Defaults are d1's: block 32, `steps = gen_length / 2` (2 tokens per step), greedy, the
    reference sampler. d1 evaluates at temperature 0 for gen lengths 128 / 256 / 512
    (`SamplerConfig.for_eval`); its RL rollouts use 256 / 32 / 128 at temperature 0.9
    (`SamplerConfig.for_rollouts`). The GRPO config's default is that schedule with the fast
    sampler's dual cache (`SamplerConfig.rl_default`).

    Attributes:
        gen_length: number of generated tokens (null only where the caller sets it per run:
            an eval config's `gen_lengths`).
        block_length: semi-autoregressive block size; must divide `gen_length`.
        steps: total denoising steps (model calls, CFG's two passes batched into one); a
            multiple of the number of blocks, at most `gen_length`. null: `gen_length / 2`.
        temperature: Gumbel-max sampling temperature; 0 = argmax (greedy).
        cfg_scale: classifier-free guidance scale; 0 disables it.
        remasking: "low_confidence" (commit the most probable proposals) or "random".
        name: the sampler: "reference" (LLaDA's algorithm, a full forward per step) or
            "fast" (Fast-dLLM's block KV cache, threshold decoding and EOS early exit).
        cache: "fast" only. Block KV cache: "none", "prefix" or "dual"; null = the
            sampler's default ("dual"). Needs a LLaDA model.
        threshold: "fast" only. Confidence-threshold parallel decoding: each step commits
            every masked position of the block whose confidence exceeds `threshold` (in
            (0, 1]; at least the most confident one), so the number of steps adapts and
            `steps` is not used. null = the fixed schedule (Fast-dLLM uses 0.9).
        early_exit: "fast" only. Stop once every sequence of the batch has written EOS in a
            finished block, filling the rest with EOS (the text up to the first EOS is
            unchanged). Default off.
    """

    gen_length: int | None = 256
    block_length: int = 32
    steps: int | None = None
    temperature: float = 0.0
    cfg_scale: float = 0.0
    remasking: str = "low_confidence"
    name: str = "reference"
    cache: str | None = None
    threshold: float | None = None
    early_exit: bool = False

    # `grpo.sampler: fast` (a string for the section) is answered with this key's override.
    __config_scalar_key__: ClassVar[str] = "name"

    def __post_init__(self) -> None:
        self.validate()

    @property
    def length(self) -> int:
        """`gen_length`, which must be set by now."""
        if self.gen_length is None:
            raise ValueError(
                "This SamplerConfig has no gen_length: set one, or use `for_length(n)`."
            )
        return self.gen_length

    @property
    def num_steps(self) -> int:
        """Total steps: `steps`, or `gen_length / 2` when it is null (d1's 2 tokens per step)."""
        return self.steps if self.steps is not None else max(1, self.length // 2)

    @property
    def num_blocks(self) -> int:
        return self.length // self.block_length

    @property
    def cache_mode(self) -> str:
        """The block KV cache the sampler will use ("none" when it has none)."""
        entry = get_sampler(self.name)
        return self.cache if self.cache is not None else entry.default_cache

    @property
    def uses_kv_cache(self) -> bool:
        return self.cache_mode != "none"

    @property
    def deterministic(self) -> bool:
        """True when decoding draws no random numbers (greedy, low-confidence remasking)."""
        return self.temperature == 0.0 and self.remasking == "low_confidence"

    def problems(self) -> list[tuple[str, str]]:
        """(key, message) pairs for every invalid setting (empty when valid)."""
        if self.name not in sampler_names():
            return [
                ("name", f"unknown sampler {self.name!r}; known: {', '.join(sampler_names())}.")
            ]
        out: list[tuple[str, str]] = []
        checks = (
            # Without a length (an eval config's section), each `for_length` copy is checked.
            (lambda: None)
            if self.gen_length is None
            else lambda: check_schedule(self.gen_length, self.block_length, self.num_steps),
            lambda: check_options(self.temperature, 0.0, self.remasking),
            lambda: check_options(0.0, self.cfg_scale, self.remasking),
            lambda: check_fast_options(self.cache, self.threshold),
        )
        for check in checks:
            try:
                check()
            except SettingError as e:
                hint = (
                    " (steps: null means gen_length / 2)"
                    if e.key == "steps" and self.steps is None
                    else ""
                )
                if (e.key, f"{e}{hint}") not in out:
                    out.append((e.key, f"{e}{hint}"))
        entry = get_sampler(self.name)
        for option, off in _OPTION_OFF.items():
            if option not in entry.options and getattr(self, option) not in off:
                takers = [n for n in sampler_names() if option in get_sampler(n).options]
                out.append(
                    (
                        option,
                        f"the {self.name!r} sampler has no {option!r} setting (got "
                        f"{getattr(self, option)!r}); use name={takers[0]!r} for it, or leave "
                        f"{option} unset.",
                    )
                )
        return out

    def model_problems(self, name_or_path: str) -> list[tuple[str, str]]:
        """Settings the model `name_or_path` cannot run, read from its config (no weights):
        the block KV cache needs the native LLaDA model."""
        if not self.uses_kv_cache:
            return []
        family = model_family(name_or_path)
        if family is None or family == "llada":
            return []  # LLaDA, or not knowable offline: the sampler checks when it runs
        return [
            (
                "cache",
                f"the block KV cache (cache {self.cache_mode!r}) needs a LLaDA model, and "
                f"{name_or_path!r} is a {family!r} model; set cache=none (threshold decoding "
                f"and early exit still work).",
            )
        ]

    def validate(self) -> None:
        """Raise `d1.config.ConfigError` naming each invalid key."""
        problems = self.problems()
        if problems:
            raise ConfigError.keyed(problems)

    def for_length(self, gen_length: int) -> SamplerConfig:
        """This config at generation length `gen_length` (block clamped to it; steps kept, so
        null stays `gen_length / 2`)."""
        return dataclasses.replace(
            self, gen_length=gen_length, block_length=min(self.block_length, gen_length)
        )

    @classmethod
    def for_eval(cls, gen_length: int | None = 256, **overrides: Any) -> SamplerConfig:
        """d1's evaluation sampler: temperature 0, block 32, `steps = gen_length / 2`."""
        kwargs: dict[str, Any] = {"gen_length": gen_length, "block_length": 32, "temperature": 0.0}
        return cls(**{**kwargs, **overrides})

    @classmethod
    def for_rollouts(cls, **overrides: Any) -> SamplerConfig:
        """d1's RL rollout sampler: gen length 256, block 32, 128 steps (gen_length / 2, so a
        shorter gen_length keeps 2 tokens per step), temperature 0.9."""
        kwargs: dict[str, Any] = {"gen_length": 256, "block_length": 32, "temperature": 0.9}
        return cls(**{**kwargs, **overrides})

    @classmethod
    def rl_default(cls, **overrides: Any) -> SamplerConfig:
        """The project's RL rollout default: d1's rollout schedule (`for_rollouts`: gen 256,
        block 32, gen_length / 2 steps, temperature 0.9) decoded by the fast sampler with the
        dual block KV cache and the same fixed schedule (no threshold).

        Chosen by measurement (benchmarks/RESULTS_rl_throughput.md): the dual cache keeps d1's
        number of decoding steps and commits per step and makes each step cheaper, so it is
        never slower than the reference sampler (1.5-1.6x faster rollouts on the demo's trained
        model, ~1.5x on untrained tiny models at gen 64, 5.4x at gen 256 in
        RESULTS_fast_sampling.md), and the demo's diffu-GRPO learned within the 3-seed spread of
        reference rollouts. Threshold decoding is left opt-in: it needs *more* steps than the
        fixed schedule where the model is unsure (at temperature 1 on the demo's hard problems,
        or on any untrained model). The paper configs (`configs/grpo/*.yaml`) pin
        `name: reference` to reproduce d1 exactly.
        """
        # cache null = the fast sampler's default ("dual"), so that a config which only sets
        # `name: reference` (the paper configs) is valid without also unsetting the cache.
        return cls.for_rollouts(**{"name": "fast", **overrides})

    def generate_kwargs(self) -> dict[str, Any]:
        """The keyword arguments the sampler function takes from this config."""
        entry = get_sampler(self.name)
        kwargs: dict[str, Any] = {
            "gen_length": self.length,
            "block_length": self.block_length,
            "steps": self.num_steps,
            "temperature": self.temperature,
            "cfg_scale": self.cfg_scale,
            "remasking": self.remasking,
        }
        for option in entry.options:
            value = getattr(self, option)
            if option == "cache":
                value = self.cache_mode
            kwargs[option] = value
        return kwargs

    def describe(self) -> str:
        """One line for logs and summaries, e.g. "fast (cache dual, threshold 0.95)"."""
        parts = []
        entry = get_sampler(self.name)
        if "cache" in entry.options:
            parts.append(f"cache {self.cache_mode}")
        if self.threshold is not None:
            parts.append(f"threshold {self.threshold:g}")
        if self.early_exit:
            parts.append("early exit")
        extra = f" ({', '.join(parts)})" if parts else ""
        if self.threshold is not None:
            steps = "adaptive"
        elif self.steps is None:
            steps = "gen_length / 2"
        else:
            steps = str(self.steps)
        length = f"gen {self.gen_length}, " if self.gen_length is not None else ""
        return (
            f"{self.name}{extra}, {length}block {self.block_length}, steps {steps}, "
            f"temperature {self.temperature:g}"
        )


def sample(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    config: SamplerConfig,
    mask_id: int | None,
    generator: torch.Generator | None = None,
    logit_shift: bool = False,
    trace: TraceFn | list[torch.Tensor] | None = None,
    stats: SamplingStats | None = None,
    eos_id: int | None = None,
) -> torch.Tensor:
    """Run the sampler `config.name` with `config`'s settings; returns [B, P + gen_length].

    `stats` (optional) receives the work done; `eos_id` is needed with `early_exit`.
    """
    entry = get_sampler(config.name)
    kwargs = config.generate_kwargs()
    if config.early_exit:
        kwargs["eos_id"] = eos_id
    return entry.fn(
        model,
        input_ids,
        attention_mask,
        mask_id=mask_id,
        generator=generator,
        logit_shift=logit_shift,
        trace=trace,
        stats=stats,
        **kwargs,
    )
