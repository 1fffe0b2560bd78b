"""Toolkit pieces in isolation: schedules, weight-decay groups, data order and resumption of
the micro-batch stream, keyed noise, tracker outputs, model setup (checkpointing, QLoRA)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from d1.config import load_config
from d1.recipes.sft import SFTConfig
from d1.training.config import LoraConfig, ModelConfig, OptimConfig
from d1.training.data import (
    EpochSampler,
    ListDataset,
    StepSchedule,
    derive_seed,
    iterate_micro_batches,
    keyed_generator,
    prepare_train_loader,
)
from d1.training.optim import build_optimizer, build_scheduler, parameter_groups
from d1.training.runtime import load_for_training
from d1.training.tracking import ProgressBar, Tracker


@pytest.fixture(scope="module")
def accelerator():
    from accelerate import Accelerator

    return Accelerator(cpu=True)


def lrs(kind: str, warmup: int, total: int) -> list[float]:
    cfg = OptimConfig(learning_rate=1.0, lr_scheduler=kind, warmup_steps=warmup)
    opt = build_optimizer(torch.nn.Linear(2, 2), cfg)
    sched = build_scheduler(opt, cfg, total)
    out = []
    for _ in range(total):
        out.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    return out


def test_schedules_match_hand_values():
    assert lrs("constant_with_warmup", 2, 5) == pytest.approx([0.0, 0.5, 1.0, 1.0, 1.0])
    assert lrs("linear", 0, 4) == pytest.approx([1.0, 0.75, 0.5, 0.25])
    cos = lrs("cosine", 1, 5)
    assert cos[0] == 0.0 and cos[1] == pytest.approx(1.0)
    assert cos[3] == pytest.approx(0.5 * (1 + math.cos(math.pi * 2 / 4)))
    assert OptimConfig(warmup_ratio=0.1).num_warmup_steps(95) == 10  # ceil, as HF Trainer


def test_weight_decay_skips_vectors_and_frozen():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    model[1].weight.requires_grad_(False)
    decay, no_decay = parameter_groups(model, 0.1)
    assert decay["params"] == [model[0].weight] and decay["weight_decay"] == 0.1
    assert no_decay["params"] == [model[0].bias, model[1].bias]
    assert no_decay["weight_decay"] == 0.0


def test_data_order_is_seeded_per_epoch_and_never_global():
    rng = torch.get_rng_state()
    s = EpochSampler(10, seed=3)
    e0, e1 = s.order(0), s.order(1)
    assert sorted(e0) == list(range(10)) and e0 != e1
    assert EpochSampler(10, seed=3).order(1) == e1 and EpochSampler(10, seed=4).order(1) != e1
    assert torch.equal(torch.get_rng_state(), rng)
    assert derive_seed(1, "a", 2) == derive_seed(1, "a", 2) != derive_seed(1, "a", 3)
    a = torch.rand(3, generator=keyed_generator(0, "x", 5))
    assert torch.equal(a, torch.rand(3, generator=keyed_generator(0, "x", 5)))


def test_micro_batch_stream_resumes_mid_epoch(accelerator):
    sched = StepSchedule(
        num_examples=11, per_device_batch_size=2, gradient_accumulation_steps=2, num_processes=1
    )
    assert (sched.global_batch, sched.steps_per_epoch, sched.micro_batches_per_epoch) == (4, 2, 4)
    loader = prepare_train_loader(
        ListDataset(list(range(11))),
        lambda xs: torch.tensor(xs),
        batch_size=2,
        seed=0,
        accelerator=accelerator,
    )

    def take(start_epoch, start_micro, n):
        it = iterate_micro_batches(
            loader,
            accelerator,
            start_epoch=start_epoch,
            start_micro_batch=start_micro,
            micro_batches_per_epoch=4,
        )
        return [(e, k, b.tolist()) for (e, k, b), _ in zip(it, range(n), strict=False)]

    straight = take(0, 0, 10)
    assert [(e, k) for e, k, _ in straight[:6]] == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1)]
    # Each epoch uses 8 of the 11 examples, no repeats, in that epoch's seeded order.
    epoch0 = [x for e, _, b in straight if e == 0 for x in b]
    assert len(set(epoch0)) == 8 and epoch0 == EpochSampler(11, 0).order(0)[:8]
    assert take(1, 1, 5) == straight[5:10]


def test_tracker_writes_jsonl_and_tensorboard(tmp_path):
    with Tracker(tmp_path, ["tensorboard"], run_name="t") as tr:
        tr.log({"train/loss": torch.tensor(1.5), "note": "text", "bad": float("nan")}, step=3)
    (row,) = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert row["step"] == 3 and row["train/loss"] == 1.5 and row["note"] == "text"
    assert row["bad"] == "nan"
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    Tracker(tmp_path / "off", ["none"], enabled=False).log({"x": 1}, step=0)
    assert not (tmp_path / "off").exists()
    ProgressBar(10, mode="auto").update(1, loss=0.5)  # not a TTY under pytest: silent no-op
    with pytest.raises(ValueError, match="report_to"):
        Tracker(tmp_path, ["mlflow"])


def test_progress_bar_draws_phase_position_and_kept_values():
    import io

    buf = io.StringIO()
    bar = ProgressBar(10, mode="on", stream=buf)
    bar.update(3, loss=0.25, reward=1.5, accuracy=0.375, lr=1e-4)
    bar.phase("rollout: sampling 1/2, block 3/8")
    bar.update(4)  # no values: the last ones stay
    bar._progress.refresh()
    drawn = buf.getvalue()
    assert "rollout: sampling 1/2, block 3/8" in drawn and "4/10" in drawn
    assert "reward 1.5000" in drawn and "acc 37.5%" in drawn and "lr 1.00e-04" in drawn
    bar.close()
    assert bar.info == "loss 0.2500  reward 1.5000  acc 37.5%  lr 1.00e-04"


def test_rewind_keeps_each_step_once(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from d1.training.tracking import rewind_jsonl

    with Tracker(tmp_path, ["tensorboard"]) as tr:
        for step in range(6):
            tr.log({"x": float(step)}, step=step)
    path = tmp_path / "metrics.jsonl"
    with path.open("a") as f:
        f.write('{"step": 6, "x": 6.0, "ti')  # the last line cut short by a kill
    assert rewind_jsonl(path, 3) == 3  # steps 4, 5 and the torn line
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [0, 1, 2, 3]
    mtime = path.stat().st_mtime_ns
    assert rewind_jsonl(path, 3) == 0 and path.stat().st_mtime_ns == mtime  # untouched
    # The resumed run logs steps 4 and 5 again; TensorBoard hides the first attempt's.
    with Tracker(tmp_path, ["tensorboard"], purge_step=4) as tr:
        for step in (4, 5):
            tr.log({"x": 10.0 + step}, step=step)
    assert [json.loads(x)["x"] for x in path.read_text().splitlines()] == [0, 1, 2, 3, 14, 15]
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload().Scalars("x")
    assert [(e.step, e.value) for e in events] == [(0, 0), (1, 1), (2, 2), (3, 3), (4, 14), (5, 15)]
    assert rewind_jsonl(path, None) == 6 and path.read_text() == ""  # a fresh start
    assert rewind_jsonl(tmp_path / "absent.jsonl", 0) == 0


def test_lora_rank_not_below_the_width_is_flagged(tiny_model_factory):
    from d1.core.models import LoraSettings, apply_lora
    from d1.training.runtime import warn_if_not_low_rank

    width = tiny_model_factory("tiny-xs").config.d_model  # every projection is >= this wide
    model = apply_lora(tiny_model_factory("tiny-xs"), LoraSettings(r=width, alpha=width))
    msg = warn_if_not_low_rank(model, width)
    assert msg is not None and f"lora.r={width}" in msg and f"narrowest: {width}" in msg
    small = apply_lora(tiny_model_factory("tiny-xs"), LoraSettings(r=width - 1, alpha=8))
    assert warn_if_not_low_rank(small, width - 1) is None
    assert warn_if_not_low_rank(tiny_model_factory("tiny-xs"), 128) is None  # no adapters


def test_report_to_wandb(tmp_path):
    import importlib.util

    if importlib.util.find_spec("wandb") is None:  # not installed: a clear error, not a crash
        with pytest.raises(ImportError, match="pip install wandb"):
            Tracker(tmp_path, ["wandb"])
    cfg = load_config(SFTConfig, None, ["train.report_to=[tensorboard,wandb]"])
    assert cfg.train.report_to == ["tensorboard", "wandb"]


def test_gradient_checkpointing_gives_identical_gradients():
    grads = []
    ids = torch.randint(7, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    for gc in (False, True):
        loaded = load_for_training(
            ModelConfig(name_or_path="tiny-xs", gradient_checkpointing=gc),
            LoraConfig(r=2, alpha=4, dropout=0.0),
            seed=1,
            device="cpu",
        )
        loaded.model(input_ids=ids).logits.square().mean().backward()
        grads.append(
            {n: p.grad.clone() for n, p in loaded.model.named_parameters() if p.requires_grad}
        )
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n])


def test_lora_init_is_seeded_without_touching_global_rng():
    rng = torch.get_rng_state()
    a = load_for_training(
        ModelConfig(name_or_path="tiny-xs"), LoraConfig(r=2), seed=5, device="cpu"
    )
    b = load_for_training(
        ModelConfig(name_or_path="tiny-xs"), LoraConfig(r=2), seed=5, device="cpu"
    )
    assert torch.equal(torch.get_rng_state(), rng)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.model.training


def test_qlora_needs_a_gpu_and_lora():
    with pytest.raises((RuntimeError, ImportError, ValueError), match=r"4bit|4-bit|QLoRA"):
        load_for_training(
            ModelConfig(name_or_path="tiny-xs", load_in_4bit=True),
            LoraConfig(r=2),
            seed=0,
            device="cpu",
        )
    with pytest.raises(ValueError, match="lora"):
        load_for_training(
            ModelConfig(name_or_path="tiny-xs", load_in_4bit=True), None, seed=0, device="cpu"
        )
