"""The `d1` command line: a thin layer over the Python API.

Each subcommand parses its options, then calls one function of the library. Heavy imports
(torch, transformers) happen inside the commands so that `d1 --help` stays fast.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import Any

import click
import typer
from typer.core import TyperGroup

# Set by `d1 --debug`: known failures then raise with their traceback.
_DEBUG = False
# Known failures (bad input, unreachable resource): exit status and no traceback.
_FILE_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError)


def _known_failure(error: BaseException) -> int | None:
    """The exit status of a known failure (2: bad input; 1: training diverged), else None."""
    from d1.config import ConfigError
    from d1.errors import D1Error

    if isinstance(error, (ConfigError, D1Error, *_FILE_ERRORS, PermissionError)):
        return 2
    name = type(error).__name__  # the toolkit's own errors, without importing torch here
    if name == "CheckpointError":
        return 2
    if name == "NonFiniteError":
        return 1
    return None


class _Commands(TyperGroup):
    """Every command's one error path: a known failure prints `Error: ...` (one or two lines)
    on stderr and exits 2 (1 for a diverged run); `d1 --debug ...` shows the traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as e:
            status = _known_failure(e)
            if status is None or _DEBUG:
                raise
            typer.echo(f"Error: {e}", err=True)
            if status == 2:
                typer.echo("(d1 --debug COMMAND ... shows the traceback)", err=True)
            raise typer.Exit(status) from None
        finally:
            _release_process_group()


