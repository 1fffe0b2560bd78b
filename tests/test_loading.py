"""load_model / save round trips, DiffusionSpec resolution, LoRA targets, 4-bit errors and the
Dream (remote code, shifted logits, 4-D mask) path of model_logits."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoTokenizer

import d1.core.models.loading as loading
from d1.core.models import (
    LLADA_LORA_TARGETS,
    DiffusionSpec,
    LLaDAModelLM,
    LoraSettings,
    apply_lora,
    load_model,
    make_tiny_model,
    model_logits,
)
from d1.core.models.forward import dream_mask_inputs


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory) -> Path:
    """A tiny-xs checkpoint (seed 3) + tokenizer saved the standard way."""
    path = tmp_path_factory.mktemp("tiny_ckpt")
    model, tok = make_tiny_model("tiny-xs", seed=3)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _ids(n: int = 7, b: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 104, (b, n), generator=torch.Generator().manual_seed(seed))


def test_save_load_round_trip(saved_tiny: Path) -> None:
    ref_model, ref_tok = make_tiny_model("tiny-xs", seed=3)
    ids = _ids()
    ref = ref_model.eval()(input_ids=ids).logits
    config = json.loads((saved_tiny / "config.json").read_text())
    assert config["model_type"] == "llada" and "auto_map" not in config
    assert config["d_model"] == 64 and config["mask_token_id"] == ref_tok.mask_token_id
    for model in (
        LLaDAModelLM.from_pretrained(saved_tiny),
        AutoModel.from_pretrained(saved_tiny),
        AutoModelForMaskedLM.from_pretrained(saved_tiny),
        load_model(str(saved_tiny)).model,
    ):
        assert isinstance(model, LLaDAModelLM)
        assert torch.equal(model(input_ids=ids).logits, ref)
    tok = AutoTokenizer.from_pretrained(saved_tiny)
    text = "<|startoftext|>ab\n<|mdm_mask|><|eot_id|>"
    assert tok(text)["input_ids"] == ref_tok(text)["input_ids"]
    assert tok.mask_token_id == ref_tok.mask_token_id and tok.eos_token_id == ref_tok.eos_token_id
    msgs = [{"role": "user", "content": "hi"}]
    assert tok.apply_chat_template(
        msgs, tokenize=False, add_generation_prompt=True
    ) == ref_tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


def test_load_model_folder_spec_dtype_device(saved_tiny: Path) -> None:
    loaded = load_model(str(saved_tiny), dtype="bf16", device="cpu")
    assert next(loaded.model.parameters()).dtype == torch.bfloat16
    assert not loaded.model.training
    tok = loaded.tokenizer
    assert loaded.spec == DiffusionSpec("llada", tok.mask_token_id, tok.eos_token_id, 0, False)
    assert loaded.spec.pad_token_id == tok.pad_token_id
    with pytest.raises(ValueError, match="dtype"):
        load_model(str(saved_tiny), dtype="float8")


def test_official_style_folder_loads_natively(saved_tiny: Path, tmp_path: Path) -> None:
    """A checkpoint whose config.json points at remote code (as the official one does) still
    loads through the native class, with or without trust_remote_code, and forgets auto_map."""
    for f in saved_tiny.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    config = json.loads((tmp_path / "config.json").read_text())
    config["auto_map"] = {
        "AutoConfig": "configuration_llada.LLaDAConfig",
        "AutoModel": "modeling_llada.LLaDAModelLM",
    }
    config["flash_attention"] = True
    (tmp_path / "config.json").write_text(json.dumps(config))
    ids = _ids()
    ref = load_model(str(saved_tiny)).model(input_ids=ids).logits
    for trust in (False, True):
        loaded = load_model(str(tmp_path), trust_remote_code=trust)
        assert isinstance(loaded.model, LLaDAModelLM)
        assert torch.equal(loaded.model(input_ids=ids).logits, ref)
        assert not hasattr(loaded.model.config, "auto_map")


def test_tiny_names_and_folder_precedence(
    saved_tiny: Path, tmp_path: Path, monkeypatch, tokenizer
) -> None:
    a = load_model("tiny-xs", seed=4)
    b = load_model("tiny-xs", seed=4)
    ids = _ids()
    assert torch.equal(a.model(input_ids=ids).logits, b.model(input_ids=ids).logits)
    assert a.spec.mask_token_id == tokenizer.mask_token_id and not a.spec.logit_shift
    assert a.spec.eos_token_id == a.spec.pad_token_id == tokenizer.eos_token_id
    # An existing folder wins over a built-in name.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny-xs").symlink_to(saved_tiny, target_is_directory=True)
    from_folder = load_model("tiny-xs", seed=4).model(input_ids=ids).logits
    seed3 = load_model(str(saved_tiny)).model(input_ids=ids).logits
    assert torch.equal(from_folder, seed3)


# --- LoRA ------------------------------------------------------------------------------------


def _adapted(model) -> set[str]:
    return {
        name.removeprefix("base_model.model.").removesuffix(".lora_A")
        for name, _ in model.named_modules()
        if name.endswith(".lora_A")
    }


def test_lora_targets_blocks_not_head(tiny_model_factory) -> None:
    base = tiny_model_factory("tiny-xs", 0)
    n_layers = base.config.n_layers
    peft_model = apply_lora(base, LoraSettings(r=4, alpha=8))
    expected = {
        f"model.transformer.blocks.{i}.{name}"
        for i in range(n_layers)
        for name in LLADA_LORA_TARGETS
    }
    assert _adapted(peft_model) == expected  # every block linear, LM head left alone
    assert "model.transformer.ff_out" not in _adapted(peft_model)
    lora_cfg = peft_model.peft_config["default"]
    assert (lora_cfg.r, lora_cfg.lora_alpha, lora_cfg.lora_dropout) == (4, 8, 0.05)
    with_head = apply_lora(tiny_model_factory("tiny-xs", 0), LoraSettings(r=4, adapt_lm_head=True))
    assert _adapted(with_head) == expected | {"model.transformer.ff_out"}
    defaults = LoraSettings()
    assert (defaults.r, defaults.alpha, defaults.dropout) == (128, 256, 0.05)


def test_lora_identity_at_init_and_disable(tiny_model_factory) -> None:
    ids = _ids()
    base_logits = tiny_model_factory("tiny-xs", 0)(input_ids=ids).logits
    model = apply_lora(tiny_model_factory("tiny-xs", 0), LoraSettings(r=4, alpha=8)).eval()
    assert torch.equal(model(input_ids=ids).logits, base_logits)
    assert torch.equal(model_logits(model, ids), base_logits)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    assert not torch.allclose(model(input_ids=ids).logits, base_logits)
    with model.disable_adapter():
        assert torch.equal(model(input_ids=ids).logits, base_logits)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)


def test_lora_with_gradient_checkpointing(tiny_model_factory) -> None:
    """SFT on 8B uses LoRA + checkpointing: adapter gradients must not change."""
    import warnings

    ids = _ids(8)
    grads = []
    for checkpointing in (False, True):
        model = apply_lora(
            tiny_model_factory("tiny-xs", 1), LoraSettings(r=4, alpha=8, dropout=0.0)
        )
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():  # lora_A is drawn from the global RNG by peft: set both A and B
            for name, p in model.named_parameters():
                if "lora_" in name:
                    p.copy_(0.1 * torch.randn(p.shape, generator=g))
        model.train()
        if checkpointing:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                model.gradient_checkpointing_enable()
        logits = model_logits(model, ids, torch.ones_like(ids))
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids.flatten()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-5)


def test_load_tokenizer(saved_tiny: Path, tokenizer) -> None:
    from d1.core.models import load_tokenizer

    for tok in (load_tokenizer("tiny"), load_tokenizer(str(saved_tiny))):
        assert tok.mask_token_id == tokenizer.mask_token_id
        assert tok("a<|eot_id|>")["input_ids"] == tokenizer("a<|eot_id|>")["input_ids"]


def test_lora_missing_target_is_an_error(tiny_model_factory) -> None:
    with pytest.raises(ValueError, match=r"gate_proj.*do not exist.*attn_out"):
        apply_lora(tiny_model_factory(), LoraSettings(target_modules=("q_proj", "gate_proj")))


def test_load_model_with_lora(saved_tiny: Path) -> None:
    loaded = load_model(str(saved_tiny), lora=LoraSettings(r=2, alpha=4))
    assert len(_adapted(loaded.model)) == 7 * 2
    assert not loaded.model.training


# --- errors ----------------------------------------------------------------------------------


def _write_foreign_folder(path: Path, model_type: str, auto_map: bool, tokenizer) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    config = {"model_type": model_type, "vocab_size": len(tokenizer)}
    if auto_map:
        config["auto_map"] = {"AutoConfig": "x.Config", "AutoModel": "x.Model"}
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_unknown_family_error(tmp_path: Path, tokenizer) -> None:
    folder = _write_foreign_folder(tmp_path / "m", "mysterydlm", False, tokenizer)
    with pytest.raises(ValueError, match=r"mysterydlm.*mask_token_id=.*--mask-token-id"):
        load_model(str(folder))


def test_remote_code_needs_trust(tmp_path: Path, tokenizer) -> None:
    folder = _write_foreign_folder(tmp_path / "d", "Dream", True, tokenizer)
    with pytest.raises(ValueError, match=r"trust_remote_code=True.*--trust-remote-code"):
        load_model(str(folder))


def test_missing_or_bad_mask_token(tokenizer) -> None:
    from transformers import PretrainedConfig

    bare = PretrainedConfig()
    with pytest.raises(ValueError, match="--mask-token-id"):
        loading.resolve_spec("mysterydlm", bare, tokenizer)
    spec = loading.resolve_spec("mysterydlm", bare, tokenizer, mask_token_id=5)
    assert spec == DiffusionSpec("mysterydlm", 5, tokenizer.eos_token_id, 0, False)
    clash = PretrainedConfig(mask_token_id=tokenizer.mask_token_id + 1)
    with pytest.raises(ValueError, match="tokenizer's mask token"):
        loading.resolve_spec("llada", clash, tokenizer)
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        load_model("tiny-xs", mask_token_id=10_000)


def test_4bit_errors(monkeypatch) -> None:
    real_find_spec = loading.importlib.util.find_spec

    def no_bnb(name, *args):
        return None if name == "bitsandbytes" else real_find_spec(name, *args)

    monkeypatch.setattr(loading.importlib.util, "find_spec", no_bnb)
    with pytest.raises(ImportError, match=r"bitsandbytes.*pip install"):
        load_model("tiny-xs", load_in_4bit=True)

    def has_bnb(name, *args):
        return object() if name == "bitsandbytes" else real_find_spec(name, *args)

    monkeypatch.setattr(loading.importlib.util, "find_spec", has_bnb)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="CUDA"):
        load_model("tiny-xs", load_in_4bit=True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(ValueError, match="tiny"):
        load_model("tiny-xs", load_in_4bit=True)
    bnb = loading._bnb_config()
    assert bnb.load_in_4bit and bnb.bnb_4bit_quant_type == "nf4"
    assert bnb.bnb_4bit_compute_dtype == torch.bfloat16 and bnb.bnb_4bit_use_double_quant


# --- Dream: remote code, 4-D mask, shifted logits --------------------------------------------

FAKE_DREAM_CONFIG = """
from transformers import PretrainedConfig


