"""Tests of the policy objectives (`d1.recipes.grpo.objectives`) against literal slow references.

Every slow reference below is written out with loops: it redraws the noise from the keyed
generators itself, runs the model one sequence and one pass at a time, and evaluates the
paper's formula token by token. Nothing is shared with the implementation except the model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from d1.config import ConfigError, load_config
from d1.core.likelihood import estimate_logps
from d1.recipes.grpo.config import GRPOConfig
from d1.recipes.grpo.loss import completion_mask, grpo_loss
from d1.recipes.grpo.objectives import OBJECTIVES, objective_problems
from d1.recipes.grpo.update import (
    ComputeCounter,
    Reference,
    UpdateSettings,
    policy_step,
    prepare_policy_batch,
)
from d1.training.data import derive_seed
from toy_models import VOCAB, Recorder

MASK = 7
EOS = 1
P, C, G = 6, 5, 3
SEED = 11


def _rollout(seed: int, n_prompts: int = 2):
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(8, VOCAB, (n_prompts, P), generator=g).repeat_interleave(G, 0)
    attn = torch.ones_like(prompt)
    attn[:G, :2] = 0  # the first prompt is left-padded
    prompt[:G, :2] = 0
    comp = torch.randint(0, VOCAB, (n_prompts * G, C), generator=g)
    comp[comp == MASK] = 9
    adv = torch.randn(n_prompts * G, generator=g)
    return prompt, attn, comp, completion_mask(comp, EOS), adv


def _settings(objective: str, options: dict | None = None, **kw) -> UpdateSettings:
    base = {
        "num_iterations": 2,
        "micro_batch_size": 2,
        "num_generations": G,
        "mask_id": MASK,
        "seed": SEED,
        "p_mask": 0.4,
        "epsilon": 0.2,
        "beta": 0.0 if objective == "wd1" else 0.3,
        "objective": objective,
        "objective_options": options or {},
    }
    base.update(kw)
    return UpdateSettings(**base)


def _prepare(model, settings, seed, reference=None, counter=None):
    prompt, attn, comp, cmask, adv = _rollout(seed)
    return prepare_policy_batch(
        model,
        prompt_ids=prompt,
        prompt_mask=attn,
        completion_ids=comp,
        completion_mask=cmask,
        advantages=adv,
        settings=settings,
        generation_batch=3,
        reference=reference,
        counter=counter,
    )


def _grads(model) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters()])


# ----------------------------------------------------------------- literal slow references


def _slow_token_logp(model, prompt_row, attn_row, seq_row, k):
    """log p(seq[P + k]) at completion position k, one sequence through the model alone."""
    ids = seq_row[None]
    att = torch.cat([attn_row, torch.ones(C, dtype=attn_row.dtype)])[None]
    logits = model(ids, attention_mask=att)
    return torch.log_softmax(logits[0, P + k].double(), dim=-1)


def _slow_rows_d1(model, prompt, attn, comp, prompt_noise, row):
    """d1's one-step estimate of row `row` (prompt masked by `prompt_noise`, completion all M)."""
    seq = []
    for j in range(P):
        seq.append(MASK if bool(prompt_noise[row, j]) else int(prompt[row, j]))
    seq += [MASK] * C
    seq_t = torch.tensor(seq)
    out = []
    for k in range(C):
        out.append(_slow_token_logp(model, prompt[row], attn[row], seq_t, k)[int(comp[row, k])])
    return out


def _slow_pass(model, prompt, attn, comp, row, hidden):
    """Clean prompt, completion positions `hidden` masked; log-probs at every position."""
    seq = [int(prompt[row, j]) for j in range(P)]
    for k in range(C):
        seq.append(MASK if hidden[k] else int(comp[row, k]))
    seq_t = torch.tensor(seq)
    return [
        _slow_token_logp(model, prompt[row], attn[row], seq_t, k)[int(comp[row, k])]
        for k in range(C)
    ]