def _release_process_group() -> None:
    """The process ends with its command: a distributed launch's process group is destroyed
    here, so no communication thread is torn down by the interpreter's exit (a race that
    can abort a rank with "terminate called without an active exception"). torch is not
    imported for commands that never loaded it."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


app = typer.Typer(
    name="d1",
    cls=_Commands,
    help="Post-train masked diffusion LLMs to reason: masked SFT, diffu-GRPO, honest evaluation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        import d1

        typer.echo(f"d1 {d1.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of known failures."),
) -> None:
    """d1 command line."""
    import os

    global _DEBUG
    _DEBUG = debug

    # Our commands draw their own progress; the hub libraries' per-file bars would interleave.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _csv_list(value: str | None, cast: type = str) -> list:
    """Parse "a,b,c" into a list (empty items dropped)."""
    if value is None:
        return []
    return [cast(v.strip()) for v in value.split(",") if v.strip()]


_OVERRIDES_HELP = "key=value overrides, e.g. optim.learning_rate=1e-5 train.max_steps=100."
_PRINT_CONFIG_HELP = "Validate, print the resolved config and exit."

# ----------------------------------------------------------------------------- sampler flags
# The same sampler flags on `eval`, `select` and `generate`; each one sets a key of the
# `sampler` section (`d1.core.sampling.SamplerConfig`), validated with the rest of the config.
SAMPLER_CHOICES = "reference | fast"  # tests check this against d1.core.sampling.sampler_names()
_SAMPLER_OPT = typer.Option(
    None,
    "--sampler",
    help=f"Sampler: {SAMPLER_CHOICES} (fast: Fast-dLLM's KV cache and threshold decoding).",
)
_BLOCK_OPT = typer.Option(None, "--block-length", help="Sampler block length (d1: 32).")
_STEPS_OPT = typer.Option(
    None, "--steps", help="Sampler steps for the whole completion (default: gen_length / 2)."
)
_TEMPERATURE_OPT = typer.Option(None, "--temperature", help="Sampling temperature (0: greedy).")
_CFG_OPT = typer.Option(None, "--cfg-scale", help="Classifier-free guidance scale (0: off).")
_REMASKING_OPT = typer.Option(None, "--remasking", help="low_confidence | random.")
_THREADS_OPT = typer.Option(
    None, "--threads", help="torch CPU threads (default: as training, min(cores, 8))."
)
_SAMPLER_OPTION_OPT = typer.Option(
    [],
    "--sampler-option",
    help="KEY=VALUE sampler setting, repeatable or comma-separated, e.g. "
    "--sampler-option cache=dual,threshold=0.95 (keys: those of the `sampler` section: cache, "
    "threshold, early_exit, ...).",
)


def _sampler_values(
    prefix: str,
    *,
    sampler: str | None,
    block_length: int | None,
    steps: int | None,
    temperature: float | None,
    cfg_scale: float | None,
    remasking: str | None,
    options: list[str],
) -> dict[str, Any]:
    """{dotted key: value} for the sampler flags that were given (under `prefix`)."""
    import yaml

    values: dict[str, Any] = {}
    for key, value in (
        ("name", sampler),
        ("block_length", block_length),
        ("steps", steps),
        ("temperature", temperature),
        ("cfg_scale", cfg_scale),
        ("remasking", remasking),
    ):
        if value is not None:
            values[f"{prefix}{key}"] = value
    for item in options:
        for part in item.split(","):
            if not part.strip():
                continue
            key, sep, raw = part.partition("=")
            if not sep or not key.strip():
                raise typer.BadParameter(
                    f"--sampler-option expects KEY=VALUE (e.g. cache=dual); got {part!r}."
                )
            try:
                value = yaml.safe_load(raw) if raw.strip() else None
            except yaml.YAMLError:
                value = raw
            values[f"{prefix}{key.strip()}"] = value
    return values


def _kv_items(items: list[str], flag: str, example: str) -> list[tuple[str, str]]:
    """Split repeated `A=B` flag values into pairs (error naming the flag otherwise)."""
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{flag} expects {example}; got {item!r}.")
        pairs.append((key.strip(), value.strip()))
    return pairs


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _fail(error: Exception) -> None:
    """A known failure: one message on stderr, exit 2 (no traceback; `--debug` re-raises)."""
    if _DEBUG:
        raise error
    typer.echo(f"Error: {error}", err=True)
    raise typer.Exit(2) from None


def _eval_values(
    *,
    model: str | None,
    tasks: str | None,
    gen_lengths: str | None,
    seeds: str | None,
    split: str | None,
    limit: int | None,
    batch_size: int | None,
    data: list[str],
    task_option: list[str],
    data_seed: int | None,
    dtype: str | None,
    device: str | None,
    trust_remote_code: bool | None,
    out: str | None,
    sampler_values: dict[str, Any],
) -> dict[str, Any]:
    """{dotted key of EvalConfig: value} for the eval flags that were given."""
    import yaml

    def scalar(text: str) -> Any:
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return text

    values: dict[str, Any] = {}
    for key, value in (
        ("model", model),
        ("split", split),
        ("limit", limit),
        ("batch_size", batch_size),
        ("data_seed", data_seed),
        ("dtype", dtype),
        ("device", device),
        ("trust_remote_code", trust_remote_code),
        ("out", out),
    ):
        if value is not None:
            values[key] = value
    for key, text in (("tasks", tasks), ("gen_lengths", gen_lengths), ("seeds", seeds)):
        if text is not None:
            values[key] = [scalar(v.strip()) for v in text.split(",") if v.strip()]
    for task, path in _kv_items(data, "--data", "TASK=PATH"):
        values[f"data_paths.{task}"] = path
    for key, raw in _kv_items(task_option, "--task-option", "TASK.KEY=VALUE"):
        task, dot, name = key.partition(".")
        if not dot or not task or not name:
            raise typer.BadParameter(
                f"--task-option expects TASK.KEY=VALUE (e.g. sudoku.prompt_style=compact); "
                f"got {key}={raw!r}."
            )
        values[f"task_options.{task}.{name}"] = scalar(raw) if raw else None
    values.update(sampler_values)
    return values


def _load_eval_config(
    config: str | None,
    overrides: list[str],
    values: dict[str, Any],
    *,
    defaults_from: str | None = None,
    default_out: bool = True,
    fallback: dict[str, Any] | None = None,
) -> Any:
    """The `EvalConfig` of `d1 eval` / `d1 select`: d1's protocol, then the settings the model
    was trained with (`d1.recipes.evaluation.defaults`), the machine's lengths, the config file, the
    flags and KEY=VALUE overrides, later ones winning. Says which defaults it applied."""
    import dataclasses
    import time
    from pathlib import Path

    from d1.config import load_config
    from d1.recipes.evaluation.defaults import machine_defaults, run_defaults
    from d1.recipes.evaluation.runner import EvalConfig

    given = load_config(EvalConfig, config, overrides, values=values)
    from d1.recipes.evaluation.defaults import Defaults

    layers = [
        run_defaults(defaults_from or given.model),
        machine_defaults(given.model, given.device),
        Defaults(fallback or {}, source="this command"),
    ]
    merged: dict[str, Any] = {}
    for layer in reversed(layers):  # run defaults over machine defaults
        merged.update(layer.values)
    if not merged:
        cfg = given
    else:
        cfg = load_config(EvalConfig, config, overrides, values=values, defaults=merged)
    for layer in layers:
        applied = {
            k: v
            for k, v in layer.values.items()
            if _config_value(cfg, k) != _config_value(given, k) and merged.get(k) == v
        }
        if applied:
            shown = ", ".join(f"{k}={v}" for k, v in applied.items())
            typer.echo(f"Defaults from {layer.source}: {shown}.", err=True)
    if default_out and cfg.out is None:
        name = Path(cfg.model.rstrip("/")).name or "model"
        stamp = time.strftime("%Y%m%d-%H%M%S")
        cfg = dataclasses.replace(cfg, out=str(Path("eval_out") / f"{name}-{stamp}"))
    return cfg


def _config_value(cfg: Any, dotted: str) -> Any:
    """The value of a dotted key of a config object (None when absent)."""
    node = cfg
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else getattr(node, part, None)
    return tuple(node) if isinstance(node, list) else node


_EVAL_CONFIG_HELP = "YAML eval config (configs/eval/NAME.yaml); flags and KEY=VALUE override it."
_EVAL_OVERRIDES_HELP = "KEY=VALUE overrides of the eval config, e.g. sampler.threshold=0.95."


@app.command("eval")
def eval_command(
    overrides: list[str] | None = typer.Argument(None, help=_EVAL_OVERRIDES_HELP),
    config: str | None = typer.Option(None, "--config", "-c", help=_EVAL_CONFIG_HELP),
    model: str | None = typer.Option(
        None, "--model", help="Built-in name, checkpoint folder or hub id."
    ),
    tasks: str | None = typer.Option(
        None, help="Comma-separated tasks (default: gsm8k,math500,countdown,sudoku)."
    ),
    gen_lengths: str | None = typer.Option(
        None, help="Comma-separated generation lengths (default: 128,256,512)."
    ),
    seeds: str | None = typer.Option(
        None, help="Sampling seeds (only matter with temperature > 0; default: 0)."
    ),
    split: str | None = typer.Option(None, help="test (default) | validation."),
    limit: int | None = typer.Option(None, help="Evaluate the first N examples per task."),
    batch_size: int | None = typer.Option(
        None, help="Prompts per batch (results do not depend on it; default 8)."
    ),
    sampler: str | None = _SAMPLER_OPT,
    block_length: int | None = _BLOCK_OPT,
    steps: int | None = _STEPS_OPT,
    temperature: float | None = _TEMPERATURE_OPT,
    cfg_scale: float | None = _CFG_OPT,
    remasking: str | None = _REMASKING_OPT,
    sampler_option: list[str] = _SAMPLER_OPTION_OPT,
    data: list[str] = typer.Option(
        [], "--data", help="TASK=PATH: a local data file for a task (repeatable)."
    ),
    task_option: list[str] = typer.Option(
        [],
        "--task-option",
        help="TASK.KEY=VALUE task constructor option, e.g. sudoku.prompt_style=compact.",
    ),
    data_seed: int | None = typer.Option(
        None, help="Seed of the split's subsampling (fixed across runs; default 42)."
    ),
    dtype: str | None = typer.Option(None, help="float32 | bfloat16 | float16 | auto."),
    device: str | None = typer.Option(None, help="cpu | cuda | ... (default: cuda if available)."),
    trust_remote_code: bool | None = typer.Option(
        None, "--trust-remote-code/--no-trust-remote-code", help="Allow hub models' custom code."
    ),
    out: str | None = typer.Option(
        None, help="Output folder (generations, summary); default eval_out/MODEL-TIME/."
    ),
    threads: int | None = _THREADS_OPT,
    progress: bool = typer.Option(True, help="Show a progress bar."),
    print_config: bool = typer.Option(False, "--print-config", help=_PRINT_CONFIG_HELP),
) -> None:
    """Evaluate a model on task splits: every generation to JSONL, summary as JSON + markdown.

    A checkpoint of `d1 sft` / `d1 grpo` is evaluated the way it was trained (its tasks, task
    options, completion length and sampler block) unless a config, flag or KEY=VALUE says
    otherwise; a tiny model or a CPU gets one short length instead of 128 / 256 / 512."""
    from d1.config import ConfigError, dump_config
    from d1.recipes.evaluation.progress import progress_bar
    from d1.recipes.evaluation.runner import evaluate, summary_markdown

    values = _eval_values(
        model=model,
        tasks=tasks,
        gen_lengths=gen_lengths,
        seeds=seeds,
        split=split,
        limit=limit,
        batch_size=batch_size,
        data=data,
        task_option=task_option,
        data_seed=data_seed,
        dtype=dtype,
        device=device,
        trust_remote_code=trust_remote_code,
        out=out,
        sampler_values=_sampler_values(
            "sampler.",
            sampler=sampler,
            block_length=block_length,
            steps=steps,
            temperature=temperature,
            cfg_scale=cfg_scale,
            remasking=remasking,
            options=sampler_option,
        ),
    )
    if threads is not None:
        values["num_threads"] = threads
    try:
        cfg = _load_eval_config(config, overrides or [], values, default_out=not print_config)
    except ConfigError as e:
        _fail(e)
    if print_config:
        typer.echo(dump_config(cfg), nl=False)
        return
    with progress_bar("eval", enabled=progress) as bar:
        result = evaluate(cfg, progress=bar)
    typer.echo(summary_markdown(result.summary, cfg))
    if result.out_dir is not None:
        typer.echo(f"Wrote {result.out_dir}/summary.md, summary.json and generations/.")


@app.command("report")
def report_command(
    run_dir: str = typer.Argument(..., help="A run folder (with *metrics*.jsonl) or the file."),
    out: str | None = typer.Option(None, help="Output folder (default: RUN_DIR/report)."),
) -> None:
    """PNG curves (reward per component, accuracy, KL, length, clip, loss, lr) + markdown."""
    from d1.recipes.report import write_report

    res = write_report(run_dir, out)
    typer.echo(f"Wrote {res.markdown} and {len(res.figures)} figures from {res.n_rows} rows.")


@app.command("data")
def data_command(
    kind: str = typer.Argument(..., help="countdown or sudoku."),
    out: str = typer.Option(..., help="Output file, .jsonl or .csv (d1's formats)."),
    n: int = typer.Option(1000, help="Number of problems."),
    seed: int = typer.Option(0, help="Generator seed."),
    split: str = typer.Option(
        "train", help="train, validation or test: generated splits never share a problem."
    ),
    blanks: str = typer.Option("6-10", help="Sudoku: empty cells, e.g. 8 or 6-10 (max 12)."),
    numbers: int = typer.Option(3, help="Countdown: numbers per problem (2-4)."),
    max_number: int = typer.Option(100, help="Countdown: largest given number."),
    max_target: int = typer.Option(100, help="Countdown: largest target."),
    responses: bool = typer.Option(
        False, "--responses/--no-responses", help="Add a solver-written SFT demonstration."
    ),
) -> None:
    """Generate Countdown or Sudoku problems offline, with unique solutions / reachable targets."""
    from d1.tasks.export import generate_file

    try:
        count = generate_file(
            kind,
            out,
            n=n,
            seed=seed,
            split=split,
            blanks=blanks,
            num_count=numbers,
            max_number=max_number,
            max_target=max_target,
            responses=responses,
        )
    except ValueError as e:
        _fail(e)
    typer.echo(f"Wrote {count} {kind} problems ({split} split, seed {seed}) to {out}.")


@app.command("score")
def score_command(
    files: list[str] = typer.Argument(
        ..., help="Generation files or globs: JSONL (question, completion, gold) or d1's JSON."
    ),
    task: str | None = typer.Option(
        None, "--task", "-t", help="Task name (default: inferred from d1's file names)."
    ),
    out: str | None = typer.Option(
        None, "--out", "-o", help="Write per-example results (question, parsed, gold, correct)."
    ),
    d1_compat: bool = typer.Option(
        False, "--d1-compat", help="Use d1's original parser, bugs included (published numbers)."
    ),
) -> None:
    """Score saved generations: accuracy per task and generation length."""
    from d1.recipes.evaluation.scoring import run_score_command

    try:
        run_score_command(files, task=task, out=out, d1_compat=d1_compat)
    except (FileNotFoundError, ValueError, KeyError) as e:
        _fail(e)


@app.command("select")
def select_command(
    run_dir: str = typer.Argument(..., help="A run folder holding checkpoint sub-folders."),
    overrides: list[str] | None = typer.Argument(None, help=_EVAL_OVERRIDES_HELP),
    config: str | None = typer.Option(None, "--config", "-c", help=_EVAL_CONFIG_HELP),
    tasks: str | None = typer.Option(None, help="Comma-separated tasks to choose on."),
    metric: str = typer.Option("accuracy", help="Task metric to maximise (mean over tasks)."),
    gen_lengths: str | None = typer.Option(
        None, help="Comma-separated generation lengths (default: the run's, else as d1 eval)."
    ),
    seeds: str | None = typer.Option(None, help="Sampling seeds (temperature > 0 only)."),
    limit: int | None = typer.Option(None, help="Validation examples per task (default: all)."),
    batch_size: int | None = typer.Option(None, help="Prompts per batch."),
    sampler: str | None = _SAMPLER_OPT,
    block_length: int | None = _BLOCK_OPT,
    steps: int | None = _STEPS_OPT,
    temperature: float | None = _TEMPERATURE_OPT,
    cfg_scale: float | None = _CFG_OPT,
    remasking: str | None = _REMASKING_OPT,
    sampler_option: list[str] = _SAMPLER_OPTION_OPT,
    data: list[str] = typer.Option(
        [], "--data", help="TASK=PATH: a local data file for a task (repeatable)."
    ),
    task_option: list[str] = typer.Option(
        [], "--task-option", help="TASK.KEY=VALUE task constructor option."
    ),
    data_seed: int | None = typer.Option(None, help="Seed of the split's subsampling."),
    dtype: str | None = typer.Option(None, help="float32 | bfloat16 | float16 | auto."),
    device: str | None = typer.Option(None, help="cpu | cuda | ..."),
    best_on_test: bool = typer.Option(
        False,
        "--best-on-test",
        help="The paper's original, OPTIMISTIC protocol: choose the best checkpoint on TEST.",
    ),
    out: str | None = typer.Option(
        None, help="Where to write selection.json/.md (default: RUN_DIR)."
    ),
    threads: int | None = _THREADS_OPT,
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Evaluate every checkpoint on the validation split and name the one to report.

    Takes the same evaluation options as `d1 eval` (config file, flags, KEY=VALUE), and like it
    defaults to the settings the run was trained with."""
    from d1.config import ConfigError
    from d1.recipes.evaluation.progress import progress_bar
    from d1.recipes.evaluation.select import SelectConfig, select_checkpoint, selection_markdown

    values = _eval_values(
        model=run_dir,  # replaced by each checkpoint
        tasks=tasks,
        gen_lengths=gen_lengths,
        seeds=seeds,
        split=None,
        limit=limit,
        batch_size=batch_size,
        data=data,
        task_option=task_option,
        data_seed=data_seed,
        dtype=dtype,
        device=device,
        trust_remote_code=None,
        out=None,
        sampler_values=_sampler_values(
            "sampler.",
            sampler=sampler,
            block_length=block_length,
            steps=steps,
            temperature=temperature,
            cfg_scale=cfg_scale,
            remasking=remasking,
            options=sampler_option,
        ),
    )
    if threads is not None:
        values["num_threads"] = threads
    try:
        ev = _load_eval_config(
            config,
            overrides or [],
            values,
            defaults_from=run_dir,
            default_out=False,
            fallback={"gen_lengths": [256]},
        )
        cfg = SelectConfig(
            run_dir=run_dir, eval=ev, metric=metric, best_on_test=best_on_test, out=out
        )
    except ConfigError as e:
        _fail(e)
    with progress_bar("select", enabled=progress) as bar:
        sel = select_checkpoint(cfg, progress=bar)
    typer.echo(selection_markdown(sel))


