"""Masked-SFT data: demonstrations -> chat-templated prompt ids + response ids -> padded batches.

Sources (docs/method.md §3):
- s1K-style rows (`simplescaling/s1K`: `question`, `thinking_trajectories` (a list; the first
  trace is used), `attempt`), rendered as `<reasoning>\\n{trace}\\n</reasoning>\\n<answer>\\n
  {attempt}\\n</answer>`, the layout of d1's system prompt;
- generic rows `{prompt, response}` (JSONL, CSV, parquet or a hub id);
- a registered task's examples that carry a `response` demonstration (generated Sudoku and
  Countdown).

Layout of one sequence (never truncated: a too-long example is dropped, counted and reported):

    [ prompt: chat template ... <|start_header_id|>assistant<|end_header_id|>\\n\\n (+ prefix) ]
    [ response: demonstration, <|eot_id|>, <|endoftext|>, EOS padding ... ]

The prompt ids are exactly what the sampler sees at inference (the rendered prompt tokenised on
its own), so the assistant header belongs to the prompt: d1's script counted it as response,
i.e. trained the model to generate the header it is always given. The EOS padding is part of
the response and of the loss, so the model learns to stop (docs/method.md §3).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from d1.errors import DataError
from d1.tasks.base import SYSTEM_PROMPT, Example

__all__ = [
    "S1K_FIELDS",
    "SFTCollator",
    "SFTData",
    "SFTItem",
    "TokenizeReport",
    "build_sft_data",
    "end_token_ids",
    "examples_from_prompt_response_rows",
    "examples_from_s1k_rows",
    "format_reasoning_answer",
    "load_sft_examples",
    "render_chat_prompt",
    "tokenize_examples",
]

logger = logging.getLogger(__name__)

# The hub dataset's real field names (simplescaling/s1K, config "default", split "train").
S1K_FIELDS: tuple[str, ...] = ("question", "thinking_trajectories", "attempt")


def format_reasoning_answer(reasoning: str, answer: str) -> str:
    """`<reasoning>\\n..\\n</reasoning>\\n<answer>\\n..\\n</answer>` (docs/method.md §5's response layout)."""
    return f"<reasoning>\n{reasoning.strip()}\n</reasoning>\n<answer>\n{answer.strip()}\n</answer>"


def examples_from_s1k_rows(rows: Sequence[dict[str, Any]], source: str = "s1k") -> list[Example]:
    """s1K rows -> Examples with a `<reasoning>/<answer>` response (first thinking trajectory).

    `answer` holds the row's `solution` when present (the gold answer), else the attempt.
    """
    out = []
    for i, row in enumerate(rows):
        traj = row["thinking_trajectories"]
        if isinstance(traj, (list, tuple)):
            if not traj:
                raise DataError(f"{source}: row {i} has an empty 'thinking_trajectories' list.")
            traj = traj[0]
        attempt = str(row["attempt"])
        out.append(
            Example(
                id=f"{source}/{i}",
                question=str(row["question"]),
                answer=str(row.get("solution") or attempt),
                meta={k: row[k] for k in ("cot_type", "source_type") if k in row},
                response=format_reasoning_answer(str(traj), attempt),
            )
        )
    return out


def examples_from_prompt_response_rows(
    rows: Sequence[dict[str, Any]],
    source: str = "jsonl",
    *,
    prompt_field: str = "prompt",
    response_field: str = "response",
) -> list[Example]:
    """Generic `{prompt, response}` rows -> Examples (the prompt is the user message)."""
    return [
        Example(
            id=str(row.get("id", f"{source}/{i}")),
            question=str(row[prompt_field]),
            answer=str(row.get("answer", "")),
            response=str(row[response_field]),
        )
        for i, row in enumerate(rows)
    ]


def render_chat_prompt(tokenizer: Any, question: str, *, system_prompt: bool = True) -> str:
    """A user turn through the chat template, ending with the assistant header.

    With `system_prompt`, d1's format instruction precedes the question in the user message
    (as d1's SFT script does: `SYSTEM_PROMPT + "\\n\\n" + question`).
    """
    content = f"{SYSTEM_PROMPT}\n\n{question}" if system_prompt else question
    if not getattr(tokenizer, "chat_template", True):  # a base model: the text as is
        return content
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
    )


def end_token_ids(tokenizer: Any) -> list[int]:
    """Ids closing every response: the end-of-turn token (when the vocabulary has one; the chat
    template ends each message with it) followed by one EOS. EOS padding follows."""
    if tokenizer.eos_token_id is None:
        raise ValueError("The tokenizer has no EOS token; masked SFT pads responses with EOS.")
    ids = []
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    if isinstance(eot, int) and eot != tokenizer.unk_token_id and eot != tokenizer.eos_token_id:
        ids.append(eot)
    ids.append(int(tokenizer.eos_token_id))
    return ids