def _slow_coupled(model, prompt, attn, comp, g, k, t_min=0.2, t_max=0.8, full=False):
    rows = []
    for i in range(comp.shape[0]):
        gen = torch.Generator().manual_seed(
            derive_seed(SEED, "grpo-completion-noise", "coupled", g, k, i)
        )
        t = float(t_min + (t_max - t_min) * torch.rand(1, generator=gen))
        u = torch.rand(C, generator=gen)
        m = [bool(u[j] < t) for j in range(C)]
        p0 = _slow_pass(model, prompt, attn, comp, i, [True] * C)
        p1 = _slow_pass(model, prompt, attn, comp, i, m)
        p2 = _slow_pass(model, prompt, attn, comp, i, [not x for x in m])
        row = []
        for j in range(C):
            partial = p1[j] / t if m[j] else p2[j] / (1.0 - t)
            row.append((p0[j] + partial) / 2 if full else partial / 2)
        rows.append(row)
    return rows


def _slow_elbo(model, prompt, attn, comp, g, k, n, eps, stream="mc_elbo"):
    rows = []
    for i in range(comp.shape[0]):
        gen = torch.Generator().manual_seed(
            derive_seed(SEED, "grpo-completion-noise", stream, g, k, i)
        )
        acc = [torch.zeros((), dtype=torch.float64) for _ in range(C)]
        for _ in range(n):
            t = float((1.0 - eps) * torch.rand(1, generator=gen) + eps)
            u = torch.rand(C, generator=gen)
            m = [bool(u[j] < t) for j in range(C)]
            lp = _slow_pass(model, prompt, attn, comp, i, m)
            for j in range(C):
                if m[j]:
                    acc[j] = acc[j] + lp[j] / (n * t)
        rows.append(acc)
    return rows


def _slow_clipped_loss(cur, old, ref, adv, cmask, eps, beta):
    """diffu-GRPO (docs/method.md §4) with group_token_mean, every token written out."""
    n = len(cur)
    groups = n // G
    total = torch.zeros((), dtype=torch.float64)
    for gi in range(groups):
        count = sum(int(cmask[i, k]) for i in range(gi * G, (gi + 1) * G) for k in range(C))
        for i in range(gi * G, (gi + 1) * G):
            for k in range(C):
                if not bool(cmask[i, k]):
                    continue
                rho = torch.exp(cur[i][k] - old[i][k].detach())
                a = float(adv[i])
                surr = torch.minimum(rho * a, torch.clamp(rho, 1 - eps, 1 + eps) * a)
                d = ref[i][k].detach() - cur[i][k]
                kl = torch.exp(d) - d - 1
                total = total + (-(surr - beta * kl)) / max(count, 1) / groups
    return total


# ----------------------------------------------------------------- d1: unchanged


def test_d1_objective_bit_identical_to_estimate_logps_and_grpo_loss() -> None:
    """The d1 objective IS the earlier code path: same ops, same bits (loss and gradient)."""
    model = Recorder(seed=1)
    frozen = Recorder(seed=2)
    settings = _settings("d1", micro_batch_size=6)
    batch = _prepare(model, settings, seed=5, reference=Reference(model, frozen=frozen))
    for k in range(2):
        model.zero_grad()
        stats = policy_step(model, batch, k, settings=settings, backward=lambda x: x.backward())
        got = _grads(model)
        model.zero_grad()
        logps = estimate_logps(
            model,
            batch.prompt_ids,
            batch.prompt_mask,
            batch.completion_ids,
            mask_id=MASK,
            p_mask=0.4,
            prompt_noise=batch.prompt_masks[k],
        )
        with torch.no_grad():
            ref = estimate_logps(
                frozen,
                batch.prompt_ids,
                batch.prompt_mask,
                batch.completion_ids,
                mask_id=MASK,
                prompt_noise=batch.prompt_masks[k],
                chunk_size=6,
            )
        old = logps.detach() if k == 0 else batch.old_logps[k]
        out = grpo_loss(
            logps,
            old,
            batch.advantages,
            batch.completion_mask,
            epsilon=0.2,
            beta=0.3,
            ref_logps=ref,
            weights=batch.weights,
        )
        out.loss.backward()
        assert torch.equal(got, _grads(model))
        assert stats.totals["loss"] == float(out.loss)