def _show_tokens(tokenizer: Any, ids: list[int], mask_id: int, mask_glyph: str = "░") -> str:
    """One-line view of partly decoded ids: masks as `mask_glyph`, newlines as '⏎'."""
    pieces = [
        mask_glyph if tok == mask_id else tokenizer.decode([tok], skip_special_tokens=False)
        for tok in ids
    ]
    return "".join(pieces).replace("\n", "⏎")


def _generate_one(
    model_name: str,
    prompt: str,
    *,
    config: Any,
    seed: int = 0,
    chat: bool = True,
    mask_token_id: int | None = None,
    trust_remote_code: bool = False,
    device: str | None = None,
    dtype: str | None = None,
    on_step: Callable[[int, int, str], None] | None = None,
) -> str:
    """Load a model and complete one prompt with `config` (a `SamplerConfig`): `d1 generate`.

    `on_step(step_index, block_index, text)` gets a one-line view of the completion after each
    step (masks shown as '░'). A tokenizer without a chat template gets the prompt as is.
    """
    import torch

    from d1.core.models import load_model
    from d1.core.sampling import decode_completions, encode_prompts, model_device, sample
    from d1.recipes.sft.data import render_chat_prompt

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    loaded = load_model(
        model_name,
        dtype=dtype,
        device=device,
        mask_token_id=mask_token_id,
        trust_remote_code=trust_remote_code,
    )
    model, tokenizer, spec = loaded.model, loaded.tokenizer, loaded.spec
    text = render_chat_prompt(tokenizer, prompt, system_prompt=False) if chat else prompt
    input_ids, attention_mask = encode_prompts(tokenizer, [text], model_device(model))
    plen = input_ids.shape[1]
    trace = None
    if on_step is not None:

        def trace(step: int, block: int, x: torch.Tensor) -> None:
            on_step(step, block, _show_tokens(tokenizer, x[0, plen:].tolist(), spec.mask_token_id))

    generator = torch.Generator(device=input_ids.device).manual_seed(seed)
    out = sample(
        model,
        input_ids,
        attention_mask,
        config=config,
        mask_id=spec.mask_token_id,
        generator=generator,
        logit_shift=spec.logit_shift,
        trace=trace,
        eos_id=spec.eos_token_id,
    )
    return decode_completions(tokenizer, out[:, plen:])[0]


