"""Run by `torchrun --nproc_per_node 2` (CPU, gloo) from tests/test_generation_context.py.

For each backend named on the command line (ddp, fsdp1, fsdp2, zero3) and for full fine-tuning
and LoRA, a tiny LLaDA is wrapped for training on both processes, and inside
`generation_context`:

- rollouts (reference sampler and the fast sampler with its block KV cache, temperature 1),
- the old policy's log-probs (`prepare_policy_batch`, mu = 3),
- the reference's log-probs (`Reference`: the LoRA adapter disabled, or a frozen copy),

must equal those of the same model unwrapped in one process. The parameters must really be
sharded outside the context (the test would prove nothing otherwise), and after the context a
training step through the wrapper must equal the step of a twin that never entered it (ZeRO-3's
hooks come back). Process 0 prints "OK <backend> <full|lora>" per case; any mismatch raises.

zero3 needs `pip install deepspeed` (not a d1 dependency); it ran on CPU with deepspeed 0.19.8.
"""

from __future__ import annotations

import copy
import os
import sys

import torch
import torch.distributed as dist

from d1.core.likelihood import estimate_logps
from d1.core.models import LoraSettings, apply_lora, make_tiny_model
from d1.core.models.modeling_llada import LLaDABlock
from d1.core.sampling import SamplerConfig
from d1.recipes.grpo.generation import generation_context, parallel_kind
from d1.recipes.grpo.rollout import PromptItem, generate_rollouts
from d1.recipes.grpo.update import Reference, UpdateSettings, prepare_policy_batch
from d1.tasks.base import Example
from toy_tasks import Echo

TOL = {"atol": 1e-5, "rtol": 1e-5}


def build(lora: bool) -> tuple[torch.nn.Module, object]:
    model, tokenizer = make_tiny_model("tiny-xs", seed=0)
    model = model.float()
    if lora:
        with torch.random.fork_rng():
            torch.manual_seed(0)  # LoRA A's initialisation draws from the global RNG
            model = apply_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0))
        with torch.no_grad():  # a trained adapter, so "adapter disabled" is a different model
            g = torch.Generator().manual_seed(1)
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model, tokenizer


def wrap(model: torch.nn.Module, backend: str) -> torch.nn.Module:
    if backend == "ddp":
        return torch.nn.parallel.DistributedDataParallel(model)
    if backend == "fsdp1":
        import functools

        from torch.distributed.fsdp import FullyShardedDataParallel, ShardingStrategy
        from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

        return FullyShardedDataParallel(
            model,
            device_id=torch.device("cpu"),
            sharding_strategy=ShardingStrategy.FULL_SHARD,
            auto_wrap_policy=functools.partial(
                transformer_auto_wrap_policy, transformer_layer_cls={LLaDABlock}
            ),
            use_orig_params=True,
        )
    if backend == "fsdp2":
        from torch.distributed.fsdp import fully_shard

        for module in model.modules():
            if isinstance(module, LLaDABlock):
                fully_shard(module)
        fully_shard(model)
        return model
    if backend == "zero3":
        import deepspeed

        config = {
            "train_micro_batch_size_per_gpu": 1,
            "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0},
            "zero_force_ds_cpu_optimizer": False,
            "zero_allow_untested_optimizer": True,
        }
        params = [p for p in model.parameters() if p.requires_grad]
        engine, *_ = deepspeed.initialize(
            model=model, optimizer=torch.optim.SGD(params, lr=0.1), config=config
        )
        return engine
    raise ValueError(backend)


def local_numel(model: torch.nn.Module) -> int:
    total = 0
    for p in model.parameters():
        local = p.to_local() if hasattr(p, "to_local") else p  # FSDP2 DTensor shards
        total += local.numel()
    return total


def no_grad_passes(model: torch.nn.Module, tokenizer, frozen, *, sampler: SamplerConfig):
    """Rollouts, old log-probs and reference log-probs, as the trainer computes them."""
    task = Echo()
    items = [PromptItem("echo", task, Example(f"e{i}", str(10**i + 7), "")) for i in range(3)]
    rollout = generate_rollouts(
        model,
        tokenizer,
        items,
        num_generations=2,
        sampler=sampler,
        mask_id=tokenizer.mask_token_id,
        eos_id=tokenizer.eos_token_id,
        generator=None,
        call_generator=lambda start: torch.Generator().manual_seed(100 + start),
        generation_batch_size=2,
    )
    settings = UpdateSettings(
        num_iterations=3, micro_batch_size=2, num_generations=2, mask_id=tokenizer.mask_token_id
    )
    batch = prepare_policy_batch(
        model,
        prompt_ids=rollout.prompt_ids,
        prompt_mask=rollout.prompt_mask,
        completion_ids=rollout.completion_ids,
        completion_mask=rollout.completion_mask,
        advantages=torch.zeros(len(rollout)),
        settings=settings,
        generation_batch=0,
    )
    ref = Reference(model, frozen)
    with torch.no_grad(), ref.policy() as ref_model:
        ref_logps = estimate_logps(
            ref_model,
            batch.prompt_ids,
            batch.prompt_mask,
            batch.completion_ids,
            mask_id=settings.mask_id,
            prompt_noise=batch.prompt_masks[1],
        )
    return rollout.completion_ids, [batch.old_logps[1], batch.old_logps[2]], ref_logps, batch