class FakeDreamConfig(PretrainedConfig):
    model_type = "Dream"

    def __init__(self, vocab_size=104, hidden_size=16, mask_token_id=None, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.mask_token_id = mask_token_id
        super().__init__(**kwargs)
"""

FAKE_DREAM_MODEL = '''
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput

from .configuration_fakedream import FakeDreamConfig


class FakeDreamModel(PreTrainedModel):
    """Like Dream: hands a tensor mask straight to SDPA (no 2-D expansion), positions matter,
    and its output at i-1 predicts token i."""

    config_class = FakeDreamConfig
    base_model_prefix = "fake"

    def __init__(self, config):
        super().__init__(config)
        d = config.hidden_size
        self.embed = nn.Embedding(config.vocab_size, d)
        self.pos = nn.Embedding(64, d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.lm_head = nn.Linear(d, config.vocab_size, bias=False)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, **kwargs):
        if attention_mask is not None and attention_mask.dim() != 4:
            raise ValueError("this Dream-like model needs a 4-D attention mask")
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[1])[None]
        x = self.embed(input_ids) + self.pos(position_ids)
        q, k, v = self.qkv(x)[:, None].chunk(3, dim=-1)
        x = x + F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask)[:, 0]
        return MaskedLMOutput(logits=self.lm_head(x))
'''


@pytest.fixture
def fake_dream(tmp_path: Path, monkeypatch, tokenizer) -> Path:
    """A checkpoint folder with Dream's model_type, its own (fake) code and random weights."""
    import transformers.dynamic_module_utils as dmu

    monkeypatch.setattr(dmu, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    src = tmp_path / "fake-dream"
    src.mkdir()
    (src / "configuration_fakedream.py").write_text(textwrap.dedent(FAKE_DREAM_CONFIG))
    (src / "modeling_fakedream.py").write_text(textwrap.dedent(FAKE_DREAM_MODEL))
    auto_map = {
        "AutoConfig": "configuration_fakedream.FakeDreamConfig",
        "AutoModel": "modeling_fakedream.FakeDreamModel",
    }
    config = {
        "model_type": "Dream",
        "vocab_size": len(tokenizer),
        "hidden_size": 16,
        "mask_token_id": tokenizer.mask_token_id,
        "auto_map": auto_map,
    }
    (src / "config.json").write_text(json.dumps(config))
    cfg = AutoConfig.from_pretrained(src, trust_remote_code=True)
    model = AutoModel.from_config(cfg, trust_remote_code=True)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g))
    model.save_pretrained(src)
    tokenizer.save_pretrained(src)
    saved = json.loads((src / "config.json").read_text())
    saved["auto_map"] = auto_map
    (src / "config.json").write_text(json.dumps(saved))
    return src


