"""Policy objectives of the inner iterations behind one interface (`PolicyObjective`).

`d1.recipes.grpo.update.policy_step` runs any objective through three calls, so a new objective needs
no change to the trainer:

1. `draw(...)`: the noise state of inner iteration k for every row of the generation batch
   (`NoiseState`). It is drawn ONCE per (generation batch, k) and reused for the current, old
   and reference log-probs of that iteration (docs/method.md §4's "same mask" rule, for every objective).
   Every random number comes from a `torch.Generator` keyed by (run seed, generation batch, k,
   global row), like the prompt masks of `d1.recipes.grpo.schedule`: never the global RNG.
2. `logps(model, ..., noise)`: per-token log-prob estimates [B, C] under that state.
3. `loss(...)`: the micro-batch loss (a `d1.recipes.grpo.loss.GRPOLossOutput`).

Selected by name with `grpo.objective` (`d1 | coupled | mc_elbo | wd1`) and configured with
`grpo.objective_options` (each objective's own keys, see its options class):

- `d1` (`D1Objective`): d1's one-step estimate (mask the prompt with probability p, the whole
  completion, one forward; arXiv 2504.12216, Sec. 3.1) in the clipped diffu-GRPO loss (Sec. 3.2,
  Eq. 4) with the k3 KL. No options. This is exactly the code path of earlier versions
  (bit-identical).
- `coupled` (`CoupledObjective`): DiffuCoder's coupled sampling (arXiv 2506.20639, Sec. 5,
  Eq. 4; App. A.3, Eqs. 12-13): a completion mask with ratio t in [t_min, t_max] and its
  complement, so each completion token is scored exactly once across the pair, weighted by 1/t
  resp. 1/(1 - t) and averaged over the pair (App. A.4, Eq. 17); optionally with d1's fully
  masked pass, which is the paper's Eq. 4 / Eq. 13 with lambda = 1 and the official code.
  Same clipped loss.
- `mc_elbo` (`MCElboObjective`): the masked-diffusion ELBO (LLaDA, arXiv 2502.09992, Sec. 2.3,
  Eq. 5) with n Monte Carlo (t, mask) draws per sequence (LLaDA 1.5, arXiv 2505.19223,
  Sec. 2.2, Eq. 6), one mask per timestep (VRPO's optimal allocation, Sec. 3.2, Prop. 1) and
  the same draws for current, old and reference (VRPO's antithetic sampling, Sec. 3.2,
  Prop. 2; its extension to PPO/GRPO ratios, Sec. 3.3); same clipped loss on the per-token ELBO
  terms.
- `wd1` (`WD1Objective`): the ratio-free weighted log-likelihood of wd1 (arXiv 2507.08838,
  Sec. 3.2, Eqs. 8-9): no old and no reference log-probs at all.

Sources: the official code was read for d1, coupled and wd1 (dllm-reasoning/d1
`diffu-grpo/diffu_grpo_trainer.py`; apple/ml-diffucoder `src/open_r1/coupled_grpo.py`:
`forward_process`, `selective_log_softmax`; xiaohangt/wd1 `wd1/trainers/rev_grpo_trainer.py`:
`compute_loss`); mc_elbo follows the ELBO and the VRPO sampling rules as stated in the LLaDA /
LLaDA 1.5 papers (their RL code was not available to us). Equation numbers were checked
against the paper texts: d1 in its revised version (with the coding tasks), DiffuCoder
arXiv v2, LLaDA in its revised version, LLaDA 1.5 arXiv v2, wd1 arXiv v2; other
versions may number differently. d1's one-step estimator and VRPO's allocation
and antithetic rules are stated in prose and propositions, without an equation number. Each
docstring also writes its formula out, and each has a literal slow reference in
`tests/test_grpo_objectives.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch

from d1.core.likelihood import estimate_logps, masked_draws_logps
from d1.recipes.grpo.loss import GRPOLossOutput, grpo_loss
from d1.recipes.grpo.schedule import iteration_prompt_mask
from d1.training.data import keyed_generator

__all__ = [
    "OBJECTIVES",
    "CoupledObjective",
    "CoupledOptions",
    "D1Objective",
    "D1Options",
    "MCElboObjective",
    "MCElboOptions",
    "NoiseState",
    "ObjectiveContext",
    "PolicyObjective",
    "WD1Objective",
    "WD1Options",
    "completion_generator",
    "make_objective",
    "objective_problems",
]


def completion_generator(
    run_seed: int, generation_batch: int, iteration: int, row: int, stream: str = "policy"
) -> torch.Generator:
    """CPU generator of a row's completion noise, keyed like `d1.recipes.grpo.schedule.mask_seed`.

    `stream` separates independent draws of the same (g, k, row), e.g. the reference's own
    draws when `mc_elbo` runs without antithetic sampling.
    """
    return keyed_generator(
        run_seed, "grpo-completion-noise", stream, generation_batch, iteration, row
    )


@dataclass
class NoiseState:
    """The noise of one inner iteration for N rows (slice rows with `rows`).

    Attributes:
        prompt: [N, P] bool prompt mask (d1's `q'`; all False for objectives on the clean prompt).
        completion: [N, D, C] bool, completion positions masked in each of D forward passes;
            None: one pass with the whole completion masked (d1's estimator).
        coef: [N, D, C] float32 coefficient of each pass's log-prob (see
            `d1.core.likelihood.masked_draws_logps`); None with `completion=None`.
        t: [N, D] the masking ratio of each pass (for inspection and tests), or None.
        ref: the reference policy's own state when it does not share this one (None: shared).
    """

    prompt: torch.Tensor
    completion: torch.Tensor | None = None
    coef: torch.Tensor | None = None
    t: torch.Tensor | None = None
    ref: NoiseState | None = None

    @property
    def passes(self) -> int:
        """Forward passes per sequence for one log-prob evaluation."""
        return 1 if self.completion is None else int(self.completion.shape[1])

    def rows(self, sl: slice) -> NoiseState:
        return NoiseState(
            prompt=self.prompt[sl],
            completion=None if self.completion is None else self.completion[sl],
            coef=None if self.coef is None else self.coef[sl],
            t=None if self.t is None else self.t[sl],
            ref=None if self.ref is None else self.ref.rows(sl),
        )


@dataclass
class ObjectiveContext:
    """The settings an objective reads. `d1.recipes.grpo.update.UpdateSettings` extends it with
    the update's own (mu, micro-batch, chunking, aggregation, the objective's name and options),
    so the trainer's settings are passed as they are.

    Attributes:
        mask_id: the mask token id.
        num_generations: G, the group size (wd1 normalises its weights per group).
        seed: run seed (noise depends on (seed, generation batch, k, row) only).
        p_mask: prompt masking probability (d1's `p_mask_prompt`, 0.15).
        random_masking: False reuses one noise state for every k (d1's switch).
        epsilon, epsilon_high: clip range (d1: 0.5 both ways).
        beta: KL coefficient; 0 skips the reference.
        estimator: log-prob estimator name (`d1.core.likelihood.list_estimators()`).
        logit_shift: True for Dream-style models.
        row_offset: global index of this process's first completion in the generation batch
            (process index x completions per process): noise is keyed by the completion.
    """

    mask_id: int
    num_generations: int
    seed: int = 0
    p_mask: float = 0.15
    random_masking: bool = True
    epsilon: float = 0.5
    epsilon_high: float | None = None
    beta: float = 0.0
    estimator: str = "d1_one_step"
    logit_shift: bool = False
    row_offset: int = 0


# ----------------------------------------------------------------------------- options


@dataclass
class D1Options:
    """`d1` has no options of its own (`grpo.p_mask_prompt`, `grpo.random_masking` apply)."""

    def problems(self) -> list[tuple[str, str]]:
        return []


@dataclass
class CoupledOptions:
    """Options of `coupled` (DiffuCoder's defaults).

    Attributes:
        t_min, t_max: the mask ratio t of each row is uniform in [t_min, t_max] (DiffuCoder:
            0.2, 0.8); the complement masks the rest, at ratio 1 - t.
        full_mask_pass: also run d1's fully masked pass, as DiffuCoder's Eq. 4 / Eq. 13 (with
            lambda = 1) and its official code do: `(p0 + pair sum) / 2` (3 forwards per
            sequence). false (default): the pair average alone (2 forwards), the antithetic
            estimator of its App. A.4, Eq. 17: an unbiased estimate of the ELBO restricted to
            t in [t_min, t_max]; the paper's variant weighs the ELBO terms 1.5x in
            expectation (`benchmarks/estimators.py` measures both).
    """

    t_min: float = 0.2
    t_max: float = 0.8
    full_mask_pass: bool = False

    def problems(self) -> list[tuple[str, str]]:
        if not 0.0 < self.t_min <= self.t_max < 1.0:
            return [("t_min", f"need 0 < t_min <= t_max < 1; got {self.t_min}, {self.t_max}.")]
        return []


@dataclass
class MCElboOptions:
    """Options of `mc_elbo`.

    Attributes:
        n: Monte Carlo (t, mask) draws per sequence (forward passes per log-prob), >= 1.
        t_eps: t = (1 - t_eps) u + t_eps with u ~ U(0, 1) (LLaDA's eps 1e-3).
        antithetic: share the draws between current/old and reference (VRPO); false draws the
            reference's independently (for comparison only: higher variance).
        log_ratio_clamp: the per-token ELBO terms carry weights up to 1/(n t_eps), so their
            log-ratio can overflow `exp` (a run on the demo task hit an infinite gradient
            norm without it): `logp - logp_old` and `ref - logp` are clamped to
            [-c, c] before `exp` (no gradient beyond; the PPO clip is far tighter).
    """

    n: int = 4
    t_eps: float = 1e-3
    antithetic: bool = True
    log_ratio_clamp: float = 20.0

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            out.append(("n", f"must be an integer >= 1; got {self.n!r}."))
        if not 0.0 < self.t_eps < 1.0:
            out.append(("t_eps", f"must be in (0, 1); got {self.t_eps}."))
        if not self.log_ratio_clamp > 0:
            out.append(("log_ratio_clamp", f"must be > 0; got {self.log_ratio_clamp}."))
        return out


@dataclass
class WD1Options:
    """Options of `wd1`.

    Attributes:
        psi: the temperature psi of the group weights `softmax(+-psi * A)` (wd1's Eq. 9;
            its code: 1).
    """

    psi: float = 1.0

    def problems(self) -> list[tuple[str, str]]:
        if not self.psi > 0:
            return [("psi", f"must be > 0; got {self.psi}.")]
        return []


# ----------------------------------------------------------------------------- objectives


class PolicyObjective:
    """The interface `policy_step` calls; see the module docstring.

    Class attributes:
        name: the `grpo.objective` name.
        uses_old: whether the loss needs the old policy's log-probs (a ratio).
        uses_ref: whether the loss has a reference (KL) term when `beta > 0`.
        masks_prompt: whether it uses d1's prompt mask and estimator (`grpo.p_mask_prompt`,
            `grpo.estimator`); objectives on the clean prompt with their own draws do not.
    """

    name: ClassVar[str] = ""
    options_type: ClassVar[type] = D1Options
    uses_old: ClassVar[bool] = True
    uses_ref: ClassVar[bool] = True
    masks_prompt: ClassVar[bool] = True

    def __init__(self, ctx: ObjectiveContext, options: Any = None) -> None:
        self.ctx = ctx
        self.options = options if options is not None else self.options_type()

    # ---- 1. noise
    def _prompt_noise(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        generation_batch: int,
        iteration: int,
        p_mask: float,
    ) -> torch.Tensor:
        return iteration_prompt_mask(
            prompt_ids,
            prompt_mask,
            p_mask,
            mask_id=self.ctx.mask_id,
            run_seed=self.ctx.seed,
            generation_batch=generation_batch,
            iteration=iteration,
            random_masking=self.ctx.random_masking,
            row_offset=self.ctx.row_offset,
        )

    def draw(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        completion_ids: torch.Tensor,
        *,
        generation_batch: int,
        iteration: int,
    ) -> NoiseState:
        """The noise state of inner iteration `iteration` (d1: one prompt mask)."""
        return NoiseState(
            prompt=self._prompt_noise(
                prompt_ids, prompt_mask, generation_batch, iteration, self.ctx.p_mask
            )
        )

    # ---- 2. log-probs
    def logps(
        self,
        model: torch.nn.Module,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        completion_ids: torch.Tensor,
        noise: NoiseState,
        *,
        chunk_size: int | None = None,
    ) -> torch.Tensor:
        """[B, C] per-token log-prob estimates under `noise` (gradient unless no_grad)."""
        if noise.completion is None:
            return estimate_logps(
                model,
                prompt_ids,
                prompt_mask,
                completion_ids,
                mask_id=self.ctx.mask_id,
                p_mask=self.ctx.p_mask,
                logit_shift=self.ctx.logit_shift,
                estimator=self.ctx.estimator,
                prompt_noise=noise.prompt,
                chunk_size=chunk_size,
            )
        assert noise.coef is not None
        return masked_draws_logps(
            model,
            prompt_ids,
            prompt_mask,
            completion_ids,
            mask_id=self.ctx.mask_id,
            prompt_noise=noise.prompt,
            completion_noise=noise.completion,
            coef=noise.coef,
            logit_shift=self.ctx.logit_shift,
            chunk_size=chunk_size,
        )

    def row_coefficients(
        self, advantages: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor | None:
        """Per-row coefficients computed once over the whole batch (wd1's group weights)."""
        return None

    # ---- 3. loss
    def loss(
        self,
        logps: torch.Tensor,
        old_logps: torch.Tensor | None,
        ref_logps: torch.Tensor | None,
        *,
        advantages: torch.Tensor,
        mask: torch.Tensor,
        weights: torch.Tensor,
        row_coef: torch.Tensor | None = None,
    ) -> GRPOLossOutput:
        """The clipped diffu-GRPO loss with the k3 KL (`d1.recipes.grpo.loss.grpo_loss`, docs/method.md §4)."""
        return grpo_loss(
            logps,
            logps.detach() if old_logps is None else old_logps,
            advantages,
            mask,
            epsilon=self.ctx.epsilon,
            epsilon_high=self.ctx.epsilon_high,
            beta=self.ctx.beta,
            ref_logps=ref_logps,
            weights=weights,
            log_ratio_clamp=self.log_ratio_clamp(),
        )

    def log_ratio_clamp(self) -> float | None:
        """Bound on |log-ratio| before exp in the loss (None: no clamp, d1's formula)."""
        return None


class D1Objective(PolicyObjective):
    """d1's diffu-GRPO (Zhao et al., arXiv 2504.12216): per-token `log p(o_k | q')` from ONE
    forward pass on `q' ++ [M]*|o|` (`q'`: each prompt token masked with probability p; Sec. 3.1,
    "One-Step Per-Token Log Probability Estimation with Prompt Masking", in prose, no equation
    number), summed over k for the sequence (Sec. 3.1's mean-field approximation), in the
    diffu-GRPO loss (Sec. 3.2, Eq. 4; advantages `r_i - mean(r)` of Sec. 2, Eq. 2):

        -( min(rho A, clip(rho, 1-eps, 1+eps) A) - beta KL_k ),  rho = exp(logp - logp_old).

    Eq. 4 averages each completion's tokens (`1/|o_i|`), i.e. `sequence_mean`; the official
    code (and the default `group_token_mean`) takes the token mean over the micro-batch.
    """

    name = "d1"
    options_type = D1Options


class CoupledObjective(PolicyObjective):
    """DiffuCoder's coupled-GRPO estimate (Gong et al., arXiv 2506.20639 v2, Sec. 5, Eq. 4;
    App. A.3, Eqs. 12-13; App. A.4, Eq. 17; the official `selective_log_softmax` /
    `forward_process` of apple/ml-diffucoder; t in [0.2, 0.8] from App. B.1).

    Per row, draw `t ~ U[t_min, t_max]` and a completion mask `m` (each position masked with
    probability t); its complement `~m` is masked in a second pass, so every completion token
    is scored in exactly one of the pair. With `p1` (`p2`) the log-prob at k with `m` (`~m`)
    masked, the pair's per-token ELBO terms are `w_k = m_k ? p1_k / t : p2_k / (1 - t)` (the
    ELBO weight 1/t of each pass), and

        logp_k = w_k / 2                        (default: the average of the pair's two
                                                 ELBO estimates, each unbiased: Eq. 17
                                                 with N = 1, t_hat = 1 - t)
        logp_k = ( p0_k + w_k ) / 2             (`full_mask_pass`: Eq. 4 / Eq. 13 with
                                                 lambda = 1, and the official code's
                                                 `selective_log_softmax`; p0 = d1's fully
                                                 masked pass, the paper's L_T)

    The prompt stays clean (DiffuCoder masks completions only). The loss is the clipped
    diffu-GRPO loss (`D1Objective`).

    Differences from the official code: t is drawn per row from the row's keyed generator (the
    code draws one t per batch from Python's global `random`).
    """

    name = "coupled"
    masks_prompt = False
    options_type = CoupledOptions

    def draw(self, prompt_ids, prompt_mask, completion_ids, *, generation_batch, iteration):
        o: CoupledOptions = self.options
        n, c = completion_ids.shape
        k = iteration if self.ctx.random_masking else 0
        passes = 3 if o.full_mask_pass else 2
        comp = torch.zeros(n, passes, c, dtype=torch.bool)
        coef = torch.zeros(n, passes, c, dtype=torch.float32)
        ts = torch.zeros(n, passes, dtype=torch.float32)
        for i in range(n):
            gen = completion_generator(
                self.ctx.seed, generation_batch, k, self.ctx.row_offset + i, "coupled"
            )
            t = o.t_min + (o.t_max - o.t_min) * torch.rand(1, generator=gen)
            m = torch.rand(c, generator=gen) < t
            j = 0
            if o.full_mask_pass:
                comp[i, 0] = True
                coef[i, 0] = 0.5
                ts[i, 0] = 1.0
                j = 1
            comp[i, j], comp[i, j + 1] = m, ~m
            coef[i, j] = 0.5 / t  # both variants halve the pair's sum
            coef[i, j + 1] = 0.5 / (1.0 - t)
            ts[i, j], ts[i, j + 1] = t, 1.0 - t
        device = completion_ids.device
        return NoiseState(
            prompt=torch.zeros_like(prompt_ids, dtype=torch.bool),
            completion=comp.to(device),
            coef=coef.to(device),
            t=ts.to(device),
        )


class MCElboObjective(PolicyObjective):
    """The masked-diffusion ELBO with n Monte Carlo draws (LLaDA, arXiv 2502.09992, Sec. 2.3,
    Eq. 5, the conditional form of Sec. 2.1, Eq. 3; LLaDA 1.5, arXiv 2505.19223 v2, Sec. 2.2,
    Eq. 4, with the per-step term of App. A, Eqs. 12-13:
    B(y|x) = E_t E_{y_t}[ (1/t) sum_k 1[y_t^k = M] log p(y^k | y_t, x) ]), estimated by VRPO's
    doubly Monte Carlo average (Sec. 2.2, Eqs. 5-6).

    Per row and draw j = 1..n: `t_j = (1 - eps) u_j + eps`, `u_j ~ U(0, 1)`; mask each
    completion token with probability t_j (one mask per timestep: VRPO's optimal allocation,
    n_t = n, n_{y_t} = 1, Sec. 3.2, Prop. 1); the per-token term is

        ell_k = (1/n) sum_j 1[k masked in draw j] log p(o_k | x, y_{t_j}) / t_j

    whose sum over k is the n-sample ELBO estimate of log pi(o | q) (no division by the
    length: the bound itself has none). Current, old and reference use the SAME draws (VRPO's
    antithetic sampling, Sec. 3.2, Prop. 2, stated for DPO's pi_theta / pi_ref pair and
    extended to PPO/GRPO ratios in Sec. 3.3) unless `antithetic: false`. The prompt stays
    clean. VRPO's own likelihood estimator is the equivalent l-form (App. A, Eqs. 14-15:
    exactly l of L tokens masked, weight L/l; LLaDA Sec. 2.4, Eq. 6), which has lower variance;
    this class uses the t-form above. The per-token terms go into the clipped diffu-GRPO loss
    with the k3 KL, their log-ratios clamped to +-`log_ratio_clamp` before `exp`.
    """

    name = "mc_elbo"
    masks_prompt = False
    options_type = MCElboOptions

    def log_ratio_clamp(self) -> float | None:
        # The ELBO's log-ratio sums many 1/t-weighted terms; unclamped, one demo run overflowed.
        return float(self.options.log_ratio_clamp)

    def _draws(self, n_rows: int, c: int, generation_batch: int, k: int, stream: str):
        o: MCElboOptions = self.options
        comp = torch.zeros(n_rows, o.n, c, dtype=torch.bool)
        coef = torch.zeros(n_rows, o.n, c, dtype=torch.float32)
        ts = torch.zeros(n_rows, o.n, dtype=torch.float32)
        for i in range(n_rows):
            gen = completion_generator(
                self.ctx.seed, generation_batch, k, self.ctx.row_offset + i, stream
            )
            for j in range(o.n):
                t = (1.0 - o.t_eps) * torch.rand(1, generator=gen) + o.t_eps
                comp[i, j] = torch.rand(c, generator=gen) < t
                coef[i, j] = 1.0 / (o.n * t)
                ts[i, j] = t
        return comp, coef, ts

    def draw(self, prompt_ids, prompt_mask, completion_ids, *, generation_batch, iteration):
        n, c = completion_ids.shape
        k = iteration if self.ctx.random_masking else 0
        device = completion_ids.device
        clean = torch.zeros_like(prompt_ids, dtype=torch.bool)
        comp, coef, ts = self._draws(n, c, generation_batch, k, "mc_elbo")
        ref = None
        if not self.options.antithetic:
            rc, rf, rt = self._draws(n, c, generation_batch, k, "mc_elbo-ref")
            ref = NoiseState(clean, rc.to(device), rf.to(device), rt.to(device))
        return NoiseState(clean, comp.to(device), coef.to(device), ts.to(device), ref)


class WD1Objective(PolicyObjective):
    """wd1's ratio-free weighted log-likelihood (Tang et al., arXiv 2507.08838 v2, Sec. 3.2,
    Eq. 8 with the weights of Eq. 9; Sec. 3.1, Eqs. 6-7 is its positive-only form; official
    `compute_loss` of xiaohangt/wd1 `rev_grpo_trainer.py`).

    For each prompt group with advantages A_1..A_G:

        w+_i = exp(psi A_i) / sum_j exp(psi A_j),   w-_i = exp(-psi A_i) / sum_j exp(-psi A_j)
        L_group = - sum_i (w+_i - w-_i) * log pi(o_i | q)

    with `log pi(o_i | q) = sum_k logp_{i,k}` over the valid completion tokens, each from d1's
    one-step estimate (prompt masked with probability p, whole completion masked). The loss is
    the mean of L_group over groups (each group weighted by its share of the aggregation
    weights: exactly the group mean for `group_token_mean` and `sequence_mean`). No old, no
    reference log-probs (it needs `grpo.beta: 0`: the paper's beta = 0, lambda = 1 setting).

    Constants, as in the official code: no `1/G` inside the group (Eq. 8 has one: a constant
    factor on the learning rate) and the softmax taken within each group (Eq. 9; the code
    normalises over its micro-batch, one group in its released configs, while Sec. 3.2's prose
    says the normalisation uses all groups).
    """

    name = "wd1"
    options_type = WD1Options
    uses_old = False
    uses_ref = False

    def row_coefficients(self, advantages, weights):
        g = self.ctx.num_generations
        n = advantages.shape[0]
        if n % g:
            raise ValueError(f"wd1 needs whole groups of {g} rows; got {n}.")
        psi = float(self.options.psi)
        a = advantages.float().view(n // g, g)
        pos = torch.softmax(psi * a, dim=1)
        neg = torch.softmax(-psi * a, dim=1)
        mass = weights.float().sum(dim=1).view(n // g, g).sum(dim=1, keepdim=True)
        return ((neg - pos) * mass).reshape(n)

    def loss(
        self,
        logps,
        old_logps,
        ref_logps,
        *,
        advantages,
        mask,
        weights,
        row_coef=None,
    ):
        if row_coef is None:
            raise ValueError("wd1 needs the batch's row coefficients (`row_coefficients`).")
        valid = mask.to(torch.bool)
        m = valid.to(logps.dtype)
        seq = (logps * m).sum(dim=1)
        loss = (row_coef.to(logps.dtype) * seq).sum()
        per_token = row_coef.to(logps.dtype)[:, None] * logps * m
        sums = {"tokens": valid.sum().to(torch.float64)}
        return GRPOLossOutput(loss=loss, per_token_loss=per_token, sums=sums)


OBJECTIVES: dict[str, type[PolicyObjective]] = {
    cls.name: cls for cls in (D1Objective, CoupledObjective, MCElboObjective, WD1Objective)
}


def _options_of() -> dict[str, str]:
    """option key -> the objectives that have it."""
    out: dict[str, str] = {}
    for obj, cls in OBJECTIVES.items():
        for f in fields(cls.options_type):
            out.setdefault(f.name, obj)
    return out


def objective_problems(
    name: str,
    options: Mapping[str, Any] | None,
    *,
    beta: float = 0.0,
    changed: Sequence[str] = (),
) -> list[tuple[str, str]]:
    """Problems of `grpo.objective` / `grpo.objective_options` as (key, message) pairs.

    `changed`: the GRPO keys set away from their defaults; `p_mask_prompt` or `estimator`
    among them is an error for an objective that does not use them (rather than a silent
    no-op, e.g. a p_mask sweep that changes nothing)."""
    if name not in OBJECTIVES:
        return [("objective", f"unknown {name!r}; known: {', '.join(OBJECTIVES)}.")]
    cls = OBJECTIVES[name]
    allowed = {f.name for f in fields(cls.options_type)}
    owners = _options_of()
    problems: list[tuple[str, str]] = []
    options = dict(options or {})
    for key in options:
        if key not in allowed:
            where = f" (an option of objective {owners[key]!r})" if key in owners else ""
            known = ", ".join(sorted(allowed)) or "none"
            problems.append(
                (
                    f"objective_options.{key}",
                    f"not an option of objective {name!r}{where}; its options: {known}.",
                )
            )
    if problems:
        return problems
    try:
        problems += [
            (f"objective_options.{k}", m) for k, m in cls.options_type(**options).problems()
        ]
    except TypeError as e:  # e.g. a string where a number belongs
        problems.append(("objective_options", f"bad value for objective {name!r}: {e}."))
    if not cls.uses_ref and beta > 0:
        problems.append(("beta", f"objective {name!r} uses no reference policy; set grpo.beta: 0."))
    if not cls.masks_prompt:
        for key in ("p_mask_prompt", "estimator"):
            if key in changed:
                problems.append(
                    (
                        key,
                        f"objective {name!r} keeps the prompt clean and draws its own masks: "
                        f"grpo.{key} has no effect on it; leave it at its default.",
                    )
                )
    return problems


def make_objective(
    name: str, options: Mapping[str, Any] | None, ctx: ObjectiveContext
) -> PolicyObjective:
    """The objective `name` with its options; a ValueError names a bad key."""
    problems = objective_problems(name, options, beta=ctx.beta)
    if problems:
        raise ValueError("; ".join(f"grpo.{k}: {m}" for k, m in problems))
    cls = OBJECTIVES[name]
    return cls(ctx, cls.options_type(**dict(options or {})))