# ----------------------------------------------------------------- each objective vs slow ref


@pytest.mark.parametrize("case", range(3))
@pytest.mark.parametrize("objective", ["coupled", "coupled_3pass", "mc_elbo", "wd1", "d1"])
def test_objective_matches_literal_slow_reference(objective: str, case: int) -> None:
    name, options = objective, {}
    if objective == "coupled_3pass":
        name, options = "coupled", {"full_mask_pass": True}
    if objective == "mc_elbo":
        options = {"n": 3, "t_eps": 0.05}
    model = Recorder(seed=10 + case)
    frozen = Recorder(seed=20 + case)
    settings = _settings(name, options, micro_batch_size=4)
    reference = Reference(model, frozen=frozen) if settings.beta > 0 else None
    batch = _prepare(model, settings, seed=30 + case, reference=reference)
    prompt, attn, comp, cmask, adv = _rollout(30 + case)
    k = 1
    # Old log-probs moved away from the current ones (as after some optimizer steps), so the
    # ratio is not 1 and the clip is exercised.
    delta = 0.6 * torch.randn(comp.shape, generator=torch.Generator().manual_seed(case))
    if batch.old_logps[k] is not None:
        batch.old_logps[k] = batch.old_logps[k] + delta
    model.zero_grad()
    stats = policy_step(model, batch, k, settings=settings, backward=lambda x: x.backward())
    got_loss, got_grad = stats.totals["loss"], _grads(model)
    if name != "wd1":
        assert 0 < stats.totals["clip_region"] < stats.totals["tokens"]

    model.zero_grad()
    n = comp.shape[0]
    if name == "wd1":
        loss = torch.zeros((), dtype=torch.float64)
        for gi in range(n // G):
            rows = range(gi * G, (gi + 1) * G)
            zp = sum(math.exp(float(adv[j])) for j in rows)
            zn = sum(math.exp(-float(adv[j])) for j in rows)
            for i in rows:
                lp = _slow_rows_d1(model, prompt, attn, comp, batch.prompt_masks[k], i)
                seq = sum(lp[j] for j in range(C) if bool(cmask[i, j]))
                w_pos = math.exp(float(adv[i])) / zp
                w_neg = math.exp(-float(adv[i])) / zn
                loss = loss - (w_pos - w_neg) * seq / (n // G)
    else:
        if name == "d1":
            slow = lambda m: [  # noqa: E731
                _slow_rows_d1(m, prompt, attn, comp, batch.prompt_masks[k], i) for i in range(n)
            ]
        elif name == "coupled":
            full = options.get("full_mask_pass", False)
            slow = lambda m: _slow_coupled(m, prompt, attn, comp, 3, k, full=full)  # noqa: E731
        else:
            slow = lambda m: _slow_elbo(m, prompt, attn, comp, 3, k, 3, 0.05)  # noqa: E731
        cur = slow(model)
        with torch.no_grad():
            # The model has not moved since `prepare`: old = its estimate, shifted as above.
            old = [
                [v + float(delta[i, j]) for j, v in enumerate(row)]
                for i, row in enumerate(slow(model))
            ]
            ref = slow(frozen)
        loss = _slow_clipped_loss(cur, old, ref, adv, cmask, 0.2, 0.3)
    loss.backward()
    assert got_loss == pytest.approx(float(loss), rel=1e-5, abs=1e-6)
    torch.testing.assert_close(got_grad, _grads(model).float(), rtol=1e-4, atol=1e-5)


def test_coupled_each_token_exactly_once_across_the_pair() -> None:
    settings = _settings("coupled")
    prompt, attn, comp, _, _ = _rollout(0)
    state = settings.make_objective().draw(prompt, attn, comp, generation_batch=0, iteration=1)
    assert state.completion is not None and state.completion.shape == (2 * G, 2, C)
    assert torch.equal(state.completion[:, 0] ^ state.completion[:, 1], torch.ones(2 * G, C).bool())
    assert not bool(state.prompt.any())  # DiffuCoder keeps the prompt clean
    t = state.t
    assert t is not None and bool(((t[:, 0] >= 0.2) & (t[:, 0] <= 0.8)).all())
    torch.testing.assert_close(t[:, 0] + t[:, 1], torch.ones(2 * G))


@pytest.mark.parametrize(
    ("objective", "options", "passes"),
    [
        ("d1", {}, 1),
        ("coupled", {}, 2),
        ("coupled", {"full_mask_pass": True}, 3),
        ("mc_elbo", {"n": 4}, 4),
        ("wd1", {}, 1),
    ],
)
def test_same_state_for_current_old_and_reference_and_counts(objective, options, passes) -> None:
    model = Recorder()
    frozen = Recorder(seed=9)
    settings = _settings(objective, options, micro_batch_size=6, num_iterations=3)
    reference = Reference(model, frozen=frozen) if settings.beta > 0 else None
    counter = ComputeCounter()
    batch = _prepare(model, settings, seed=1, reference=reference, counter=counter)
    n = len(batch)
    uses_old = objective != "wd1"
    assert counter.old_forward_passes == (2 * n * passes if uses_old else 0)
    assert counter.ref_forward_passes == (3 * n * passes if settings.beta > 0 else 0)
    # Every (row, pass) sequence, in order; the no-grad passes run in chunks of the micro-batch.
    old_inputs = torch.cat([c[0] for c in model.calls]) if model.calls else None
    ref_inputs = torch.cat([c[0] for c in frozen.calls]) if frozen.calls else None
    model.calls.clear()
    frozen.calls.clear()
    per_k = n * passes
    for k in range(3):
        before = counter.policy_forward_passes
        policy_step(
            model, batch, k, settings=settings, backward=lambda x: x.backward(), counter=counter
        )
        assert all(c[1] for c in model.calls) and frozen.calls == []  # one forward + backward
        cur = torch.cat([c[0] for c in model.calls])
        assert cur.shape[0] == per_k  # each row's passes, one sequence each
        assert counter.policy_forward_passes - before == per_k
        if uses_old and k >= 1:
            assert old_inputs is not None
            assert torch.equal(cur, old_inputs[(k - 1) * per_k : k * per_k])
        if settings.beta > 0:
            assert ref_inputs is not None
            assert torch.equal(cur, ref_inputs[k * per_k : (k + 1) * per_k])
        model.calls.clear()


def test_mc_elbo_without_antithetic_draws_its_own_reference_noise() -> None:
    settings = _settings("mc_elbo", {"n": 2, "antithetic": False})
    prompt, attn, comp, _, _ = _rollout(0)
    state = settings.make_objective().draw(prompt, attn, comp, generation_batch=0, iteration=0)
    assert state.ref is not None and not torch.equal(state.ref.completion, state.completion)
    shared = _settings("mc_elbo", {"n": 2}).make_objective()
    assert shared.draw(prompt, attn, comp, generation_batch=0, iteration=0).ref is None


def test_wd1_needs_no_old_logps() -> None:
    model = Recorder()
    settings = _settings("wd1", num_iterations=4)
    batch = _prepare(model, settings, seed=2)
    assert model.calls == []  # ratio-free: nothing precomputed
    assert batch.row_coef is not None and all(o is None for o in batch.old_logps)


# ----------------------------------------------------------------- precomputed reference


@pytest.mark.parametrize("chunk", [None, 1, 4])
@pytest.mark.parametrize("objective", ["d1", "mc_elbo"])
def test_precomputed_reference_equals_per_step_bit_for_bit(objective: str, chunk) -> None:
    model = Recorder(seed=4)
    frozen = Recorder(seed=5)
    options = {"n": 2} if objective == "mc_elbo" else {}
    settings = _settings(
        objective, options, micro_batch_size=2, num_iterations=3, logprob_chunk_size=chunk
    )
    reference = Reference(model, frozen=frozen)
    pre = _prepare(model, settings, seed=7, reference=reference)
    per_step = _prepare(model, settings, seed=7)
    assert len(pre.ref_logps) == 3 and per_step.ref_logps == []
    obj = settings.make_objective()
    for k in range(3):
        noise = per_step.noise[k]
        rows = []
        for start in range(0, len(per_step), 2):
            sl = slice(start, start + 2)
            with torch.no_grad():
                rows.append(
                    obj.logps(
                        frozen,
                        per_step.prompt_ids[sl],
                        per_step.prompt_mask[sl],
                        per_step.completion_ids[sl],
                        noise.rows(sl),
                        chunk_size=chunk or 2,
                    )
                )
        assert torch.equal(pre.ref_logps[k], torch.cat(rows))
        grads = []
        for b in (pre, per_step):
            model.zero_grad()
            policy_step(
                model, b, k, settings=settings, backward=lambda x: x.backward(), reference=reference
            )
            grads.append(_grads(model))
        assert torch.equal(grads[0], grads[1])


def test_reference_precompute_runs_in_chunks() -> None:
    model, frozen = Recorder(), Recorder(seed=3)
    settings = _settings("d1", micro_batch_size=4, num_iterations=12, logprob_chunk_size=2)
    _prepare(model, settings, seed=0, reference=Reference(model, frozen=frozen))
    assert len(frozen.calls) == 12 * 3 and max(c[0].shape[0] for c in frozen.calls) == 2


def test_batch_file_round_trip_keeps_noise_and_reference(tmp_path: Path) -> None:
    from d1.recipes.grpo.update import PolicyBatch

    model, frozen = Recorder(), Recorder(seed=3)
    for objective, options in (("mc_elbo", {"n": 2}), ("coupled", {}), ("wd1", {})):
        settings = _settings(objective, options, num_iterations=3)
        reference = Reference(model, frozen=frozen) if settings.beta > 0 else None
        batch = _prepare(model, settings, seed=4, reference=reference)
        batch.save(tmp_path / "b.pt")
        back = PolicyBatch.load(tmp_path / "b.pt", settings, torch.device("cpu"))
        for k in range(3):
            a, b = batch.noise[k], back.noise[k]
            assert torch.equal(a.prompt, b.prompt)
            assert (a.completion is None) == (b.completion is None)
            if a.completion is not None:
                assert torch.equal(a.completion, b.completion) and torch.equal(a.coef, b.coef)
        for x, y in zip(batch.ref_logps, back.ref_logps, strict=True):
            assert torch.equal(x, y)
        if batch.row_coef is not None:
            assert torch.equal(batch.row_coef, back.row_coef)


# ----------------------------------------------------------------- configuration


def test_four_objectives_selectable_from_yaml(tmp_path: Path) -> None:
    assert set(OBJECTIVES) == {"d1", "coupled", "mc_elbo", "wd1"}
    for name, extra in (
        ("d1", ""),
        ("coupled", "  objective_options: {t_min: 0.3, t_max: 0.7}\n"),
        ("mc_elbo", "  objective_options: {n: 8, antithetic: true}\n"),
        ("wd1", "  beta: 0.0\n  objective_options: {psi: 0.5}\n"),
    ):
        path = tmp_path / f"{name}.yaml"
        path.write_text(f"grpo:\n  objective: {name}\n{extra}")
        cfg = load_config(GRPOConfig, path, [])
        assert cfg.grpo.objective == name


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["grpo.objective=ppo"], "'grpo.objective'"),
        (["grpo.objective_options={n: 4}"], "'grpo.objective_options.n'.*mc_elbo"),
        (
            ["grpo.objective=coupled", "grpo.objective_options={psi: 1.0}"],
            "'grpo.objective_options.psi'.*wd1",
        ),
        (
            ["grpo.objective=mc_elbo", "grpo.objective_options={n: 0}"],
            "'grpo.objective_options.n'.*>= 1",
        ),
        (
            ["grpo.objective=mc_elbo", "grpo.objective_options={n: -3}"],
            "'grpo.objective_options.n'",
        ),
        (["grpo.objective=wd1"], "'grpo.beta'.*wd1"),
        (
            ["grpo.objective=coupled", "grpo.objective_options={t_min: 0.9}"],
            "'grpo.objective_options.t_min'",
        ),
        # Settings a clean-prompt objective never reads are an error, not a silent no-op.
        (["grpo.objective=coupled", "grpo.p_mask_prompt=0.3"], "'grpo.p_mask_prompt'.*coupled"),
        (["grpo.objective=mc_elbo", "grpo.p_mask_prompt=0"], "'grpo.p_mask_prompt'.*mc_elbo"),
    ],
)
def test_bad_objective_config_names_the_key(overrides, key) -> None:
    with pytest.raises(ConfigError, match=key):
        load_config(GRPOConfig, None, overrides)