@app.command("generate")
def generate_command(
    model: str = typer.Option(..., "--model", help="Built-in name (tiny), folder or hub id."),
    prompt: str = typer.Option(..., "--prompt", help="The user message to complete."),
    gen_length: int | None = typer.Option(
        None, help="Tokens to generate (default: the run's completion length, else 128)."
    ),
    sampler: str | None = _SAMPLER_OPT,
    block_length: int | None = typer.Option(
        None, help="Block length (default: 32, or gen_length if smaller)."
    ),
    steps: int | None = _STEPS_OPT,
    temperature: float | None = _TEMPERATURE_OPT,
    cfg_scale: float | None = _CFG_OPT,
    remasking: str | None = _REMASKING_OPT,
    sampler_option: list[str] = _SAMPLER_OPTION_OPT,
    seed: int = typer.Option(0, help="Sampling seed (temperature > 0 or random remasking)."),
    chat: bool = typer.Option(True, "--chat/--no-chat", help="Apply the chat template."),
    mask_token_id: int | None = typer.Option(None, help="Override the model's mask token id."),
    trust_remote_code: bool = typer.Option(False, help="Allow hub models' custom code."),
    device: str | None = typer.Option(None, help="cpu | cuda | ... (default: cuda if available)."),
    dtype: str | None = typer.Option(None, help="float32 | bfloat16 | ... (default: the model's)."),
    show_steps: bool = typer.Option(False, help="Print the completion after every step."),
    threads: int | None = _THREADS_OPT,
) -> None:
    """Complete one prompt with a diffusion sampler (random tiny models print gibberish).

    A checkpoint of `d1 sft` / `d1 grpo` gets the completion length and sampler block it was
    trained with unless flags say otherwise; its tokenizer decides whether a chat template
    applies."""
    from rich.console import Console
    from rich.markup import escape

    from d1.config import ConfigError, config_from_dict, set_key
    from d1.core.sampling import SamplerConfig
    from d1.recipes.evaluation.defaults import run_defaults
    from d1.recipes.evaluation.runner import set_threads

    values = _sampler_values(
        "",
        sampler=sampler,
        block_length=block_length,
        steps=steps,
        temperature=temperature,
        cfg_scale=cfg_scale,
        remasking=remasking,
        options=sampler_option,
    )
    trained = run_defaults(model).values
    run_sampler = {
        k.removeprefix("sampler."): v for k, v in trained.items() if k.startswith("sampler.")
    }
    if gen_length is None:
        gen_length = trained["gen_lengths"][0] if trained.get("gen_lengths") else 128
    data: dict[str, Any] = {"gen_length": gen_length, "block_length": min(32, gen_length)}
    data.update(run_sampler)
    for key, value in values.items():
        set_key(data, key, value)
    if block_length is None and data["block_length"] > gen_length:
        data["block_length"] = gen_length
    try:
        # Built as the `sampler` section of a one-field config, so errors say `sampler.KEY`.
        wrapper = dataclasses.make_dataclass(
            "GenerateConfig", [("sampler", SamplerConfig, dataclasses.field(default=None))]
        )
        config = config_from_dict(wrapper, {"sampler": data}).sampler
        problems = config.model_problems(model)
        if problems:
            raise ConfigError.keyed([(f"sampler.{k}", m) for k, m in problems])
    except ConfigError as e:
        _fail(e)
    if run_sampler:
        shown = ", ".join(f"sampler.{k}={v}" for k, v in run_sampler.items())
        typer.echo(f"Defaults from the settings the model was trained with: {shown}.", err=True)
    set_threads(threads, device or ("cuda" if _cuda() else "cpu"))
    console = Console()

    def on_step(step: int, block: int, text: str) -> None:
        console.print(f"[dim]step {step + 1:>4} block {block}[/dim] {escape(text)}")

    try:
        completion = _generate_one(
            model,
            prompt,
            config=config,
            seed=seed,
            chat=chat,
            mask_token_id=mask_token_id,
            trust_remote_code=trust_remote_code,
            device=device,
            dtype=dtype,
            on_step=on_step if show_steps else None,
        )
    except ValueError as e:
        _fail(e)
    typer.echo(completion)


