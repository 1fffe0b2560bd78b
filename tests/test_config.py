"""d1.config: YAML + overrides -> typed dataclasses, errors naming the key, save round trip."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from d1.config import (
    ConfigError,
    config_or_load,
    config_to_dict,
    load_config,
    parse_override,
    save_config,
)
from d1.recipes.sft import SFTConfig
from d1.training.config import LLADA_LORA_TARGETS


@dataclass
class Inner:
    lr: float = 1e-3
    steps: int = 10
    name: str = "x"
    mode: Literal["a", "b"] = "a"


@dataclass
class Outer:
    required_path: str
    inner: Inner = field(default_factory=Inner)
    maybe: Inner | None = None
    tags: list[str] = field(default_factory=list)
    flag: bool = False
    opts: dict[str, int] = field(default_factory=dict)


def write(tmp_path, text: str, name: str = "c.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_yaml_and_overrides_nested(tmp_path):
    p = write(tmp_path, "required_path: data.jsonl\ninner:\n  lr: 1e-4\n  steps: 3\n")
    cfg = load_config(Outer, p, ["inner.steps=7", "tags=[a,b]", "flag=true", "maybe.lr=2.5"])
    # YAML 1.1 reads `1e-4` as a string: float fields still accept it.
    assert cfg.inner.lr == pytest.approx(1e-4)
    assert cfg.inner.steps == 7
    assert cfg.tags == ["a", "b"]
    assert cfg.flag is True
    # Overriding a key of a null/absent optional section builds it from its defaults.
    assert cfg.maybe == Inner(lr=2.5)
    assert cfg.required_path == "data.jsonl"


def test_scalar_for_list_and_null_section(tmp_path):
    cfg = load_config(Outer, None, ["required_path=x", "tags=wandb", "maybe=null"])
    assert cfg.tags == ["wandb"]
    assert cfg.maybe is None


def test_unknown_key_suggests_close_match(tmp_path):
    p = write(tmp_path, "required_path: x\ninner:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_config(Outer, p)
    msg = str(e.value)
    assert "'inner.lrr'" in msg and "Did you mean 'inner.lr'" in msg and str(p) in msg


def test_wrong_type_names_key_and_override_source():
    with pytest.raises(ConfigError) as e:
        load_config(Outer, None, ["required_path=x", "inner.steps=many"])
    msg = str(e.value)
    assert "'inner.steps'" in msg and "integer" in msg and "command line" in msg


def test_literal_and_bool_checked():
    with pytest.raises(ConfigError, match=r"'inner.mode'.*one of 'a', 'b'"):
        load_config(Outer, None, ["required_path=x", "inner.mode=c"])
    with pytest.raises(ConfigError, match=r"'flag'.*true/false"):
        load_config(Outer, None, ["required_path=x", "flag=1"])


def test_yaml_boolean_words_map_to_literal_options():
    # YAML 1.1 parses `no` / `on` / `off` as booleans; Literal fields take them back.
    cfg = load_config(SFTConfig, None, ["train.mixed_precision=no", "train.progress=off"])
    assert (cfg.train.mixed_precision, cfg.train.progress) == ("no", "off")
    assert load_config(SFTConfig, None, ["train.progress=on"]).train.progress == "on"


def test_missing_required_and_several_problems_reported_together():
    with pytest.raises(ConfigError) as e:
        load_config(Outer, None, ["inner.steps=x", "inner.nope=1"])
    msg = str(e.value)
    assert "'required_path'" in msg and "required key is missing" in msg
    assert "'inner.steps'" in msg and "'inner.nope'" in msg


def test_bad_override_syntax_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        load_config(Outer, None, ["required_path"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Outer, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not a section"):
        load_config(Outer, None, ["required_path=x", "required_path.a=1"])
    assert parse_override("a.b=") == (["a", "b"], None)


def test_save_round_trip(tmp_path):
    cfg = load_config(Outer, None, ["required_path=x", "maybe.steps=2", "opts.k=3", "tags=[t]"])
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert load_config(Outer, path) == cfg
    assert config_to_dict(cfg)["maybe"]["steps"] == 2


# -- SFTConfig: paper defaults and validation hooks -------------------------------------------


def test_sft_defaults_reproduce_paper():
    cfg = SFTConfig()
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (128, 256, 0.05)
    assert tuple(cfg.lora.target_modules) == LLADA_LORA_TARGETS
    assert cfg.optim.learning_rate == 1e-5 and cfg.optim.weight_decay == 0.1
    assert cfg.train.num_epochs == 20 and cfg.global_batch_size == 8
    assert cfg.data.max_length == 4096 and cfg.data.validation_fraction == 0.01
    assert cfg.data.source() == "simplescaling/s1K"
    assert cfg.train.metric_for_best == "eval/loss" and cfg.eps == 1e-3


def test_partial_section_keeps_the_sections_own_defaults(tmp_path):
    # SFT's `train` default is a paper-specific instance, not TrainingConfig's class defaults:
    # overriding one key must keep the others.
    cfg = load_config(SFTConfig, None, ["train.max_steps=5", "lora.r=8"])
    assert cfg.train.max_steps == 5 and cfg.train.num_epochs == 20
    assert cfg.train.metric_for_best == "eval/loss" and cfg.train.save_total_limit == 20
    assert (cfg.lora.r, cfg.lora.alpha) == (8, 256)
    p = write(tmp_path, "optim:\n  warmup_steps: 3\n")
    assert load_config(SFTConfig, p).optim.learning_rate == 1e-5


def test_lora_is_switched_on_explicitly(tmp_path):
    from d1.config import config_to_dict, save_config
    from d1.recipes.grpo.config import GRPOConfig
    from d1.training.config import LoraConfig

    full = write(tmp_path, "lora: null\n")
    adapters = write(tmp_path, "lora: {r: 16, alpha: 32}\n", name="lora.yaml")
    # Existing YAMLs keep their meaning: null is full fine-tuning, a mapping is LoRA.
    assert load_config(SFTConfig, full).lora is None
    cfg = load_config(SFTConfig, adapters)
    assert cfg.lora is not None and cfg.lora.enabled and (cfg.lora.r, cfg.lora.alpha) == (16, 32)
    # lora.r on a null section would silently switch LoRA on: an error naming the fix.
    for path, extra in ((full, []), (None, ["lora=null"])):
        with pytest.raises(ConfigError) as e:
            load_config(SFTConfig, path, [*extra, "lora.r=8"])
        msg = str(e.value)
        assert "'lora' is null" in msg and "lora.enabled=true" in msg and "lora.r" in msg
    cfg = load_config(SFTConfig, full, ["lora.enabled=true", "lora.r=8"])
    assert cfg.lora is not None and (cfg.lora.r, cfg.lora.alpha) == (8, 256)
    # A whole section on the command line is an explicit choice too.
    assert load_config(SFTConfig, full, ["lora={r: 4, alpha: 8}"]).lora.r == 4
    # enabled=false is full fine-tuning, from YAML or the command line.
    assert load_config(SFTConfig, adapters, ["lora.enabled=false"]).lora is None
    off = write(tmp_path, "lora: {enabled: false, r: 16}\n", name="off.yaml")
    assert load_config(SFTConfig, off, ["lora.r=4"]).lora is None
    assert SFTConfig(lora=LoraConfig(enabled=False)).lora is None  # the Python API agrees
    with pytest.raises(ConfigError, match=r"'lora\.enabled'"):
        load_config(SFTConfig, None, ["lora.enabled=maybe"])
    # A LoRA-on default (GRPO's paper section) takes lora.r directly.
    assert load_config(GRPOConfig, None, ["lora.r=8"]).lora.r == 8
    # The saved run config reads back the same.
    saved = save_config(cfg, tmp_path / "saved.yaml")
    assert config_to_dict(load_config(SFTConfig, saved)) == config_to_dict(cfg)
    saved = save_config(load_config(SFTConfig, full), tmp_path / "saved_full.yaml")
    assert load_config(SFTConfig, saved).lora is None


def test_sft_validation_names_keys(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(
            SFTConfig,
            None,
            [
                f"data.path={tmp_path / 'missing.jsonl'}",
                "data.format=prompt_response",
                "optim.learning_rate=-1",
                "lora.r=0",
                "train.gradient_accumulation_steps=2",
            ],
        )
    msg = str(e.value)
    assert "'data.path'" in msg and "does not exist" in msg
    assert "'optim.learning_rate'" in msg and "'lora.r'" in msg
    assert "'global_batch_size'" in msg


def test_sft_task_format_needs_known_task():
    with pytest.raises(ConfigError, match=r"'data.task'.*required"):
        load_config(SFTConfig, None, ["data.format=task"])
    with pytest.raises(ConfigError, match="unknown task 'sudokuu'"):
        load_config(SFTConfig, None, ["data.format=task", "data.task=sudokuu"])


def test_full_finetune_and_qlora_check():
    cfg = load_config(SFTConfig, None, ["lora=null"])
    assert cfg.lora is None
    with pytest.raises(ConfigError, match=r"'model\.load_in_4bit'"):
        load_config(SFTConfig, None, ["lora=null", "model.load_in_4bit=true"])


def test_config_or_load_takes_an_object_or_a_path(tmp_path) -> None:
    cfg = load_config(SFTConfig, None, ["train.max_steps=3"])
    assert config_or_load(SFTConfig, cfg) is cfg
    with pytest.raises(ValueError, match="not with a SFTConfig object"):
        config_or_load(SFTConfig, cfg, ["train.max_steps=4"])
    assert config_or_load(SFTConfig, None, ["train.max_steps=5"]).train.max_steps == 5
    path = tmp_path / "sft.yaml"
    save_config(cfg, path)
    assert config_or_load(SFTConfig, path, ["optim.learning_rate=0.5"]).train.max_steps == 3
