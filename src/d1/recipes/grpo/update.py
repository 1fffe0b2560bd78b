"""The mu inner policy updates on one generation batch (docs/method.md §4), independent of the training loop.

`prepare_policy_batch` turns a scored rollout into what the inner iterations need: the
advantages, aggregation weights, the objective's noise state per inner iteration k (d1: one
prompt mask, `schedule`; see `d1.recipes.grpo.objectives`), the old policy's log-probs for every
k >= 1 and, given the `Reference`, the reference log-probs for every k (all computed once per
generation batch, before any update, without gradient, in chunks of `logprob_chunk_size`
rows, so peak memory does not grow with mu and each inner step does one forward and one
backward only). `policy_step` then runs inner iteration k over the generation batch in
micro-batches (gradient accumulation), calling `backward` on each micro-batch loss; the caller
clips, steps the optimizer and the scheduler. The objective (`UpdateSettings.objective`:
d1 | coupled | mc_elbo | wd1) decides the noise, the log-prob estimate and the loss.

Why k = 0 needs no old log-probs: the parameters have not moved since the rollout, so
`logp_old = logp.detach()` exactly; the ratio is exactly 1 and the clipped objective's gradient
is the plain policy gradient. This saves one forward pass per generation batch and is what makes
`num_iterations = 1` correct with or without the KL term (the reference code crashed for mu = 1
with beta > 0).

Current log-probs run in the model's training mode (LoRA dropout active, as in d1); old and
reference log-probs run in eval mode (deterministic), without gradient, inside
`d1.recipes.grpo.generation.generation_context` (parameters made whole under FSDP / ZeRO-3).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from d1.core.sampling import SamplingStats
from d1.recipes.grpo.generation import generation_context, unwrap_parallel
from d1.recipes.grpo.loss import LossStats, token_weights
from d1.recipes.grpo.objectives import NoiseState, ObjectiveContext, PolicyObjective, make_objective

__all__ = [
    "ComputeCounter",
    "PolicyBatch",
    "Reference",
    "UpdateSettings",
    "draw_noise",
    "policy_step",
    "prepare_policy_batch",
]


@dataclass(kw_only=True)
class UpdateSettings(ObjectiveContext):
    """Everything the inner iterations need besides the model and the batch: the objective's
    settings (`ObjectiveContext`: mask id, G, seed, p_mask, random_masking, epsilon(_high), beta,
    estimator, logit_shift, row_offset, num_generations) plus the update's own.

    Attributes:
        num_iterations: mu, gradient steps per generation batch (d1: 12 GSM8K/MATH, 8 others).
        micro_batch_size: completions per forward/backward (gradient accumulation unit).
        beta: KL coefficient (d1: 0.04); 0 skips the reference.
        aggregation: loss aggregation (`d1.recipes.grpo.loss.AGGREGATIONS`).
        logprob_chunk_size: sequences per no-grad forward for old/ref log-probs (None: the
            micro-batch size).
        objective: the policy objective (`d1.recipes.grpo.objectives.OBJECTIVES`: d1, coupled,
            mc_elbo, wd1); "d1" is diffu-GRPO exactly.
        objective_options: the objective's own options (e.g. `{"n": 4}` for mc_elbo).
    """

    num_iterations: int
    micro_batch_size: int
    beta: float = 0.04
    aggregation: str = "group_token_mean"
    logprob_chunk_size: int | None = None
    objective: str = "d1"
    objective_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_iterations < 1:
            raise ValueError(f"num_iterations must be >= 1; got {self.num_iterations}.")
        if self.micro_batch_size < 1:
            raise ValueError(f"micro_batch_size must be >= 1; got {self.micro_batch_size}.")
        # Built once: a bad objective or option fails here, naming the key. Its context is
        # these settings themselves; `dataclasses.replace` builds a new one.
        self._objective = make_objective(self.objective, self.objective_options, self)

    def make_objective(self) -> PolicyObjective:
        """The configured `d1.recipes.grpo.objectives.PolicyObjective` (built at construction)."""
        return self._objective

    @property
    def chunk(self) -> int:
        """Rows per no-grad forward of old / reference log-probs."""
        return self.logprob_chunk_size or self.micro_batch_size


@dataclass
class ComputeCounter:
    """Compute spent so far (docs/method.md §7: clear accounting of generations, forwards, backwards).

    Forward/backward passes count sequences (one sequence through the model once); tokens count
    sequence positions processed. The sampler's counts come from `d1.core.sampling.SamplingStats`,
    true for every sampler: `sampler_forward_passes` are full passes (a reference-sampler step,
    a cache refresh), `sampler_chunk_passes` the fast sampler's cached calls over a block or
    suffix only, `sampler_tokens` the positions all of them processed.
    """

    generations: int = 0
    sampler_model_calls: int = 0
    sampler_forward_passes: int = 0
    sampler_chunk_passes: int = 0
    sampler_tokens: int = 0
    policy_forward_passes: int = 0
    old_forward_passes: int = 0
    ref_forward_passes: int = 0
    backward_passes: int = 0
    forward_tokens: int = 0
    backward_tokens: int = 0
    optimizer_steps: int = 0
    generation_batches: int = 0

    @property
    def forward_passes(self) -> int:
        """All full sequence forward passes: sampling + current, old and reference log-probs
        (the sampler's cached chunk calls are counted apart, in `sampler_chunk_passes`)."""
        return (
            self.sampler_forward_passes
            + self.policy_forward_passes
            + self.old_forward_passes
            + self.ref_forward_passes
        )

    def as_dict(self) -> dict[str, int]:
        d = asdict(self)
        d["forward_passes"] = self.forward_passes
        return d

    def add_sampling(self, stats: SamplingStats) -> None:
        """Add one rollout's `d1.core.sampling.SamplingStats`."""
        self.sampler_model_calls += stats.model_calls
        self.sampler_forward_passes += stats.full_sequences
        self.sampler_chunk_passes += stats.cached_sequences
        self.sampler_tokens += stats.query_tokens

    def load(self, state: dict[str, int]) -> None:
        for key, value in state.items():
            if hasattr(self, key) and key != "forward_passes":
                setattr(self, key, int(value))


@dataclass
class PolicyBatch:
    """One generation batch, ready for the mu inner iterations.

    Attributes:
        prompt_ids, prompt_mask, completion_ids, completion_mask: as in the rollout ([N, .]).
        advantages: [N] one per completion.
        weights: [N, C] aggregation weights of the whole batch (sum to 1).
        old_logps: mu entries [N, C] (None for k = 0, where old = current exactly, and for
            objectives without a ratio).
        index: the generation batch index (what the masks were seeded with).
        noise: mu objective noise states (`d1.recipes.grpo.objectives.NoiseState`), index k
            for inner iteration k (d1: one prompt mask each, also as `prompt_masks`).
        ref_logps: mu entries [N, C] of reference log-probs precomputed on the same noise
            (empty: `policy_step` computes them per micro-batch from its `reference`).
        row_coef: [N] per-row coefficients of objectives that need the whole batch (wd1).
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    advantages: torch.Tensor
    weights: torch.Tensor
    noise: list[NoiseState]
    old_logps: list[torch.Tensor | None] = field(default_factory=list)
    index: int = 0
    ref_logps: list[torch.Tensor | None] = field(default_factory=list)
    row_coef: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.prompt_ids.shape[0])

    @property
    def prompt_masks(self) -> list[torch.Tensor]:
        """The prompt mask of every inner iteration (the whole noise state for d1)."""
        return [state.prompt for state in self.noise]

    def save(self, path: Path) -> None:
        """Write what cannot be recomputed exactly later (a run saved mid generation batch):
        the rollout, advantages, loss weights and the precomputed old / reference log-probs.
        The noise states are not stored: they depend only on the seeds (see `load`)."""
        torch.save(
            {
                "prompt_ids": self.prompt_ids.cpu(),
                "prompt_mask": self.prompt_mask.cpu(),
                "completion_ids": self.completion_ids.cpu(),
                "completion_mask": self.completion_mask.cpu(),
                "advantages": self.advantages.cpu(),
                "weights": self.weights.cpu(),
                "old_logps": [None if o is None else o.cpu() for o in self.old_logps],
                "ref_logps": [None if r is None else r.cpu() for r in self.ref_logps],
                "index": self.index,
            },
            path,
        )

    @classmethod
    def load(cls, path: Path, settings: UpdateSettings, device: torch.device) -> PolicyBatch:
        """The batch `save` wrote, its noise states redrawn by `draw_noise` (the same function
        `prepare_policy_batch` draws them with, so they are identical)."""
        data = torch.load(path, map_location="cpu", weights_only=False)
        prompt_ids = data["prompt_ids"].to(device)
        prompt_mask = data["prompt_mask"].to(device)
        completion_ids = data["completion_ids"].to(device)
        completion_mask = data["completion_mask"].to(device)
        objective = settings.make_objective()
        noise = draw_noise(
            settings, prompt_ids, prompt_mask, completion_ids, data["index"], objective
        )
        weights = data.get("weights")  # absent from batch files of older versions (one process)
        if weights is None:
            weights = token_weights(
                completion_mask,
                aggregation=settings.aggregation,
                num_generations=settings.num_generations,
            )
        advantages = data["advantages"].to(device)
        weights = weights.to(device)
        return cls(
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            completion_ids=completion_ids,
            completion_mask=completion_mask,
            advantages=advantages,
            weights=weights,
            old_logps=[None if o is None else o.to(device) for o in data["old_logps"]],
            noise=noise,
            ref_logps=[None if r is None else r.to(device) for r in data.get("ref_logps", [])],
            row_coef=objective.row_coefficients(advantages, weights),
            index=int(data["index"]),
        )


@contextlib.contextmanager
def _mode(model: torch.nn.Module, training: bool) -> Iterator[None]:
    was = model.training
    model.train(training)
    try:
        yield
    finally:
        model.train(was)


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


class Reference:
    """The reference policy pi_ref of the KL term: the model before RL (docs/method.md §4).

    With LoRA, the base weights with the adapter disabled (`disable_adapter()`, PEFT) of the
    training model itself; under full fine-tuning, a frozen copy taken before training
    (`frozen`). Always eval mode, no grad, and inside `generation_context`, so the adapter-off
    pass also sees whole parameters under FSDP / ZeRO-3.

    Args:
        model: the training model (as prepared by accelerate, or plain).
        frozen: the frozen copy for full fine-tuning (None with LoRA).
    """

    def __init__(self, model: torch.nn.Module, frozen: torch.nn.Module | None = None) -> None:
        if frozen is None and not hasattr(unwrap_parallel(model), "disable_adapter"):
            raise ValueError(
                "The reference policy needs a LoRA (PEFT) model, whose adapter can be disabled, "
                "or a frozen copy of the model for full fine-tuning."
            )
        self.model = model
        self.frozen = frozen
        if frozen is not None:
            frozen.eval()
            frozen.requires_grad_(False)

    @contextlib.contextmanager
    def policy(self) -> Iterator[torch.nn.Module]:
        """Context yielding a module that computes the reference policy (collective)."""
        if self.frozen is not None:
            with generation_context(self.frozen) as frozen:
                yield frozen
            return
        with (
            generation_context(self.model) as inner,
            _mode(inner, False),
            inner.disable_adapter(),
        ):
            yield inner


def _no_grad_logps(
    objective: PolicyObjective,
    model: torch.nn.Module,
    batch_prompt: torch.Tensor,
    batch_prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    noise: NoiseState,
    settings: UpdateSettings,
) -> torch.Tensor:
    with torch.no_grad():
        return objective.logps(
            model,
            batch_prompt,
            batch_prompt_mask,
            completion_ids,
            noise,
            chunk_size=settings.chunk,
        )


def draw_noise(
    settings: UpdateSettings,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    generation_batch: int,
    objective: PolicyObjective | None = None,
) -> list[NoiseState]:
    """The objective's noise state for every inner iteration k of a generation batch.

    Depends only on (run seed, generation batch, k, global row) and the shapes, so a resumed
    run redraws exactly the same states.
    """
    objective = objective or settings.make_objective()
    return [
        objective.draw(
            prompt_ids,
            prompt_mask,
            completion_ids,
            generation_batch=generation_batch,
            iteration=k,
        )
        for k in range(settings.num_iterations)
    ]


def _count_forward(
    counter: ComputeCounter | None, kind: str, rows: int, passes: int, seq_len: int
) -> None:
    if counter is None:
        return
    setattr(counter, kind, getattr(counter, kind) + rows * passes)
    counter.forward_tokens += rows * passes * seq_len


def prepare_policy_batch(
    model: torch.nn.Module,
    *,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    advantages: torch.Tensor,
    settings: UpdateSettings,
    generation_batch: int,
    counter: ComputeCounter | None = None,
    weights: torch.Tensor | None = None,
    reference: Reference | None = None,
) -> PolicyBatch:
    """Noise for every inner iteration, old log-probs for k >= 1, reference log-probs (docs/method.md §4).

    Must run before the first update on this batch (the old policy is the current model). The
    old log-probs run inside `generation_context(model)` (collective under FSDP / ZeRO-3).

    Args:
        model: the training model (as prepared by accelerate, or plain).
        weights: these rows' aggregation weights when they are part of a larger batch (several
            processes: the weights of the whole batch, scaled by the number of processes
            because their gradients are averaged); None: `token_weights` of this batch.
        reference: the reference policy; given (and `beta > 0`), its log-probs for all mu noise
            states are computed here once, in chunks, and `policy_step` runs no reference pass.
            None: `policy_step` computes them per micro-batch (same values, same masks).
    """
    n = prompt_ids.shape[0]
    mu = settings.num_iterations
    objective = settings.make_objective()
    if weights is None:
        weights = token_weights(
            completion_mask,
            aggregation=settings.aggregation,
            num_generations=settings.num_generations,
        )
    elif weights.shape != completion_mask.shape:
        raise ValueError(
            f"weights must have the completion mask's shape {list(completion_mask.shape)}; got "
            f"{list(weights.shape)}."
        )
    noise = draw_noise(
        settings, prompt_ids, prompt_mask, completion_ids, generation_batch, objective
    )
    seq_len = prompt_ids.shape[1] + completion_ids.shape[1]
    old: list[torch.Tensor | None] = [None] * mu
    if mu > 1 and objective.uses_old:  # (mu = 1 needs no old log-probs, so nothing is gathered)
        with generation_context(model) as inner, _mode(inner, False):
            for k in range(1, mu):
                old[k] = _no_grad_logps(
                    objective, inner, prompt_ids, prompt_mask, completion_ids, noise[k], settings
                )
                _count_forward(counter, "old_forward_passes", n, noise[k].passes, seq_len)
    ref: list[torch.Tensor | None] = []
    if reference is not None and settings.beta > 0 and objective.uses_ref:
        # Micro-batch by micro-batch, each in chunks of `settings.chunk` rows: exactly the
        # forwards `policy_step` would run, so the values are bit-identical to per-step ones.
        with reference.policy() as ref_model:
            for k in range(mu):
                state = noise[k].ref or noise[k]
                parts = [
                    _no_grad_logps(
                        objective,
                        ref_model,
                        prompt_ids[sl],
                        prompt_mask[sl],
                        completion_ids[sl],
                        state.rows(sl),
                        settings,
                    )
                    for sl in _chunks(n, settings.micro_batch_size)
                ]
                ref.append(torch.cat(parts))
                _count_forward(counter, "ref_forward_passes", n, state.passes, seq_len)
    return PolicyBatch(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        completion_ids=completion_ids,
        completion_mask=completion_mask,
        advantages=advantages,
        weights=weights,
        old_logps=old,
        index=generation_batch,
        noise=noise,
        ref_logps=ref,
        row_coef=objective.row_coefficients(advantages, weights),
    )


def policy_step(
    model: torch.nn.Module,
    batch: PolicyBatch,
    iteration: int,
    *,
    settings: UpdateSettings,
    backward: Callable[[torch.Tensor], None],
    reference: Reference | None = None,
    counter: ComputeCounter | None = None,
    accumulate: Callable[[bool], contextlib.AbstractContextManager] | None = None,
) -> LossStats:
    """Inner iteration `iteration` over the whole generation batch, in micro-batches (docs/method.md §4).

    Every row uses noise state `iteration` exactly once, for its current, old and reference
    log-probs. Gradients accumulate; the micro-batch losses sum to the full-batch loss, so
    `backward` must not rescale them. The caller zeroes gradients before and steps after.
    With the reference log-probs precomputed (`prepare_policy_batch(reference=...)`) each
    micro-batch runs one forward (with gradient) and one backward only.

    Args:
        model: the policy (training mode is used for the current log-probs).
        batch: from `prepare_policy_batch`.
        iteration: k in [0, mu).
        settings: the update settings.
        backward: called with each micro-batch loss (e.g. `accelerator.backward`).
        reference: the reference policy; required when `settings.beta > 0` and the batch has
            no precomputed reference log-probs.
        counter: compute accounting, updated in place.
        accumulate: optional `accumulate(is_last_micro_batch)` context (e.g. DDP `no_sync` on
            all but the last micro-batch).

    Returns:
        `LossStats` over the batch (plus the loss under the key "loss" in `totals`).
    """
    if not 0 <= iteration < settings.num_iterations:
        raise ValueError(f"iteration must be in [0, {settings.num_iterations}); got {iteration}.")
    objective = settings.make_objective()
    need_ref = settings.beta > 0 and objective.uses_ref
    have_ref = bool(batch.ref_logps) and batch.ref_logps[iteration] is not None
    if need_ref and not have_ref and reference is None:
        raise ValueError("beta > 0 needs a reference policy (`Reference`).")
    noise = batch.noise[iteration]
    old_all = batch.old_logps[iteration] if batch.old_logps else None
    ref_all = batch.ref_logps[iteration] if have_ref else None
    stats = LossStats()
    loss_total = 0.0
    n = len(batch)
    seq_len = batch.prompt_ids.shape[1] + batch.completion_ids.shape[1]
    slices = list(_chunks(n, settings.micro_batch_size))
    for i, sl in enumerate(slices):
        rows = sl.stop - sl.start
        rows_noise = noise.rows(sl)
        ref = None
        if need_ref and ref_all is not None:
            ref = ref_all[sl]
        elif need_ref:
            assert reference is not None
            state = rows_noise.ref or rows_noise
            with reference.policy() as ref_model:
                ref = _no_grad_logps(
                    objective,
                    ref_model,
                    batch.prompt_ids[sl],
                    batch.prompt_mask[sl],
                    batch.completion_ids[sl],
                    state,
                    settings,
                )
            _count_forward(counter, "ref_forward_passes", rows, state.passes, seq_len)
        ctx = (
            accumulate(i == len(slices) - 1) if accumulate is not None else contextlib.nullcontext()
        )
        with ctx:
            logps = objective.logps(
                model,
                batch.prompt_ids[sl],
                batch.prompt_mask[sl],
                batch.completion_ids[sl],
                rows_noise,
            )
            old = None if old_all is None or not objective.uses_old else old_all[sl]
            out = objective.loss(
                logps,
                old,
                ref,
                advantages=batch.advantages[sl],
                mask=batch.completion_mask[sl],
                weights=batch.weights[sl],
                row_coef=None if batch.row_coef is None else batch.row_coef[sl],
            )
            backward(out.loss)
        loss_total = loss_total + out.loss.detach().to(torch.float64)
        stats.update(out.sums)
        if counter is not None:
            passes = rows_noise.passes
            counter.policy_forward_passes += rows * passes
            counter.backward_passes += rows * passes
            counter.forward_tokens += rows * passes * seq_len
            counter.backward_tokens += rows * passes * seq_len
    stats.totals["loss"] = loss_total
    return stats.finalize()  # the step's one host sync for its statistics