def _resume_command(argv: list[str]) -> str:
    """The command line that resumes this one: the same, with train.resume_from=auto."""
    import shlex

    kept = [a for a in argv if not a.startswith("train.resume_from=")]
    return shlex.join(["d1", *kept, "train.resume_from=auto"])


def _interrupted_message(cfg: Any, command: str, argv: list[str]) -> str:
    """What Ctrl-C prints: what is saved, and how to go on from it."""
    if cfg is None:
        return "Interrupted before training started; nothing was saved."
    from d1.training.checkpoint import describe_saved
    from d1.training.runtime import run_dir_for

    root = run_dir_for(cfg.train, command) / "checkpoints"
    return (
        f"Interrupted. Last complete checkpoint: {describe_saved(root)}. Resume with: "
        f"{_resume_command(argv)}"
    )


def _run_training_command(
    config_cls: type,
    train: Callable[[Any], Any],
    config: str | None,
    overrides: list[str] | None,
    print_config: bool,
    command: str,
) -> Any:
    """Shared body of `d1 sft` and `d1 grpo`: load and validate the config (errors exit 2
    before any model loads), optionally print it, then train. Errors go through the one error
    path (`_Commands`: a non-finite loss exits 1); Ctrl-C exits 130 saying what is saved and how
    to resume."""
    import logging
    import os
    import sys

    from d1.config import dump_config, load_config

    cfg = None
    try:
        cfg = load_config(config_cls, config, overrides or [])
        if print_config:
            typer.echo(dump_config(cfg), nl=False)
            return None
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        return train(cfg)
    except KeyboardInterrupt:
        if os.environ.get("RANK", "0") == "0":  # one message, not one per process
            typer.echo("\n" + _interrupted_message(cfg, command, sys.argv[1:]), err=True)
        raise typer.Exit(130) from None