def test_objective_problems_and_settings_errors() -> None:
    assert objective_problems("d1", {}) == []
    # d1 and wd1 read the prompt mask and estimator; the clean-prompt objectives do not.
    assert objective_problems("d1", {}, changed=["p_mask_prompt", "estimator"]) == []
    keys = [k for k, _ in objective_problems("coupled", {}, changed=["estimator"])]
    assert keys == ["estimator"]
    # The paper configs keep the default 0.15, which the clean-prompt objectives accept.
    load_config(GRPOConfig, None, ["grpo.objective=coupled", "grpo.p_mask_prompt=0.15"])
    with pytest.raises(ValueError, match=r"grpo\.objective_options\.n"):
        _settings("mc_elbo", {"n": 0})
    with pytest.raises(ValueError, match=r"grpo\.objective"):
        _settings("nope")


def test_bad_option_fails_before_any_model_loads(tmp_path: Path) -> None:
    """Config validation runs first: a missing model would raise something else."""
    from d1.recipes.grpo.trainer import train_grpo

    path = tmp_path / "bad.yaml"
    path.write_text("grpo:\n  objective: mc_elbo\n  objective_options: {n: 0}\n")
    with pytest.raises(ConfigError, match=r"grpo\.objective_options\.n"):
        train_grpo(path, ["model.name_or_path=/nonexistent/model"])


