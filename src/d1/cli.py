"""The `d1` command line: a thin layer over the Python API.

Each subcommand parses its options, then calls one function of the library. Heavy imports
(torch, transformers) happen inside the commands so that `d1 --help` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

app = typer.Typer(
    name="d1",
    help="Post-train masked diffusion LLMs to reason: masked SFT, diffu-GRPO, honest evaluation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def main() -> None:
    """d1 command line."""


def _csv_list(value: str | None, cast: type = str) -> list:
    """Parse "a,b,c" into a list (empty items dropped)."""
    if value is None:
        return []
    return [cast(v.strip()) for v in value.split(",") if v.strip()]


@app.command("eval")
def eval_command(
    model: str = typer.Option(..., "--model", help="Built-in name, checkpoint folder or hub id."),
    tasks: str = typer.Option("gsm8k,math500,countdown,sudoku", help="Comma-separated tasks."),
    gen_lengths: str = typer.Option("128,256,512", help="Comma-separated generation lengths."),
    seeds: str = typer.Option("0", help="Sampling seeds (only matter with temperature > 0)."),
    split: str = typer.Option("test", help="test | validation."),
    limit: int | None = typer.Option(None, help="Evaluate the first N examples per task."),
    batch_size: int = typer.Option(8, help="Prompts per batch (results do not depend on it)."),
    block_length: int = typer.Option(32, help="Sampler block length (d1: 32)."),
    steps: str | None = typer.Option(
        None, help="Steps per gen length (comma list, or one value); default gen_length / 2."
    ),
    temperature: float = typer.Option(0.0, help="Sampling temperature (d1 evaluation: 0)."),
    cfg_scale: float = typer.Option(0.0, help="Classifier-free guidance scale."),
    remasking: str = typer.Option("low_confidence", help="low_confidence | random."),
    sampler: str = typer.Option("reference", help="Registered sampler name."),
    data: list[str] = typer.Option(
        [], "--data", help="TASK=PATH: a local data file for a task (repeatable)."
    ),
    task_option: list[str] = typer.Option(
        [],
        "--task-option",
        help="TASK.KEY=VALUE task constructor option, e.g. sudoku.prompt_style=compact.",
    ),
    data_seed: int = typer.Option(42, help="Seed of the split's subsampling (fixed across runs)."),
    dtype: str = typer.Option("auto", help="float32 | bfloat16 | float16 | auto."),
    device: str | None = typer.Option(None, help="cpu | cuda | ... (default: cuda if available)."),
    trust_remote_code: bool = typer.Option(False, help="Allow hub models' custom code."),
    out: str | None = typer.Option(None, help="Output folder (generations, summary)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Evaluate a model on task splits: every generation to JSONL, summary as JSON + markdown."""
    from d1.evaluation.progress import progress_bar
    from d1.evaluation.runner import EvalConfig, evaluate, summary_markdown

    data_paths = {}
    for item in data:
        if "=" not in item:
            raise typer.BadParameter(f"--data expects TASK=PATH, got {item!r}.")
        k, v = item.split("=", 1)
        data_paths[k.strip()] = v.strip()
    from d1.evaluation.runner import parse_task_options

    try:
        task_options = parse_task_options(task_option)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    cfg = EvalConfig(
        model=model,
        tasks=tuple(_csv_list(tasks)),
        gen_lengths=tuple(_csv_list(gen_lengths, int)),
        seeds=tuple(_csv_list(seeds, int)),
        split=split,
        limit=limit,
        data_seed=data_seed,
        data_paths=data_paths,
        task_options=task_options,
        batch_size=batch_size,
        block_length=block_length,
        steps=tuple(_csv_list(steps, int)) if steps else None,
        temperature=temperature,
        cfg_scale=cfg_scale,
        remasking=remasking,
        sampler=sampler,
        dtype=dtype,
        device=device,
        trust_remote_code=trust_remote_code,
        out=out,
    )
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
    from d1.report import write_report

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
    from d1.puzzles.export import generate_file

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
        raise typer.BadParameter(str(e)) from None
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
    from d1.scoring import run_score_command

    try:
        run_score_command(files, task=task, out=out, d1_compat=d1_compat)
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise typer.BadParameter(str(e)) from None