@app.command("sft")
def sft_command(
    overrides: list[str] | None = typer.Argument(None, help=_OVERRIDES_HELP),
    config: str | None = typer.Option(
        None, "--config", "-c", help="YAML run config, e.g. configs/sft/llada8b_s1k.yaml."
    ),
    print_config: bool = typer.Option(False, "--print-config", help=_PRINT_CONFIG_HELP),
) -> None:
    """Masked SFT (docs/method.md §3). Multi-GPU: accelerate launch [--config_file
    configs/accelerate/NAME.yaml] -m d1.cli sft --config ..."""
    from d1.recipes.sft import SFTConfig, train_sft

    run_dir = _run_training_command(SFTConfig, train_sft, config, overrides, print_config, "sft")
    if run_dir is not None:
        typer.echo(f"SFT run finished: {run_dir}")


@app.command("merge")
def merge_command(
    adapter_dir: str = typer.Argument(..., help="A LoRA adapter folder (e.g. a checkpoint)."),
    out_dir: str = typer.Argument(..., help="Where to write the merged full model."),
    base: str | None = typer.Option(None, help="Base model (default: the adapter's own)."),
    dtype: str | None = typer.Option(None, help="float32 | bfloat16 (default: the base's)."),
    overwrite: bool = typer.Option(False, help="Replace an existing OUT_DIR."),
) -> None:
    """Merge a LoRA adapter into its base: a full model loadable with from_pretrained."""
    from d1.recipes.merge import merge_adapter

    try:
        out = merge_adapter(adapter_dir, out_dir, base=base, dtype=dtype, overwrite=overwrite)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        _fail(e)
    typer.echo(f"Merged model written to {out}")


