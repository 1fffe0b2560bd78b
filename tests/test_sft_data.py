"""Masked-SFT data: response layout, prompt/response boundary, EOS padding, no truncation."""

from __future__ import annotations

import copy
import json
import logging

import pytest
import torch

from d1.config import load_config
from d1.recipes.sft import SFTConfig
from d1.recipes.sft.data import (
    SFTCollator,
    build_sft_data,
    end_token_ids,
    examples_from_s1k_rows,
    render_chat_prompt,
    tokenize_examples,
)
from d1.tasks.base import Example

ASSISTANT_HEADER = "<|start_header_id|>assistant<|end_header_id|>\n\n"
# LLaDA-8B-Instruct's own template (tokenizer_config.json): it appends the assistant header
# unconditionally.
OFFICIAL_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
)

S1K_ROW = {
    "solution": "4",
    "question": "What is 2+2?",
    "cot_type": "math",
    "source_type": "x",
    "metadata": "{}",
    "cot": None,
    "thinking_trajectories": ["Two plus two.\nIt is four."],
    "attempt": "4",
}


def test_s1k_response_layout():
    (ex,) = examples_from_s1k_rows([S1K_ROW])
    assert ex.response == (
        "<reasoning>\nTwo plus two.\nIt is four.\n</reasoning>\n<answer>\n4\n</answer>"
    )
    assert ex.question == "What is 2+2?" and ex.answer == "4"


@pytest.mark.parametrize("template", ["builtin", "official"])
def test_assistant_header_belongs_to_prompt(tokenizer, template):
    tok = tokenizer
    if template == "official":  # a private copy: the session fixture stays untouched
        tok = copy.deepcopy(tokenizer)
        tok.chat_template = OFFICIAL_TEMPLATE
    (ex,) = examples_from_s1k_rows([S1K_ROW])
    prompt = render_chat_prompt(tok, ex.question)
    assert prompt.endswith(ASSISTANT_HEADER)
    (item,), _ = tokenize_examples([ex], [prompt], tok, max_length=1000)
    batch = SFTCollator(tok.eos_token_id, max_length=1000)([item])
    ids = batch["input_ids"][0]
    p = int(batch["prompt_lengths"][0])
    prompt_text = tok.decode(ids[:p])
    # Regression (d1 counted the header as response): the header is the prompt's tail and the
    # response starts with the demonstration itself.
    assert prompt_text.endswith(ASSISTANT_HEADER)
    assert tok.decode(ids[p : p + len("<reasoning>")]) == "<reasoning>"
    resp = batch["response_mask"][0]
    assert not resp[:p].any() and resp[p:].all()
    # The prompt ids are exactly the inference-time encoding of the rendered prompt.
    assert ids[:p].tolist() == tok(prompt, add_special_tokens=False)["input_ids"]


def test_response_ends_with_eot_eos_then_eos_padding(tokenizer):
    ex = Example(id="a", question="q", answer="", response="<reasoning>\nr\n</reasoning>")
    prompt = render_chat_prompt(tokenizer, "q", system_prompt=False)
    (item,), _ = tokenize_examples([ex], [prompt], tokenizer, max_length=200)
    batch = SFTCollator(tokenizer.eos_token_id, max_length=200)([item])
    ids = batch["input_ids"][0]
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    eos = tokenizer.eos_token_id
    assert end_token_ids(tokenizer) == [eot, eos]
    n = len(item.input_ids)
    assert ids[n - 2].item() == eot and ids[n - 1].item() == eos
    assert torch.all(ids[n:] == eos)  # padding is EOS ...
    assert batch["response_mask"][0, n:].all()  # ... and part of the response
    assert batch["attention_mask"].sum().item() == 200


