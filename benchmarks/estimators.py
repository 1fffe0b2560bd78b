"""Bias and variance of the log-prob estimators per forward pass spent (issue: "single-step
log-prob estimation can be noisy due to higher variance").

On a model trained here (masked SFT on the demo's easy addition problems, `d1.recipes.demo`), for a
fixed set of (prompt, completion) pairs (completions sampled from that model on hard test
problems, temperature 1, G per prompt, with their rewards), measures for every estimator at a
budget of B forward passes per sequence:

- the sequence log-prob estimate `sum_k ell_k` over valid completion tokens: its bias (mean
  over R independent repeats minus the reference) and its standard deviation across repeats,
  averaged over the sequences;
- the policy-gradient direction `grad (1/N) sum_i A_i sum_k ell_ik` (A: the group-centred
  rewards): the cosine to the reference gradient, averaged over the repeats.

The reference is the masked-diffusion ELBO (`mc_elbo`) with `--ref-draws` Monte Carlo draws
per sequence (its log-prob and its gradient). d1's one-step estimate is a different quantity
(a mean-field estimate with a masked prompt), so its "bias" is its distance from the ELBO, not
from the (intractable) exact log-likelihood.

Estimators (B forward passes per sequence): `d1` averages B independent prompt masks
(p_mask 0.15); `d1 p=0` is d1 without prompt masking (deterministic); `coupled` averages B/2
complementary pairs, `coupled-3pass` B/3 (pair + d1's fully masked pass, DiffuCoder's official
code); `mc_elbo` uses n = B
draws. With `--ref-model` (e.g. an RL checkpoint, with the SFT model as its reference), also
the standard deviation of the log-RATIO estimate `log pi - log pi_ref` with the reference's
draws shared (VRPO's antithetic sampling; what the objectives do) or independent.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/estimators.py --model PATH_TO_SFT_CKPT \
        [--ref-model PATH] --out bench_out/estimators
    # without --model: a short SFT is trained first (--sft-steps)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from d1.recipes.grpo.objectives import NoiseState, ObjectiveContext, make_objective


def _objective(name: str, options: dict[str, Any], mask_id: int, p_mask: float = 0.15):
    ctx = ObjectiveContext(mask_id=mask_id, seed=1234, p_mask=p_mask, num_generations=1)
    return make_objective(name, options, ctx)


def _seq(logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (logps * mask.float()).sum(dim=1)


class Pairs:
    """The fixed (prompt, completion) pairs and their advantages."""

    def __init__(self, prompt_ids, prompt_mask, completion_ids, completion_mask, adv):
        self.prompt_ids, self.prompt_mask = prompt_ids, prompt_mask
        self.completion_ids, self.completion_mask = completion_ids, completion_mask
        self.adv = adv

    def logps(self, model, objective, noise: NoiseState) -> torch.Tensor:
        return objective.logps(model, self.prompt_ids, self.prompt_mask, self.completion_ids, noise)

    def draw(self, objective, repeat: int, j: int) -> NoiseState:
        return objective.draw(
            self.prompt_ids,
            self.prompt_mask,
            self.completion_ids,
            generation_batch=repeat,
            iteration=j,
        )


def estimator_logps(pairs: Pairs, model, name: str, budget: int, repeat: int, mask_id: int):
    """[N, C] per-token estimate of estimator `name` with `budget` passes (None: not possible)."""
    if name == "d1" or name == "d1 p=0":
        obj = _objective("d1", {}, mask_id, 0.15 if name == "d1" else 0.0)
        draws = [pairs.logps(model, obj, pairs.draw(obj, repeat, j)) for j in range(budget)]
        return torch.stack(draws).mean(0)
    if name.startswith("coupled"):
        full = name == "coupled-3pass"
        per = 3 if full else 2
        if budget % per:
            return None
        obj = _objective("coupled", {"full_mask_pass": full}, mask_id)
        draws = [pairs.logps(model, obj, pairs.draw(obj, repeat, j)) for j in range(budget // per)]
        return torch.stack(draws).mean(0)
    if name == "mc_elbo":
        obj = _objective("mc_elbo", {"n": budget}, mask_id)
        return pairs.logps(model, obj, pairs.draw(obj, repeat, 0))
    raise ValueError(name)


def _grad(model, seq: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    params = [p for p in model.parameters() if p.requires_grad]
    j = (adv * seq).sum() / seq.shape[0]
    grads = torch.autograd.grad(j, params)
    return torch.cat([g.flatten() for g in grads])


def reference(pairs: Pairs, model, draws: int, chunk: int, mask_id: int):
    """High-sample ELBO: sequence log-probs [N] and the gradient (averaged over chunks)."""
    seqs, grad = [], None
    chunks = max(1, draws // chunk)
    for c in range(chunks):
        obj = _objective("mc_elbo", {"n": chunk}, mask_id)
        noise = obj.draw(
            pairs.prompt_ids,
            pairs.prompt_mask,
            pairs.completion_ids,
            generation_batch=10_000 + c,
            iteration=0,
        )
        seq = _seq(pairs.logps(model, obj, noise), pairs.completion_mask)
        g = _grad(model, seq, pairs.adv)
        grad = g if grad is None else grad + g
        seqs.append(seq.detach())
    assert grad is not None
    return torch.stack(seqs).mean(0), grad / chunks


def build_pairs(model, tok, cfg, data, prompts: int, g: int, seed: int) -> Pairs:
    from d1.core.sampling import SamplerConfig
    from d1.recipes.demo import _task
    from d1.recipes.grpo.advantages import compute_advantages
    from d1.recipes.grpo.rollout import PromptItem, generate_rollouts

    task = _task(cfg)
    examples = task.load("test", path=str(data["test"]))[:prompts]
    items = [PromptItem(cfg.task, task, ex) for ex in examples]
    gen_len = cfg.completion_length
    rollout = generate_rollouts(
        model,
        tok,
        items,
        num_generations=g,
        sampler=SamplerConfig(
            gen_length=gen_len, block_length=gen_len, steps=cfg.rollout_steps, temperature=1.0
        ),
        mask_id=tok.mask_token_id,
        eos_id=tok.eos_token_id,
        generator=torch.Generator().manual_seed(seed),
    )
    adv = compute_advantages(rollout.rewards, g).advantages
    return Pairs(
        rollout.prompt_ids,
        rollout.prompt_mask,
        rollout.completion_ids,
        rollout.completion_mask,
        adv.float(),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="SFT checkpoint (default: train one)")
    ap.add_argument("--ref-model", default=None, help="a second policy for the log-ratio rows")
    ap.add_argument("--out", default="bench_out/estimators")
    ap.add_argument("--sft-steps", type=int, default=600)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--generations", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=16)
    ap.add_argument("--budgets", type=int, nargs="+", default=[1, 2, 3, 4, 6, 8, 12, 16])
    ap.add_argument("--ref-draws", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--ratio-only", action="store_true", help="only the log-ratio rows (needs --ref-model)"
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()

    from d1.core.models import load_model
    from d1.recipes.demo import DemoConfig, _final_checkpoint, make_data, sft_config

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = DemoConfig(out=str(out), sft_steps=args.sft_steps, progress=False)
    data = make_data(cfg, out / "data")
    model_path = args.model
    if model_path is None:
        from d1.recipes.sft import train_sft

        run = Path(train_sft(sft_config(cfg, args.seed, out / "sft", data)))
        model_path = str(_final_checkpoint(run))
    loaded = load_model(model_path, dtype="float32", device="cpu", seed=args.seed)
    model, tok = loaded.model.eval(), loaded.tokenizer
    mask_id = loaded.spec.mask_token_id
    pairs = build_pairs(model, tok, cfg, data, args.prompts, args.generations, args.seed)
    n = pairs.completion_ids.shape[0]
    if args.ratio_only:
        ref_seq, ref_grad = torch.zeros(n), None
    else:
        ref_seq, ref_grad = reference(pairs, model, args.ref_draws, 16, mask_id)

    names = ["d1", "d1 p=0", "coupled", "coupled-3pass", "mc_elbo"]
    rows: list[dict[str, Any]] = []
    for name in [] if args.ratio_only else names:
        for b in args.budgets:
            if name == "d1 p=0" and b > 1:
                continue  # deterministic: more passes give the same number
            seqs, cosines = [], []
            for r in range(args.repeats):
                lp = estimator_logps(pairs, model, name, b, r, mask_id)
                if lp is None:
                    break
                seq = _seq(lp, pairs.completion_mask)
                g = _grad(model, seq, pairs.adv)
                assert ref_grad is not None
                cosines.append(float(torch.nn.functional.cosine_similarity(g, ref_grad, dim=0)))
                seqs.append(seq.detach())
            if not seqs:
                continue
            s = torch.stack(seqs)  # [R, N]
            bias = (s.mean(0) - ref_seq).abs().mean().item()
            std = s.std(0, unbiased=True).mean().item()
            rmse = ((s - ref_seq) ** 2).mean().sqrt().item()
            rows.append(
                {
                    "estimator": name,
                    "passes": b,
                    "bias": bias,
                    "std": std,
                    "rmse": rmse,
                    "cosine": statistics.mean(cosines),
                    "cosine_std": statistics.stdev(cosines) if len(cosines) > 1 else 0.0,
                }
            )
            print(json.dumps(rows[-1]), flush=True)

    ratio_rows: list[dict[str, Any]] = []
    if args.ref_model:
        ref_loaded = load_model(args.ref_model, dtype="float32", device="cpu", seed=args.seed)
        pi_ref = ref_loaded.model.eval()
        with torch.no_grad():
            for name in ("d1", "mc_elbo"):
                for b in (1, 4, 16):
                    shared, indep = [], []
                    for r in range(args.repeats):
                        cur = _seq(
                            estimator_logps(pairs, model, name, b, r, mask_id),
                            pairs.completion_mask,
                        )
                        same = _seq(
                            estimator_logps(pairs, pi_ref, name, b, r, mask_id),
                            pairs.completion_mask,
                        )
                        other = _seq(
                            estimator_logps(pairs, pi_ref, name, b, 5000 + r, mask_id),
                            pairs.completion_mask,
                        )
                        shared.append(cur - same)
                        indep.append(cur - other)
                    ratio_rows.append(
                        {
                            "estimator": name,
                            "passes": b,
                            "std_shared": torch.stack(shared).std(0).mean().item(),
                            "std_independent": torch.stack(indep).std(0).mean().item(),
                        }
                    )
                    print(json.dumps(ratio_rows[-1]), flush=True)

    meta = {
        "model": model_path,
        "ref_model": args.ref_model,
        "pairs": n,
        "mean_valid_tokens": float(pairs.completion_mask.float().sum(1).mean()),
        "reference_elbo_mean": float(ref_seq.mean()),
        "ref_draws": args.ref_draws,
        "repeats": args.repeats,
        "nonzero_advantages": int((pairs.adv != 0).sum()),
        "wall_s": time.perf_counter() - t0,
        "command": " ".join(
            [f"OMP_NUM_THREADS={t}" for t in [os.environ.get("OMP_NUM_THREADS")] if t]
            + [".venv/bin/python", *sys.argv]
        ),  # with the thread setting the run really had
    }
    stem = "estimators_ratio" if args.ratio_only else "estimators"
    (out / f"{stem}.json").write_text(
        json.dumps({"meta": meta, "rows": rows, "ratio_rows": ratio_rows}, indent=1)
    )
    text = markdown(meta, rows, ratio_rows)
    (out / f"{stem}.md").write_text(text)
    if rows:
        plot(rows, out / "estimators.png")
    print(text)


def markdown(meta, rows, ratio_rows) -> str:
    lines: list[str] = []
    if rows:
        lines += [
            f"{meta['pairs']} (prompt, completion) pairs ({meta['mean_valid_tokens']:.1f} valid "
            f"completion tokens on average), {meta['repeats']} repeats per cell; reference: ELBO "
            f"with {meta['ref_draws']} draws per sequence (mean {meta['reference_elbo_mean']:.3f} "
            "nats). Of the sequence log-prob estimate, in nats, averaged over the sequences: |bias| = "
            "|mean over repeats - reference| (includes std / sqrt(repeats) of noise), std across "
            "repeats, RMSE to the reference; gradient cosine: of the "
            "policy-gradient direction to the reference gradient (mean ± std over repeats).",
            "",
            "| estimator | forward passes / sequence | abs bias | std | RMSE | gradient cosine |",
            "|---|---|---|---|---|---|",
        ]
    for r in rows:
        lines.append(
            f"| {r['estimator']} | {r['passes']} | {r['bias']:.3f} | {r['std']:.3f} | "
            f"{r['rmse']:.3f} | {r['cosine']:.3f} ± {r['cosine_std']:.3f} |"
        )
    if ratio_rows:
        lines += [
            "",
            "Log-ratio `log pi - log pi_ref` (std across repeats, nats): the reference's noise "
            "shared with the policy's (antithetic, VRPO; what the objectives do) or drawn "
            "independently.",
            "",
            "| estimator | passes | std, shared draws | std, independent draws |",
            "|---|---|---|---|",
        ]
        for r in ratio_rows:
            lines.append(
                f"| {r['estimator']} | {r['passes']} | {r['std_shared']:.3f} | "
                f"{r['std_independent']:.3f} |"
            )
    lines += ["", f"Command: `{meta['command']}` ({meta['wall_s']:.0f} s)", ""]
    return "\n".join(lines)


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for name in dict.fromkeys(r["estimator"] for r in rows):
        rs = [r for r in rows if r["estimator"] == name]
        x = [r["passes"] for r in rs]
        style = "o" if len(rs) == 1 else "o-"
        axes[0].plot(x, [abs(r["bias"]) for r in rs], style, label=name)
        axes[1].plot(x, [max(r["std"], 1e-4) for r in rs], style, label=name)
        axes[2].plot(x, [r["cosine"] for r in rs], style, label=name)
    axes[0].set_ylabel("|bias| vs ELBO reference (nats)")
    axes[1].set_ylabel("std of sequence log-prob (nats)")
    axes[2].set_ylabel("cosine to reference gradient")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("forward passes per sequence")
    axes[1].set_yscale("log")
    axes[0].set_yscale("log")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