@app.command("select")
def select_command(
    run_dir: str = typer.Argument(..., help="A run folder holding checkpoint sub-folders."),
    tasks: str = typer.Option(..., help="Comma-separated tasks to choose on."),
    metric: str = typer.Option("accuracy", help="Task metric to maximise (mean over tasks)."),
    gen_lengths: str = typer.Option("256", help="Comma-separated generation lengths."),
    limit: int | None = typer.Option(None, help="Validation examples per task (default: all)."),
    batch_size: int = typer.Option(8, help="Prompts per batch."),
    block_length: int = typer.Option(32, help="Sampler block length."),
    steps: str | None = typer.Option(None, help="Steps per gen length; default gen_length / 2."),
    data_seed: int = typer.Option(42, help="Seed of the split's subsampling."),
    dtype: str = typer.Option("auto", help="float32 | bfloat16 | float16 | auto."),
    device: str | None = typer.Option(None, help="cpu | cuda | ..."),
    best_on_test: bool = typer.Option(
        False,
        "--best-on-test",
        help="The paper's original, OPTIMISTIC protocol: choose the best checkpoint on TEST.",
    ),
    out: str | None = typer.Option(
        None, help="Where to write selection.json/.md (default: RUN_DIR)."
    ),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Evaluate every checkpoint on the validation split and name the one to report."""
    from d1.evaluation.progress import progress_bar
    from d1.evaluation.runner import EvalConfig
    from d1.evaluation.select import SelectConfig, select_checkpoint, selection_markdown

    ev = EvalConfig(
        tasks=tuple(_csv_list(tasks)),
        gen_lengths=tuple(_csv_list(gen_lengths, int)),
        limit=limit,
        data_seed=data_seed,
        batch_size=batch_size,
        block_length=block_length,
        steps=tuple(_csv_list(steps, int)) if steps else None,
        dtype=dtype,
        device=device,
    )
    cfg = SelectConfig(run_dir=run_dir, eval=ev, metric=metric, best_on_test=best_on_test, out=out)
    with progress_bar("select", enabled=progress) as bar:
        sel = select_checkpoint(cfg, progress=bar)
    typer.echo(selection_markdown(sel))


@app.command("generate")
def generate_command(
    model: str = typer.Option(..., "--model", help="Built-in name (tiny), folder or hub id."),
    prompt: str = typer.Option(..., "--prompt", help="The user message to complete."),
    gen_length: int = typer.Option(128, help="Tokens to generate."),
    block_length: int | None = typer.Option(
        None, help="Block length (default: 32, or gen_length if smaller)."
    ),
    steps: int | None = typer.Option(None, help="Denoising steps (default: gen_length / 2)."),
    temperature: float = typer.Option(0.0, help="Sampling temperature (0 = greedy)."),
    cfg_scale: float = typer.Option(0.0, help="Classifier-free guidance scale (0 = off)."),
    remasking: str = typer.Option("low_confidence", help="low_confidence | random."),
    sampler: str = typer.Option("reference", help="Registered sampler name."),
    seed: int = typer.Option(0, help="Sampling seed (temperature > 0 or random remasking)."),
    chat: bool = typer.Option(True, "--chat/--no-chat", help="Apply the chat template."),
    mask_token_id: int | None = typer.Option(None, help="Override the model's mask token id."),
    trust_remote_code: bool = typer.Option(False, help="Allow hub models' custom code."),
    device: str | None = typer.Option(None, help="cpu | cuda | ... (default: cuda if available)."),
    dtype: str | None = typer.Option(None, help="float32 | bfloat16 | ... (default: the model's)."),
    show_steps: bool = typer.Option(False, help="Print the completion after every step."),
) -> None:
    """Complete one prompt with LLaDA's sampler (random tiny models print gibberish)."""
    from rich.console import Console
    from rich.markup import escape

    from d1.sampling import SamplerConfig, run_generate

    console = Console()
    try:
        config = SamplerConfig(
            gen_length=gen_length,
            block_length=block_length if block_length is not None else min(32, gen_length),
            steps=steps if steps is not None else max(1, gen_length // 2),
            temperature=temperature,
            cfg_scale=cfg_scale,
            remasking=remasking,
            sampler=sampler,
        )

        def on_step(step: int, block: int, text: str) -> None:
            console.print(f"[dim]step {step + 1:>4} block {block}[/dim] {escape(text)}")

        completion = run_generate(
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
        raise typer.BadParameter(str(e)) from None
    typer.echo(completion)


def _run_training_command(
    config_cls: type,
    train: Callable[[Any], Any],
    config: str | None,
    overrides: list[str] | None,
    print_config: bool,
) -> Any:
    """Shared body of `d1 sft` and `d1 grpo`: load and validate the config (errors exit 2
    before any model loads), optionally print it, then train."""
    import logging

    from d1.config import ConfigError, dump_config, load_config

    try:
        cfg = load_config(config_cls, config, overrides or [])
        if print_config:
            typer.echo(dump_config(cfg), nl=False)
            return None
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        return train(cfg)
    except (ConfigError, FileExistsError) as e:
        typer.echo(f"Error: {e}", err=True)
        raise typer.Exit(2) from None


_OVERRIDES_HELP = "key=value overrides, e.g. optim.learning_rate=1e-5 train.max_steps=100."
_PRINT_CONFIG_HELP = "Validate, print the resolved config and exit."


@app.command("sft")
def sft_command(
    overrides: list[str] | None = typer.Argument(None, help=_OVERRIDES_HELP),
    config: str | None = typer.Option(
        None, "--config", "-c", help="YAML run config, e.g. configs/sft/llada8b_s1k.yaml."
    ),
    print_config: bool = typer.Option(False, "--print-config", help=_PRINT_CONFIG_HELP),
) -> None:
    """Masked SFT (SPEC 3). Multi-GPU: accelerate launch [--config_file
    configs/accelerate/NAME.yaml] -m d1.cli sft --config ..."""
    from d1.sft import SFTConfig, train_sft

    run_dir = _run_training_command(SFTConfig, train_sft, config, overrides, print_config)
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
    from d1.merge import merge_adapter

    try:
        out = merge_adapter(adapter_dir, out_dir, base=base, dtype=dtype, overwrite=overwrite)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        raise typer.BadParameter(str(e)) from None
    typer.echo(f"Merged model written to {out}")


@app.command("grpo")
def grpo_command(
    overrides: list[str] | None = typer.Argument(None, help=_OVERRIDES_HELP),
    config: str | None = typer.Option(
        None, "--config", "-c", help="YAML run config, e.g. configs/grpo/gsm8k.yaml."
    ),
    print_config: bool = typer.Option(False, "--print-config", help=_PRINT_CONFIG_HELP),
) -> None:
    """diffu-GRPO (SPEC 4). Multi-GPU: accelerate launch [--config_file
    configs/accelerate/NAME.yaml] -m d1.cli grpo --config ..."""
    from d1.grpo.config import GRPOConfig
    from d1.grpo.trainer import train_grpo

    result = _run_training_command(GRPOConfig, train_grpo, config, overrides, print_config)
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
    from d1.demo import load_demo_config, run_demo

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
        raise typer.BadParameter(str(e)) from None
    run_demo(cfg)


if __name__ == "__main__":
    app()