def test_collator_shapes_and_pad_to_longest(tokenizer):
    exs = [
        Example(id=str(i), question="q" * (i + 1), answer="", response="r" * (3 * i + 1))
        for i in range(3)
    ]
    prompts = [render_chat_prompt(tokenizer, ex.question, system_prompt=False) for ex in exs]
    items, rep = tokenize_examples(exs, prompts, tokenizer, max_length=64)
    assert rep.kept == 3 and [it.index for it in items] == [0, 1, 2]
    fixed = SFTCollator(tokenizer.eos_token_id, 64)(items)
    assert fixed["input_ids"].shape == (3, 64) and fixed["response_mask"].shape == (3, 64)
    assert fixed["prompt_lengths"].tolist() == [it.prompt_length for it in items]
    assert fixed["index"].tolist() == [0, 1, 2]
    longest = SFTCollator(tokenizer.eos_token_id, 64, pad_to="longest")(items)
    assert longest["input_ids"].shape == (3, max(len(it.input_ids) for it in items))
    for b, it in enumerate(items):
        assert longest["input_ids"][b, : len(it.input_ids)].tolist() == it.input_ids


def test_too_long_examples_dropped_never_truncated(tokenizer, caplog):
    short = Example(id="short", question="q", answer="", response="<answer>\n1\n</answer>")
    long = Example(id="long", question="q", answer="", response="x" * 80 + "<answer>9</answer>")
    prompts = [render_chat_prompt(tokenizer, "q", system_prompt=False)] * 2
    with caplog.at_level(logging.WARNING):
        items, rep = tokenize_examples([short, long], prompts, tokenizer, max_length=60)
    assert [it.id for it in items] == ["short"] and rep.dropped_ids == ["long"]
    assert "Dropped 1 of 2" in caplog.text
    assert rep.kept_positions == [0]
    # The kept example holds its whole answer.
    assert "</answer>" in tokenizer.decode(items[0].input_ids)


def test_assistant_prefix_removed_from_response(tokenizer):
    ex = Example(id="a", question="q", answer="", response="<reasoning>\nr\n</reasoning>")
    prompt = render_chat_prompt(tokenizer, "q", system_prompt=False) + "<reasoning>"
    (item,), _ = tokenize_examples(
        [ex], [prompt], tokenizer, max_length=100, assistant_prefix=["<reasoning>"]
    )
    resp_text = tokenizer.decode(item.input_ids[item.prompt_length :], skip_special_tokens=True)
    assert resp_text == "\nr\n</reasoning>"
    with pytest.raises(ValueError, match="does not start with"):
        tokenize_examples([ex], [prompt], tokenizer, max_length=100, assistant_prefix=["<answer>"])


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_build_from_local_s1k_file(tokenizer, tmp_path):
    rows = [dict(S1K_ROW, question=f"Q{i}?", attempt=str(i)) for i in range(20)]
    path = write_jsonl(tmp_path / "s1k.jsonl", rows)
    cfg = load_config(SFTConfig, None, [f"data.path={path}", "data.max_length=600"]).data
    data = build_sft_data(cfg, tokenizer, seed=0)
    # 1 % of 20 rounds to 0: one example is still held out.
    assert len(data.validation) == 1 and len(data.train) == 19
    assert data.validation_examples[0].id.startswith(str(path))
    text = tokenizer.decode(data.train[0].input_ids)
    assert "Respond in the following format" in text  # d1's system prompt in the user turn


def test_build_prompt_response_and_missing_field(tokenizer, tmp_path):
    good = write_jsonl(
        tmp_path / "pr.jsonl", [{"prompt": f"p{i}", "response": f"r{i}"} for i in range(10)]
    )
    cfg = load_config(
        SFTConfig,
        None,
        [
            "data.format=prompt_response",
            f"data.path={good}",
            "data.max_length=64",
            "data.validation_size=2",
            "data.system_prompt=false",
        ],
    ).data
    data = build_sft_data(cfg, tokenizer, seed=1)
    assert len(data.train) == 8 and len(data.validation) == 2
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "p"}])
    cfg.path = str(bad)
    with pytest.raises(ValueError, match="'response'"):
        build_sft_data(cfg, tokenizer, seed=1)