def test_dream_loads_with_spec(fake_dream: Path, tokenizer) -> None:
    loaded = load_model(str(fake_dream), trust_remote_code=True)
    assert type(loaded.model).__name__ == "FakeDreamModel"
    assert loaded.spec == DiffusionSpec(
        "dream", tokenizer.mask_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, True
    )


def test_dream_mask_and_shift_through_model_logits(fake_dream: Path) -> None:
    model = load_model(str(fake_dream), trust_remote_code=True).model
    g = torch.Generator().manual_seed(1)
    short, long = (
        torch.randint(7, 104, (1, 4), generator=g),
        torch.randint(7, 104, (1, 6), generator=g),
    )
    batch = torch.cat([torch.cat([torch.zeros(1, 2, dtype=torch.long), short], dim=1), long])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1] * 6])
    with pytest.raises(ValueError, match="4-D"):  # a 2-D mask handed straight in is refused
        model(input_ids=batch, attention_mask=mask)
    out = model_logits(model, batch, mask, logit_shift=True)
    assert torch.isfinite(out).all()
    alone_raw = model(input_ids=short).logits
    alone = model_logits(model, short, logit_shift=True)
    torch.testing.assert_close(alone[0, 1:], alone_raw[0, :-1])  # j is predicted by j-1
    torch.testing.assert_close(alone[0, 0], alone_raw[0, 0])
    # Left padding is invisible on the real positions (the shifted first real position reads
    # the pad before it, so compare from the second real position on).
    torch.testing.assert_close(out[0, 3:], alone[0, 1:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1], model_logits(model, long, logit_shift=True)[0])
    # An all-ones mask is not passed on: exactly the unmasked result.
    assert torch.equal(
        model_logits(model, long, torch.ones_like(long)), model(input_ids=long).logits
    )


