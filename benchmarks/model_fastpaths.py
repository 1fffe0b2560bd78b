"""Each speed path of the model and samplers switched off in turn: sampler seconds on W1.

W1's model (`grpo_step.w1_model`: random LLaDA, d_model 64, 2 layers, vocabulary 300), 6
sequences of a 27-token prompt, gen 64 / block 32 / 32 steps, temperature 0.9, 1 thread. For the
reference sampler and the fast sampler's dual cache, each variant restores one computation the
speed path replaced (variants alternate within one process; medians of `--repeats` calls;
wall and CPU seconds, CPU steadier on a shared machine):

- all: the current code;
- no RoPE table: the cos / sin tables recomputed on every forward (`rope_cos_sin`);
- full logits: the LM head over the whole sequence, then the block's slice (the reference
  sampler before `logits_to_keep`);
- Gumbel temporaries: `logits - T * log(-log(u))` with its four temporaries.

    .venv/bin/python benchmarks/model_fastpaths.py --repeats 15
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import d1.core.sampling.fast as fast_mod
import d1.core.sampling.steps as steps_mod
from d1.core.models.forward import model_logits
from d1.core.models.modeling_llada import RopeTable, rope_cos_sin, signed_sin
from d1.core.sampling import SamplerConfig, sample
from grpo_step import w1_model


@contextlib.contextmanager
def no_rope_table() -> Iterator[None]:
    original = RopeTable.lookup

    def recompute(self, position_ids, offset, length, device, bound=None):
        pos = (
            torch.arange(offset, offset + length, device=device)
            if position_ids is None
            else position_ids
        )
        cos, sin = rope_cos_sin(pos, self.head_dim, self.theta)
        return cos, signed_sin(sin)

    RopeTable.lookup = recompute
    try:
        yield
    finally:
        RopeTable.lookup = original


@contextlib.contextmanager
def full_logits() -> Iterator[None]:
    original = steps_mod.block_logits

    def full(model, rows, attention_mask, start, end, *, logit_shift):
        return model_logits(model, rows, attention_mask, logit_shift=logit_shift)[:, start:end]

    # The one decoding loop (the reference sampler runs it too) calls block_logits.
    fast_mod.block_logits = full
    try:
        yield
    finally:
        fast_mod.block_logits = original


@contextlib.contextmanager
def gumbel_temporaries() -> Iterator[None]:
    original = steps_mod.propose

    def propose(logits, temperature, remasking, generator):
        if temperature == 0.0 or remasking != "low_confidence":
            return original(logits, temperature, remasking, generator)
        logits64 = logits.to(torch.float64)
        u = torch.rand(logits64.shape, generator=generator, dtype=torch.float64)
        x0 = (logits64 - temperature * torch.log(-torch.log(u))).argmax(dim=-1)
        chosen = logits64.gather(-1, x0[..., None]).squeeze(-1)
        return x0, torch.exp(chosen - torch.logsumexp(logits64, dim=-1))

    steps_mod.propose = propose
    try:
        yield
    finally:
        steps_mod.propose = original


VARIANTS = {
    "all": contextlib.nullcontext,
    "no RoPE table": no_rope_table,
    "full logits": full_logits,
    "Gumbel temporaries": gumbel_temporaries,
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args()
    torch.set_num_threads(1)
    model = w1_model().eval()
    mask_id = model.config.mask_token_id
    prompt = torch.randint(0, 296, (1, 27), generator=torch.Generator().manual_seed(0)).repeat(6, 1)
    kw = {"gen_length": 64, "block_length": 32, "steps": 32, "temperature": 0.9}
    samplers = {
        "reference": SamplerConfig(**kw),
        "fast, dual cache": SamplerConfig(**kw, name="fast", cache="dual"),
    }
    print("| sampler | variant | wall s | CPU s | CPU vs all | same tokens |")
    print("|---|---|---|---|---|---|")
    for sname, cfg in samplers.items():
        times = {v: [] for v in VARIANTS}
        outs = {}
        for r in range(args.repeats + 1):
            for name, ctx in VARIANTS.items():
                with ctx():
                    w, c = time.perf_counter(), time.process_time()
                    out = sample(
                        model,
                        prompt,
                        config=cfg,
                        mask_id=mask_id,
                        generator=torch.Generator().manual_seed(r),
                    )
                    if r > 0:
                        times[name].append((time.perf_counter() - w, time.process_time() - c))
                    if r == 1:
                        outs[name] = out
        base_c = statistics.median(t[1] for t in times["all"])
        for name, ts in times.items():
            w = statistics.median(t[0] for t in ts)
            c = statistics.median(t[1] for t in ts)
            same = torch.equal(outs[name], outs["all"])
            print(f"| {sname} | {name} | {w:.4f} | {c:.4f} | {c / base_c:.3f} | {same} |")


if __name__ == "__main__":
    main()
