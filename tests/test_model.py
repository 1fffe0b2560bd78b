"""Native LLaDA model: forward vs an independent slow reference, state-dict layout, masks,
gradient checkpointing, the official 8B config, the tiny models and the tokenizer."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch

from d1.core.models import TINY_CONFIGS, LLaDAConfig, LLaDAModelLM, build_tokenizer, make_tiny_model
from d1.core.models.tiny import init_weights_

REFERENCE_CONFIG = Path(__file__).parent / "fixtures" / "llada_8b_instruct" / "config.json"
# Public copy of LLaDA-8B-Instruct's config.json (with a third party's flash_attention keys).
OFFICIAL_CONFIG_JSON = r"""
{
 "activation_type": "silu",
 "alibi": false,
 "alibi_bias_max": 8.0,
 "architectures": [
  "LLaDAModelLM"
 ],
 "attention_dropout": 0.0,
 "attention_layer_norm": false,
 "attention_layer_norm_with_affine": true,
 "auto_map": {
  "AutoConfig": "configuration_llada.LLaDAConfig",
  "AutoModel": "modeling_llada.LLaDAModelLM",
  "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM"
 },
 "bias_for_layer_norm": false,
 "block_group_size": 1,
 "block_type": "llama",
 "d_model": 4096,
 "embedding_dropout": 0.0,
 "embedding_size": 126464,
 "eos_token_id": 126081,
 "flash_attention": true,
 "flash_attn_varlen": true,
 "include_bias": false,
 "include_qkv_bias": false,
 "init_cutoff_factor": null,
 "init_device": "meta",
 "init_fn": "mitchell",
 "init_std": 0.02,
 "input_emb_norm": false,
 "layer_norm_type": "rms",
 "layer_norm_with_affine": true,
 "mask_token_id": 126336,
 "max_sequence_length": 4096,
 "mlp_hidden_size": 12288,
 "mlp_ratio": 4,
 "model_type": "llada",
 "multi_query_attention": null,
 "n_heads": 32,
 "n_kv_heads": 32,
 "n_layers": 32,
 "pad_token_id": 126081,
 "precision": "amp_bf16",
 "residual_dropout": 0.0,
 "rms_norm_eps": 1e-05,
 "rope": true,
 "rope_full_precision": true,
 "rope_theta": 500000.0,
 "scale_logits": false,
 "torch_dtype": "bfloat16",
 "transformers_version": "4.51.2",
 "use_cache": false,
 "vocab_size": 126464,
 "weight_tying": false
}
"""


def _small_config(**overrides) -> LLaDAConfig:
    kw = dict(
        d_model=32,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        mlp_hidden_size=48,
        vocab_size=40,
        embedding_size=48,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        mask_token_id=39,
        eos_token_id=1,
        pad_token_id=1,
        bos_token_id=0,
    )
    kw.update(overrides)
    return LLaDAConfig(**kw)


def _random_model(config: LLaDAConfig, seed: int = 0) -> LLaDAModelLM:
    model = LLaDAModelLM(config)
    g = torch.Generator().manual_seed(seed)
    init_weights_(model, g, std=0.2)  # larger std than 0.02 so attention is far from uniform
    with torch.no_grad():  # non-trivial norm weights so a misplaced weight multiply shows up
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("ln_f.weight"):
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
    return model.eval()


# --- independent slow reference (docs/llada.md "Forward") --------------------------------------


def _ref_rmsnorm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    out = torch.empty_like(x)
    for idx in range(x.shape[0]):
        row = x[idx].double()
        rms = math.sqrt(float((row * row).mean()) + eps)
        out[idx] = (row / rms).to(x.dtype)
    return out * w


def _ref_rope(x: torch.Tensor, positions: list[int], theta: float) -> torch.Tensor:
    """x [L, hd]: rotate pair (j, j + hd/2) by angle pos * theta^(-2j/hd), one at a time."""
    L, hd = x.shape
    half = hd // 2
    out = x.clone().double()
    for t in range(L):
        for j in range(half):
            ang = positions[t] * theta ** (-(2 * j) / hd)
            a, b = float(x[t, j]), float(x[t, j + half])
            out[t, j] = a * math.cos(ang) - b * math.sin(ang)
            out[t, j + half] = b * math.cos(ang) + a * math.sin(ang)
    return out.to(x.dtype)


def _ref_forward(
    model: LLaDAModelLM, ids: torch.Tensor, valid: list[bool] | None = None
) -> torch.Tensor:
    """One sequence ids [L] -> logits [L, V]; `valid` marks real tokens (padding keys ignored,
    positions counted over real tokens only)."""
    cfg = model.config
    sd = {k: v.double() for k, v in model.state_dict().items()}
    L = ids.shape[0]
    valid = valid or [True] * L
    positions, c = [], -1
    for v in valid:
        c += int(v)
        positions.append(max(c, 0))
    H, Hkv, hd, eps = cfg.n_heads, cfg.n_kv_heads, cfg.d_model // cfg.n_heads, cfg.rms_norm_eps
    x = sd["model.transformer.wte.weight"][ids]
    for i in range(cfg.n_layers):
        p = f"model.transformer.blocks.{i}."
        h = _ref_rmsnorm(x, sd[p + "attn_norm.weight"], eps)
        q, k, v = (
            h @ sd[p + "q_proj.weight"].T,
            h @ sd[p + "k_proj.weight"].T,
            h @ sd[p + "v_proj.weight"].T,
        )
        heads = []
        for head in range(H):
            kvh = head // (H // Hkv)
            qh = _ref_rope(q[:, head * hd : (head + 1) * hd], positions, cfg.rope_theta)
            kh = _ref_rope(k[:, kvh * hd : (kvh + 1) * hd], positions, cfg.rope_theta)
            vh = v[:, kvh * hd : (kvh + 1) * hd]
            out = torch.zeros(L, hd, dtype=x.dtype)
            for t in range(L):
                scores = [
                    float(qh[t] @ kh[s]) / math.sqrt(hd) if valid[s] else -math.inf
                    for s in range(L)
                ]
                mx = max(scores)
                w = [math.exp(s - mx) for s in scores]
                z = sum(w)
                for s in range(L):
                    out[t] += (w[s] / z) * vh[s]
            heads.append(out)
        x = x + torch.cat(heads, dim=1) @ sd[p + "attn_out.weight"].T
        h = _ref_rmsnorm(x, sd[p + "ff_norm.weight"], eps)
        gate = h @ sd[p + "ff_proj.weight"].T
        act = gate / (1 + torch.exp(-gate))
        x = x + (act * (h @ sd[p + "up_proj.weight"].T)) @ sd[p + "ff_out.weight"].T
    x = _ref_rmsnorm(x, sd["model.transformer.ln_f.weight"], eps)
    return x @ sd["model.transformer.ff_out.weight"].T


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
def test_forward_matches_slow_reference(n_kv_heads: int) -> None:
    model = _random_model(_small_config(n_kv_heads=n_kv_heads), seed=n_kv_heads)
    ids = torch.randint(0, 40, (2, 7), generator=torch.Generator().manual_seed(1))
    logits = model(input_ids=ids).logits
    assert logits.shape == (2, 7, 48)
    for b in range(2):
        ref = _ref_forward(model, ids[b])
        torch.testing.assert_close(logits[b].double(), ref, atol=1e-4, rtol=1e-4)


def test_forward_with_padding_matches_reference() -> None:
    model = _random_model(_small_config(), seed=3)
    ids = torch.randint(0, 40, (1, 6), generator=torch.Generator().manual_seed(2))
    mask = torch.tensor([[0, 0, 1, 1, 1, 1]])
    logits = model(input_ids=ids, attention_mask=mask).logits[0]
    ref = _ref_forward(model, ids[0], [bool(m) for m in mask[0]])
    torch.testing.assert_close(logits.double(), ref, atol=1e-4, rtol=1e-4)


def test_weight_tying_uses_embedding_as_head() -> None:
    model = _random_model(_small_config(weight_tying=True, embedding_size=40))
    assert "model.transformer.ff_out.weight" not in model.state_dict()
    assert model.get_output_embeddings() is None
    ids = torch.randint(0, 40, (1, 5), generator=torch.Generator().manual_seed(0))
    out = model(input_ids=ids, output_hidden_states=True)
    final = model.model.transformer.ln_f(out.hidden_states[-1])
    torch.testing.assert_close(out.logits, final @ model.model.transformer.wte.weight.T)


# --- state dict layout (docs/llada.md table) --------------------------------------------------


def _expected_shapes(cfg: LLaDAConfig) -> dict[str, tuple[int, ...]]:
    d, kv, m, e = (
        cfg.d_model,
        cfg.n_kv_heads * (cfg.d_model // cfg.n_heads),
        cfg.mlp_hidden_size,
        cfg.effective_embedding_size,
    )
    shapes = {"model.transformer.wte.weight": (e, d)}
    for i in range(cfg.n_layers):
        p = f"model.transformer.blocks.{i}."
        shapes.update(
            {
                p + "attn_norm.weight": (d,),
                p + "q_proj.weight": (d, d),
                p + "k_proj.weight": (kv, d),
                p + "v_proj.weight": (kv, d),
                p + "attn_out.weight": (d, d),
                p + "ff_norm.weight": (d,),
                p + "ff_proj.weight": (m, d),
                p + "up_proj.weight": (m, d),
                p + "ff_out.weight": (d, m),
            }
        )
    shapes["model.transformer.ln_f.weight"] = (d,)
    shapes["model.transformer.ff_out.weight"] = (e, d)
    return shapes


@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_state_dict_layout(n_layers: int) -> None:
    cfg = _small_config(n_layers=n_layers)
    with torch.device("meta"):
        model = LLaDAModelLM(cfg)
    sd = model.state_dict()
    assert len(sd) == 3 + 9 * n_layers
    assert {k: tuple(v.shape) for k, v in sd.items()} == _expected_shapes(cfg)
    assert not any(k.endswith(".bias") for k in sd)
    assert not any("rope" in k or "rotary" in k or "inv_freq" in k for k in sd)
    assert not list(model.buffers())


def _official_config_dict() -> dict:
    raw = json.loads(OFFICIAL_CONFIG_JSON)
    # the embedded copy is faithful to the official file (shipped as a test fixture)
    assert json.loads(REFERENCE_CONFIG.read_text()) == raw
    return raw


def test_official_config_parses() -> None:
    raw = _official_config_dict()
    cfg = LLaDAConfig(**raw)
    assert (cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads) == (4096, 32, 32, 32)
    assert cfg.head_dim == 128
    assert cfg.mlp_hidden_size == 12288
    assert cfg.vocab_size == cfg.embedding_size == 126464
    assert cfg.rms_norm_eps == 1e-5 and cfg.rope_theta == 500000.0
    assert cfg.max_sequence_length == 4096
    assert (cfg.mask_token_id, cfg.eos_token_id, cfg.pad_token_id) == (126336, 126081, 126081)
    assert cfg.activation_type == "silu" and cfg.block_type == "llama"
    assert cfg.include_bias is False and cfg.weight_tying is False and cfg.rope_full_precision
    assert cfg.dtype == torch.bfloat16
    assert cfg.flash_attention is True  # unknown extra key tolerated
    # Generic aliases used by transformers/peft tooling.
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (4096, 32, 32)
    assert cfg.tie_word_embeddings is False
    # Round trip through JSON keeps LLaDA's key names.
    again = LLaDAConfig.from_dict(cfg.to_dict())
    assert again.d_model == 4096 and again.to_dict()["mask_token_id"] == 126336


def test_official_config_builds_8b_on_meta() -> None:
    cfg = LLaDAConfig(**_official_config_dict())
    with torch.device("meta"):
        model = LLaDAModelLM(cfg)
    sd = model.state_dict()
    assert len(sd) == 291
    assert {k: tuple(v.shape) for k, v in sd.items()} == _expected_shapes(cfg)
    n = sum(p.numel() for p in model.parameters())
    # 32 * (4 * 4096^2 + 3 * 4096 * 12288 + 2 * 4096) + 2 * 126464 * 4096 + 4096
    assert n == 8_015_581_184
    assert abs(n / 1e9 - 8.0) < 0.05


def test_unsupported_architecture_option_is_named() -> None:
    with pytest.raises(ValueError, match="alibi"):
        LLaDAModelLM(_small_config(alibi=True))
    with pytest.raises(ValueError, match="n_kv_heads"):
        LLaDAModelLM(_small_config(n_kv_heads=3))


# --- masks and positions ---------------------------------------------------------------------


def test_all_ones_mask_equals_no_mask(tiny_model) -> None:
    ids = torch.randint(0, 104, (3, 9), generator=torch.Generator().manual_seed(0))
    a = tiny_model(input_ids=ids).logits
    b = tiny_model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    assert torch.equal(a, b)


def test_left_padding_is_invariant(tiny_model) -> None:
    g = torch.Generator().manual_seed(0)
    short = torch.randint(7, 104, (1, 5), generator=g)
    long = torch.randint(7, 104, (1, 8), generator=g)
    pad = 0
    batch = torch.cat([torch.cat([torch.full((1, 3), pad), short], dim=1), long])
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1], [1] * 8])
    out = tiny_model(input_ids=batch, attention_mask=mask).logits
    assert torch.isfinite(out).all()  # padded query rows included
    alone_short = tiny_model(input_ids=short).logits
    alone_long = tiny_model(input_ids=long).logits
    torch.testing.assert_close(out[0, 3:], alone_short[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1], alone_long[0], atol=1e-5, rtol=1e-5)


def test_fully_padded_row_is_finite(tiny_model) -> None:
    ids = torch.randint(0, 104, (2, 4), generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1]])
    out = tiny_model(input_ids=ids, attention_mask=mask).logits
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[1], tiny_model(input_ids=ids[1:]).logits[0])


def test_explicit_position_ids_and_inputs_embeds(tiny_model) -> None:
    ids = torch.randint(0, 104, (2, 6), generator=torch.Generator().manual_seed(0))
    base = tiny_model(input_ids=ids).logits
    same = tiny_model(input_ids=ids, position_ids=torch.arange(6)[None].expand(2, 6)).logits
    assert torch.equal(base, same)
    shifted = tiny_model(input_ids=ids, position_ids=torch.arange(6) + 5).logits
    # RoPE is relative: a constant offset leaves attention scores unchanged (up to rounding).
    torch.testing.assert_close(shifted, base, atol=1e-5, rtol=1e-5)
    emb = tiny_model.get_input_embeddings()(ids)
    assert torch.equal(tiny_model(inputs_embeds=emb).logits, base)
    as_tuple = tiny_model(input_ids=ids, return_dict=False)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], base)


def test_four_d_boolean_mask_matches_key_padding(tiny_model) -> None:
    ids = torch.randint(0, 104, (1, 6), generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[0, 1, 1, 1, 1, 1]])
    a = tiny_model(input_ids=ids, attention_mask=mask).logits
    four_d = mask.bool()[:, None, None, :].expand(1, 1, 6, 6)
    b = tiny_model(
        input_ids=ids, attention_mask=four_d, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)
    ).logits
    torch.testing.assert_close(a, b)


def test_bidirectional_not_causal(tiny_model) -> None:
    ids = torch.randint(7, 104, (1, 6), generator=torch.Generator().manual_seed(0))
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % 104
    a, b = tiny_model(input_ids=ids).logits, tiny_model(input_ids=changed).logits
    assert not torch.allclose(a[0, 0], b[0, 0])  # the first position sees the last token


# --- gradient checkpointing -----------------------------------------------------------------


def test_gradient_checkpointing_same_loss_and_grads(tiny_model_factory) -> None:
    ids = torch.randint(0, 104, (2, 8), generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1], [1] * 8])
    results = []
    for checkpointing in (False, True):
        model = tiny_model_factory("tiny-xs", 3).train()
        if checkpointing:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                model.gradient_checkpointing_enable()
            assert all(b.gradient_checkpointing for b in model.model.transformer.blocks)
        logits = model(input_ids=ids, attention_mask=mask).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids.flatten())
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (l0, g0), (l1, g1) = results
    torch.testing.assert_close(l0, l1)
    assert g0.keys() == g1.keys()
    for name in g0:
        torch.testing.assert_close(g0[name], g1[name], atol=1e-6, rtol=1e-5, msg=name)


def test_bf16_forward_runs_and_is_close(tiny_model_factory) -> None:
    model = tiny_model_factory("tiny-xs", 0)
    ids = torch.randint(0, 104, (1, 8), generator=torch.Generator().manual_seed(0))
    ref = model(input_ids=ids).logits
    out = model.to(torch.bfloat16)(input_ids=ids).logits
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=0.05, rtol=0.05)


# --- tiny models ---------------------------------------------------------------------------


def test_tiny_configs_sizes_and_determinism() -> None:
    tok = build_tokenizer()
    expected = {"tiny-xs": (50e3, 150e3), "tiny": (0.8e6, 1.5e6), "tiny-m": (5e6, 7e6)}
    state = torch.random.get_rng_state()
    for name, (lo, hi) in expected.items():
        model, t = make_tiny_model(name, seed=0)
        n = sum(p.numel() for p in model.parameters())
        assert lo <= n <= hi, (name, n)
        assert model.config.vocab_size == len(tok) == len(t)
        assert model.config.mask_token_id == t.mask_token_id
        assert model.config.eos_token_id == model.config.pad_token_id == t.eos_token_id
    assert set(expected) <= set(TINY_CONFIGS)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched
    a, _ = make_tiny_model("tiny-xs", seed=5)
    b, _ = make_tiny_model("tiny-xs", seed=5)
    c, _ = make_tiny_model("tiny-xs", seed=6)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    assert not torch.equal(a.get_input_embeddings().weight, c.get_input_embeddings().weight)
    w = a.get_input_embeddings().weight
    assert abs(float(w.detach().std()) - 0.02) < 0.003


def test_unknown_tiny_name() -> None:
    with pytest.raises(ValueError, match="tiny-xs"):
        make_tiny_model("tiny-xxl")


def test_fixtures(tiny_model, tokenizer) -> None:
    assert not tiny_model.training
    assert next(tiny_model.parameters()).dtype == torch.float32
    assert tiny_model.config.vocab_size == len(tokenizer)


# --- tokenizer -----------------------------------------------------------------------------


def test_tokenizer_special_tokens_are_single_ids(tokenizer) -> None:
    specials = {
        "<|mdm_mask|>": tokenizer.mask_token_id,
        "<|endoftext|>": tokenizer.eos_token_id,
        "<|startoftext|>": tokenizer.bos_token_id,
    }
    for text, tid in specials.items():
        assert tokenizer(text)["input_ids"] == [tid]
    assert tokenizer.mask_token == "<|mdm_mask|>"
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    ids = set()
    for text in ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"):
        enc = tokenizer(text)["input_ids"]
        assert len(enc) == 1
        ids.add(enc[0])
        assert enc[0] in tokenizer.all_special_ids
    assert len(ids | set(specials.values())) == 6
    assert tokenizer("a")["input_ids"] == [tokenizer.convert_tokens_to_ids("a")]  # no bos added


def test_tokenizer_round_trip_and_unknown(tokenizer) -> None:
    text = "Q: 12+30=?\n\tA: 42 <|eot_id|>~"
    ids = tokenizer(text)["input_ids"]
    assert len(ids) == len(text) - len("<|eot_id|>") + 1
    assert tokenizer.decode(ids) == text
    unk = tokenizer("é")["input_ids"]
    assert unk == [tokenizer.unk_token_id]
    assert (
        tokenizer.decode(
            tokenizer("hi\n")["input_ids"] + [tokenizer.eos_token_id], skip_special_tokens=True
        )
        == "hi\n"
    )


def test_chat_template_matches_llada_layout(tokenizer) -> None:
    user = [{"role": "user", "content": "What is 2+2?"}]
    out = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    assert out == (
        "<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    convo = [
        {"role": "system", "content": "Be brief. "},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
    ]
    out = tokenizer.apply_chat_template(convo, tokenize=False, add_generation_prompt=False)
    assert out == (
        "<|startoftext|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello<|eot_id|>"
    )
    ids = tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1


def test_chat_template_agrees_with_official_template(tokenizer) -> None:
    """With add_generation_prompt=True our template renders exactly as LLaDA's official one."""
    path = REFERENCE_CONFIG.with_name("tokenizer_config.json")
    import jinja2

    official = jinja2.Environment().from_string(json.loads(path.read_text())["chat_template"])
    convo = [{"role": "system", "content": " S "}, {"role": "user", "content": "u\n"}]
    expected = official.render(messages=convo, bos_token="<|startoftext|>")
    got = tokenizer.apply_chat_template(convo, tokenize=False, add_generation_prompt=True)
    assert got == expected