@dataclass
class SFTItem:
    """One tokenised example.

    Attributes:
        index: position in the dataset (keys the example's masking noise).
        id: the example's id.
        input_ids: prompt ids followed by response ids (demonstration + end tokens), unpadded.
        prompt_length: number of prompt ids (assistant header and any assistant prefix included).
    """

    index: int
    id: str
    input_ids: list[int]
    prompt_length: int


@dataclass
class TokenizeReport:
    """What `tokenize_examples` kept (and their input positions) and dropped."""

    kept: int
    dropped_ids: list[str]
    longest: int
    kept_positions: list[int]


def tokenize_examples(
    examples: Sequence[Example],
    prompts: Sequence[str],
    tokenizer: Any,
    *,
    max_length: int,
    assistant_prefix: Sequence[str] | None = None,
) -> tuple[list[SFTItem], TokenizeReport]:
    """Tokenise (prompt, demonstration) pairs; drop (never truncate) the ones that do not fit.

    Args:
        examples: examples with a `response`.
        prompts: each example's full prompt text (chat template applied; `render_prompt` for
            tasks, `render_chat_prompt` otherwise).
        tokenizer: the model's tokenizer (no special tokens are added on encode: the template
            already holds them).
        max_length: the sequence length; prompt + demonstration + end tokens must fit.
        assistant_prefix: per example, text the prompt already ends with that the demonstration
            starts with (a task's `assistant_prefix`, e.g. "<reasoning>"); it is removed from
            the response so it is not generated twice.

    Returns:
        The kept items (dataset indices 0..n-1 in input order) and a report; a warning names
        how many examples were dropped as too long.
    """
    if len(prompts) != len(examples):
        raise ValueError("prompts and examples must have the same length.")
    end_ids = end_token_ids(tokenizer)
    responses = []
    for k, ex in enumerate(examples):
        if ex.response is None:
            raise ValueError(
                f"example {ex.id!r} has no `response` demonstration; masked SFT needs one."
            )
        response = ex.response
        prefix = assistant_prefix[k] if assistant_prefix is not None else ""
        if prefix:
            if not response.startswith(prefix):
                raise ValueError(
                    f"example {ex.id!r}: the prompt ends with the assistant prefix {prefix!r} "
                    "but the demonstration does not start with it."
                )
            response = response[len(prefix) :]
        responses.append(response)
    # One batched call per side (fast tokenizers encode lists in parallel).
    all_prompt_ids = (
        tokenizer(list(prompts), add_special_tokens=False)["input_ids"] if prompts else []
    )
    all_response_ids = (
        tokenizer(responses, add_special_tokens=False)["input_ids"] if responses else []
    )
    items: list[SFTItem] = []
    kept: list[int] = []
    dropped: list[str] = []
    longest = 0
    for k, ex in enumerate(examples):
        prompt_ids = all_prompt_ids[k]
        ids = list(prompt_ids) + list(all_response_ids[k]) + end_ids
        longest = max(longest, len(ids))
        if len(ids) > max_length:
            dropped.append(ex.id)
            continue
        items.append(
            SFTItem(index=len(items), id=ex.id, input_ids=ids, prompt_length=len(prompt_ids))
        )
        kept.append(k)
    if dropped:
        logger.warning(
            "Dropped %d of %d examples longer than max_length=%d tokens (longest: %d); "
            "raise data.max_length to keep them. First dropped: %s",
            len(dropped),
            len(examples),
            max_length,
            longest,
            ", ".join(dropped[:5]),
        )
    report = TokenizeReport(
        kept=len(items), dropped_ids=dropped, longest=longest, kept_positions=kept
    )
    return items, report


class SFTCollator:
    """Pads `SFTItem`s with EOS into a batch.

    Output keys: `input_ids` [B, L] long; `prompt_lengths` [B] long; `response_mask` [B, L]
    bool (True from the prompt's end to the end of the row: demonstration, end tokens and EOS
    padding); `attention_mask` [B, L] long (all ones: the EOS padding is response the model must
    predict, so every position is a real, attended token); `index` [B] long (dataset index).

    Args:
        pad_token_id: the EOS id.
        max_length: the padded length with `pad_to="max_length"` (d1 and the paper: 4,096).
        pad_to: "max_length" (the paper: each response's length, and so its loss normaliser,
            does not depend on the batch) or "longest" (pad to the longest row of the batch:
            faster, but the normaliser then depends on batch composition).
    """

    def __init__(self, pad_token_id: int, max_length: int, pad_to: str = "max_length"):
        if pad_to not in ("max_length", "longest"):
            raise ValueError(f"pad_to must be 'max_length' or 'longest'; got {pad_to!r}.")
        self.pad_token_id = int(pad_token_id)
        self.max_length = int(max_length)
        self.pad_to = pad_to

    def __call__(self, items: Sequence[SFTItem]) -> dict[str, torch.Tensor]:
        length = (
            self.max_length if self.pad_to == "max_length" else max(len(x.input_ids) for x in items)
        )
        batch = len(items)
        input_ids = torch.full((batch, length), self.pad_token_id, dtype=torch.long)
        prompt_lengths = torch.empty(batch, dtype=torch.long)
        for b, item in enumerate(items):
            if len(item.input_ids) > length:
                raise ValueError(
                    f"example {item.id!r} has {len(item.input_ids)} tokens > {length}."
                )
            input_ids[b, : len(item.input_ids)] = torch.tensor(item.input_ids, dtype=torch.long)
            prompt_lengths[b] = item.prompt_length
        positions = torch.arange(length)[None, :]
        return {
            "input_ids": input_ids,
            "prompt_lengths": prompt_lengths,
            "response_mask": positions >= prompt_lengths[:, None],
            "attention_mask": torch.ones(batch, length, dtype=torch.long),
            "index": torch.tensor([x.index for x in items], dtype=torch.long),
        }


