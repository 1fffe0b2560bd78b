"""LoRA merge: the merged full model computes what base + adapter computes, and loads with
plain `from_pretrained` and `d1.core.models.load_model`; `d1 merge` on an SFT checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModel, AutoTokenizer
from typer.testing import CliRunner

from d1.cli import app
from d1.core.models import LoraSettings, load_model, make_tiny_model
from d1.recipes.merge import merge_adapter


@pytest.fixture(autouse=True)
def _restore_threads():
    # The trainer sets torch's thread count for its process; keep the suite's setting.
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture
def base_dir(tmp_path):
    model, tok = make_tiny_model("tiny-xs", seed=3)
    path = tmp_path / "base"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def adapter_with_nonzero_update(base_dir, out):
    """A LoRA adapter (all LLaDA linears) whose B matrices are random, so it changes outputs."""
    loaded = load_model(str(base_dir), lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in loaded.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    loaded.model.save_pretrained(out)
    loaded.tokenizer.save_pretrained(out)
    return loaded.model.eval()


def test_merged_logits_equal_base_plus_adapter(base_dir, tmp_path):
    peft_model = adapter_with_nonzero_update(base_dir, tmp_path / "adapter")
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())[
        "base_model_name_or_path"
    ] == str(base_dir)
    out = merge_adapter(tmp_path / "adapter", tmp_path / "merged")
    ids = torch.randint(7, 100, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = peft_model(input_ids=ids).logits
        plain = AutoModel.from_pretrained(out).eval()  # no d1 loader, no peft
        got = plain(input_ids=ids).logits
        base = load_model(str(base_dir)).model(input_ids=ids).logits
        via_d1 = load_model(str(out)).model(input_ids=ids).logits
    assert not torch.allclose(want, base, atol=1e-3)  # the adapter matters ...
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)  # ... and is merged in
    torch.testing.assert_close(via_d1, want, atol=1e-5, rtol=1e-5)
    assert not any("lora" in k for k in plain.state_dict())
    assert AutoTokenizer.from_pretrained(out).mask_token == "<|mdm_mask|>"
    # The output folder is never overwritten by accident.
    with pytest.raises(FileExistsError):
        merge_adapter(tmp_path / "adapter", out)


def test_merge_cli_on_sft_checkpoint_and_errors(tmp_path):
    from d1.recipes.sft import train_sft

    data = tmp_path / "pr.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": f"q{i}", "response": "r"}) + "\n" for i in range(6))
    )
    run_dir = train_sft(
        None,
        [
            "model.name_or_path=tiny-xs",
            "data.format=prompt_response",
            f"data.path={data}",
            "data.max_length=32",
            "data.system_prompt=false",
            "data.validation_size=2",
            "lora.r=2",
            "lora.alpha=4",
            "global_batch_size=2",
            "train.per_device_batch_size=2",
            "train.max_steps=1",
            "train.eval_steps=null",
            f"train.output_dir={tmp_path}",
            "train.report_to=none",
            "train.num_threads=1",
            "optim.learning_rate=0.05",
        ],
    )
    ckpt = run_dir / "checkpoints" / "checkpoint-1"
    # A tiny base lives nowhere on disk: the run saved it and points the adapter at it.
    base = json.loads((ckpt / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert base == str((run_dir / "base_model").resolve())
    runner = CliRunner()
    result = runner.invoke(app, ["merge", str(ckpt), str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    from peft import PeftModel

    ids = torch.randint(7, 100, (1, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = PeftModel.from_pretrained(load_model(base).model, str(ckpt)).eval()(input_ids=ids)
        got = load_model(str(tmp_path / "merged")).model(input_ids=ids)
    torch.testing.assert_close(got.logits, want.logits, atol=1e-5, rtol=1e-5)

    bad = runner.invoke(app, ["merge", str(run_dir / "base_model"), str(tmp_path / "x")])
    assert bad.exit_code != 0 and "adapter_config.json" in bad.output