# ----------------------------------------------------------------- end to end


def _run_overrides(out: Path, run: str, objective: str, *extra: str) -> list[str]:
    base = {
        "model.name_or_path": "tiny-xs",
        "model.load_in_4bit": "false",
        "lora": "{r: 4, alpha: 8, dropout: 0.1}",
        "global_batch_size": "null",
        "train.per_device_batch_size": "4",
        "train.gradient_accumulation_steps": "2",
        "train.max_steps": "4",
        "train.num_threads": "1",
        "train.output_dir": str(out),
        "train.run_name": run,
        "train.report_to": "[none]",
        "train.save_steps": "1",
        "train.progress": "'off'",
        "grpo.num_generations": "4",
        "grpo.num_iterations": "2",
        "grpo.objective": objective,
        "grpo.sampler.gen_length": "8",
        "grpo.sampler.block_length": "8",
        "grpo.sampler.steps": "4",
        "grpo.sampler.temperature": "1.0",
        "optim.learning_rate": "1e-3",
        "tasks": "[{name: echo}]",
    }
    return [f"{k}={v}" for k, v in base.items()] + list(extra)


@pytest.mark.parametrize(
    ("objective", "extra"),
    [
        ("mc_elbo", ("grpo.objective_options={n: 2, antithetic: false}", "grpo.beta=0.04")),
        ("coupled", ("grpo.beta=0.04",)),
        ("wd1", ("grpo.beta=0.0",)),
    ],
)
def test_objective_trains_and_resumes_exactly(tmp_path: Path, echo_task, objective, extra):
    """A LoRA run of each objective, saved inside a generation batch (step 1 of mu = 2) and
    resumed: identical final adapter; compute counts the objective's passes."""
    from safetensors.torch import load_file

    from d1.recipes.grpo.trainer import train_grpo

    first = train_grpo(None, _run_overrides(tmp_path, "a", objective, *extra))
    ckpts = first.run_dir / "checkpoints"
    assert (ckpts / "checkpoint-1" / "grpo_batch_0.pt").is_file()
    final_a = load_file(ckpts / "checkpoint-4" / "adapter_model.safetensors")
    rows = [json.loads(x) for x in (first.run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "compute/backward_passes" in r]
    passes = {"mc_elbo": 2, "coupled": 2, "wd1": 1}[objective]
    assert rows[-1]["compute/backward_passes"] == 4 * 8 * passes
    assert rows[-1]["compute/old_forward_passes"] == (0 if objective == "wd1" else 2 * 8 * passes)
    assert rows[-1]["compute/ref_forward_passes"] == (0 if objective == "wd1" else 4 * 8 * passes)
    resumed = train_grpo(
        None,
        [
            *_run_overrides(tmp_path, "a", objective, *extra),
            f"train.resume_from={ckpts / 'checkpoint-1'}",
        ],
    )
    assert resumed.step == 4
    final_b = load_file(ckpts / "checkpoint-4" / "adapter_model.safetensors")
    for key in final_a:
        assert torch.equal(final_a[key], final_b[key]), key


def test_mc_elbo_log_ratio_clamp_keeps_gradients_finite() -> None:
    """1/t-weighted ELBO terms can move by hundreds of nats: the clamp keeps exp finite."""
    obj = _settings("mc_elbo", {"n": 1}).make_objective()
    logps = torch.tensor([[900.0, -3.0], [-800.0, 1.0]], requires_grad=True)
    old = torch.zeros(2, 2)
    ref = torch.zeros(2, 2)
    mask = torch.ones(2, 2, dtype=torch.bool)
    w = torch.full((2, 2), 0.25)
    out = obj.loss(logps, old, ref, advantages=torch.tensor([1.0, -1.0]), mask=mask, weights=w)
    out.loss.backward()
    assert torch.isfinite(out.loss) and bool(torch.isfinite(logps.grad).all())
    # By hand (epsilon 0.2, beta 0.3, clamp 20; old = ref = 0): per token
    #   900 (A +1): ratio e^20 clipped to 1.2 -> -1.2; KL at d = -20: e^-20 + 19
    #   -3  (A +1): ratio e^-3 below the clip -> -e^-3; KL at d = 3: e^3 - 4
    #   -800 (A -1): ratio e^-20 clipped to 0.8 -> +0.8; KL at d = 20: e^20 - 21
    #   1   (A -1): ratio e -> +e; KL at d = -1: e^-1
    e = math.e
    per_token = [
        -1.2 + 0.3 * (math.exp(-20) + 19),
        -math.exp(-3) + 0.3 * (e**3 - 4),
        0.8 + 0.3 * (math.exp(20) - 21),
        e + 0.3 / e,
    ]
    assert float(out.loss) == pytest.approx(0.25 * sum(per_token), rel=1e-6)
    # Beyond the clamp the log-ratio is constant: no gradient through those two tokens.
    assert float(logps.grad[0, 0]) == 0.0 and float(logps.grad[1, 0]) == 0.0
    assert float(logps.grad[0, 1]) != 0.0 and float(logps.grad[1, 1]) != 0.0
    raw = grpo_loss(
        logps.detach().requires_grad_(),
        old,
        torch.tensor([1.0, -1.0]),
        mask,
        epsilon=0.2,
        beta=0.3,
        ref_logps=ref,
        weights=w,
    )
    assert not torch.isfinite(raw.loss)  # what d1's unclamped formula does on such terms