def train_step(model: torch.nn.Module, batch, mask_id: int) -> torch.Tensor:
    """One gradient step of a log-prob loss through the training wrapper; returns the loss."""
    logps = estimate_logps(
        model,
        batch.prompt_ids,
        batch.prompt_mask,
        batch.completion_ids,
        mask_id=mask_id,
        prompt_noise=batch.prompt_masks[0],
    )
    loss = -logps.mean()
    if parallel_kind(model) == "zero3":
        model.backward(loss)
        model.step()
    else:
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                if p.grad is not None:
                    p -= 0.1 * p.grad
                    p.grad = None
    return loss.detach()


def full_params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every whole parameter by its unwrapped name (each backend's own gather)."""
    kind = parallel_kind(model)
    if kind == "fsdp1":
        from torch.distributed.fsdp import FullyShardedDataParallel

        with FullyShardedDataParallel.summon_full_params(model, writeback=False):
            named = {k: v.clone() for k, v in model.module.named_parameters()}
    elif kind == "fsdp2":
        named = {k: v.full_tensor() for k, v in model.named_parameters()}
    elif kind == "zero3":
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(model.module.parameters())):
            named = {k: v.detach().clone() for k, v in model.module.named_parameters()}
    else:
        named = dict(getattr(model, "module", model).named_parameters())
    return {k.replace("_fsdp_wrapped_module.", ""): v.detach() for k, v in named.items()}


def check(backend: str, lora: bool, sampler: SamplerConfig) -> None:
    plain, tokenizer = build(lora)
    frozen = None if lora else copy.deepcopy(plain).eval()
    mask_id = tokenizer.mask_token_id
    want_ids, want_old, want_ref, want_batch = no_grad_passes(
        plain, tokenizer, frozen, sampler=sampler
    )
    model, _ = build(lora)
    full = local_numel(model)
    wrapped = wrap(model, backend)
    kind = parallel_kind(wrapped)
    assert kind == backend, (kind, backend)
    if backend != "ddp":
        assert local_numel(wrapped) < full, "parameters are not sharded"
    got_ids, got_old, got_ref, _ = no_grad_passes(wrapped, tokenizer, frozen, sampler=sampler)
    assert torch.equal(got_ids, want_ids), f"{backend}: rollouts differ\n{got_ids}\n{want_ids}"
    for got, want in zip(got_old, want_old, strict=True):
        torch.testing.assert_close(got, want, **TOL)
    torch.testing.assert_close(got_ref, want_ref, **TOL)
    if backend != "ddp":
        assert local_numel(wrapped) < full, "parameters stayed gathered after the context"
    if backend == "zero3":
        # The gather holds across forwards: ZeRO-3's release hooks are off inside the context.
        with generation_context(wrapped) as inner, torch.no_grad():
            for _ in range(2):
                inner(input_ids=want_batch.prompt_ids)
            assert local_numel(inner) == full, "ZeRO-3 released the gathered parameters"
    # Training through the wrapper after the context is what it is without the context (ZeRO-3's
    # hooks are back): one step each, on this model and on a twin that never entered it.
    twin = wrap(build(lora)[0], backend)
    loss = train_step(wrapped, want_batch, mask_id)
    torch.testing.assert_close(loss, train_step(twin, want_batch, mask_id), **TOL)
    torch.testing.assert_close(loss, train_step(plain, want_batch, mask_id), **TOL)
    got, want = full_params(wrapped), full_params(twin)
    assert got.keys() == want.keys()
    for name, value in want.items():
        torch.testing.assert_close(got[name], value, **TOL)
    dist.barrier()  # both processes got here (a failure on either fails the launch)
    if dist.get_rank() == 0:
        print(f"OK {backend} {'lora' if lora else 'full'}", flush=True)


def main() -> None:
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if "zero3" in sys.argv[1:]:
        import deepspeed

        deepspeed.init_distributed(dist_backend="gloo")
    else:
        dist.init_process_group("gloo")
    torch.set_num_threads(1)
    reference = SamplerConfig(gen_length=8, block_length=4, steps=4, temperature=1.0)
    fast = SamplerConfig(
        gen_length=8, block_length=4, steps=4, temperature=1.0, name="fast", cache="dual"
    )
    for backend in sys.argv[1:]:
        for lora in (False, True):
            check(backend, lora, fast if lora else reference)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