@dataclass
class SFTData:
    """Everything the trainer needs from the data config.

    Attributes:
        train: tokenised training items.
        validation: tokenised held-out items (eval loss).
        validation_examples: the held-out `Example`s, aligned with `validation` (for
            generation-accuracy evaluation).
        validation_prompts: their rendered prompts.
        task: the task object for format "task" (scoring), else None.
        report_train, report_validation: what tokenisation kept and dropped.
    """

    train: list[SFTItem]
    validation: list[SFTItem]
    validation_examples: list[Example]
    validation_prompts: list[str]
    task: Any | None
    report_train: TokenizeReport
    report_validation: TokenizeReport


def load_sft_examples(cfg: Any, *, seed: int) -> tuple[list[Example], Any | None]:
    """The demonstrations of an `SFTDataConfig` as Examples (+ the task, for format "task")."""
    from d1.tasks.data import limit_examples, load_rows

    source = cfg.source()
    if cfg.format == "task":
        from d1.tasks import get_task

        task = get_task(cfg.task, **cfg.task_options)
        examples = task.load(cfg.split, path=source, limit=cfg.limit, seed=seed)
        missing = [ex.id for ex in examples if ex.response is None]
        if missing:
            raise DataError(
                f"Task {cfg.task!r} gave {len(missing)} examples without a `response` "
                f"demonstration (e.g. {missing[0]!r}); masked SFT needs demonstrations."
            )
        return examples, task
    if cfg.format == "s1k":
        rows = load_rows(source, split=cfg.split, config=cfg.hub_config, required=S1K_FIELDS)
        examples = examples_from_s1k_rows(rows, source=str(source))
    else:
        rows = load_rows(
            source,
            split=cfg.split,
            config=cfg.hub_config,
            required=(cfg.prompt_field, cfg.response_field),
        )
        examples = examples_from_prompt_response_rows(
            rows, str(source), prompt_field=cfg.prompt_field, response_field=cfg.response_field
        )
    return limit_examples(examples, cfg.limit, seed=seed), None


def build_sft_data(cfg: Any, tokenizer: Any, *, seed: int) -> SFTData:
    """Load, split (held-out share by `split_train_validation`), render and tokenise.

    Raises:
        ValueError: if no training or no validation example fits `max_length`.
    """
    from d1.tasks.base import render_prompt
    from d1.tasks.data import split_train_validation

    examples, task = load_sft_examples(cfg, seed=seed)
    if cfg.validation_size is not None:
        train_ex, val_ex = split_train_validation(
            examples, validation_size=cfg.validation_size, seed=seed
        )
    else:
        train_ex, val_ex = split_train_validation(
            examples, validation_fraction=cfg.validation_fraction, seed=seed
        )
    if not val_ex:
        # 1 % of a small set rounds to 0: hold out one example rather than none.
        train_ex, val_ex = split_train_validation(examples, validation_size=1, seed=seed)

    def render(exs: list[Example]) -> tuple[list[str], list[str]]:
        if task is not None:
            return [render_prompt(tokenizer, task, ex) for ex in exs], [
                task.assistant_prefix(ex) for ex in exs
            ]
        prompts = [
            render_chat_prompt(tokenizer, ex.question, system_prompt=cfg.system_prompt)
            for ex in exs
        ]
        return prompts, [""] * len(exs)

    train_prompts, train_prefix = render(train_ex)
    val_prompts, val_prefix = render(val_ex)
    train, rep_t = tokenize_examples(
        train_ex, train_prompts, tokenizer, max_length=cfg.max_length, assistant_prefix=train_prefix
    )
    val, rep_v = tokenize_examples(
        val_ex, val_prompts, tokenizer, max_length=cfg.max_length, assistant_prefix=val_prefix
    )
    if not train or not val:
        raise DataError(
            f"After dropping examples longer than data.max_length={cfg.max_length} "
            f"(longest: {max(rep_t.longest, rep_v.longest)} tokens), {len(train)} training and "
            f"{len(val)} validation examples remain; raise data.max_length."
        )
    keep = rep_v.kept_positions
    return SFTData(
        train=train,
        validation=val,
        validation_examples=[val_ex[i] for i in keep],
        validation_prompts=[val_prompts[i] for i in keep],
        task=task,
        report_train=rep_t,
        report_validation=rep_v,
    )