def test_dream_mask_inputs_values() -> None:
    mask = torch.tensor([[0, 1, 1], [1, 1, 1], [0, 0, 0]])
    four_d, pos = dream_mask_inputs(mask)
    assert four_d.shape == (3, 1, 3, 3) and four_d.dtype == torch.bool
    # Real query rows: key valid AND query valid, as Dream's own generate builds it.
    assert four_d[0, 0, 1:].tolist() == [[False, True, True]] * 2
    assert four_d[0, 0, 0].tolist() == [False, True, True]  # padded query row: finite, not empty
    assert four_d[2].all()  # no real token: attend everywhere rather than produce NaN
    assert pos.tolist() == [[0, 0, 1], [0, 1, 2], [0, 0, 0]]


def test_model_logits_family_override(tiny_model) -> None:
    """LLaDA takes the 2-D mask itself; forcing the Dream convention gives the same logits."""
    ids = _ids(6)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1] * 6])
    native = model_logits(tiny_model, ids, mask)
    forced = model_logits(tiny_model, ids, mask, family="dream")
    torch.testing.assert_close(native, forced)


def test_dream_default_lora_targets_use_dream_names(fake_dream: Path) -> None:
    """The default targets mean "every block projection" in Dream's (Qwen) names; this fake
    model has none of them, so the checked error lists Dream's names, not LLaDA's."""
    with pytest.raises(ValueError, match=r"o_proj.*do not exist.*qkv"):
        load_model(str(fake_dream), trust_remote_code=True, lora=LoraSettings(r=2))


def test_tiny_base_variant_has_no_chat_template_and_round_trips(tmp_path) -> None:
    """ "-base" tiny models: same architecture, a tokenizer without chat template (a base
    model); prompts are the bare text everywhere, also after save / load."""
    from d1.core.models import load_model
    from d1.recipes.sft.data import render_chat_prompt

    base = load_model("tiny-xs-base", seed=0)
    chat = load_model("tiny-xs", seed=0)
    assert base.tokenizer.chat_template is None and chat.tokenizer.chat_template
    for a, b in zip(base.model.parameters(), chat.model.parameters(), strict=True):
        assert torch.equal(a, b)  # same weights from the same seed
    assert render_chat_prompt(base.tokenizer, "2+2=", system_prompt=False) == "2+2="
    base.model.save_pretrained(tmp_path)
    base.tokenizer.save_pretrained(tmp_path)
    again = load_model(str(tmp_path))
    assert not again.tokenizer.chat_template
    assert render_chat_prompt(again.tokenizer, "2+2=", system_prompt=False) == "2+2="