@app.command("grpo")
def grpo_command(
    overrides: list[str] | None = typer.Argument(None, help=_OVERRIDES_HELP),
    config: str | None = typer.Option(
        None, "--config", "-c", help="YAML run config, e.g. configs/grpo/gsm8k.yaml."
    ),
    print_config: bool = typer.Option(False, "--print-config", help=_PRINT_CONFIG_HELP),
) -> None:
    """diffu-GRPO (docs/method.md §4). Multi-GPU: accelerate launch [--config_file
    configs/accelerate/NAME.yaml] -m d1.cli grpo --config ..."""
    from d1.recipes.grpo.config import GRPOConfig
    from d1.recipes.grpo.trainer import train_grpo

    result = _run_training_command(GRPOConfig, train_grpo, config, overrides, print_config, "grpo")
    if result is not None:
        typer.echo(f"diffu-GRPO run finished at step {result.step}: {result.run_dir}")


@app.command("demo")
def demo_command(
    overrides: list[str] = typer.Argument(
        None, help="KEY=VALUE overrides of the demo config (e.g. grpo_steps=64)."
    ),
    seeds: str | None = typer.Option(None, help="Comma-separated seeds (default: 0,1,2)."),
    quick: bool = typer.Option(False, "--quick", help="Sub-minute smoke run (does not learn)."),
    out: str | None = typer.Option(None, help="Output folder (default: demo_out)."),
    config: str | None = typer.Option(None, help="YAML file of demo settings (configs/demo/)."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """The whole recipe on a laptop CPU: tiny LLaDA, masked SFT, diffu-GRPO, honest evaluation."""
    from d1.config import ConfigError
    from d1.recipes.demo import load_demo_config, run_demo

    try:
        cfg = load_demo_config(
            quick=quick,
            path=config,
            overrides=overrides or [],
            seeds=_csv_list(seeds, int) if seeds else None,
            out=out,
            progress=progress,
        )
    except ConfigError as e:
        _fail(e)
    run_demo(cfg)


if __name__ == "__main__":
    app()
