"""The `d1` command line: a thin layer over the Python API.

Each subcommand parses its options, then calls one function of the library. Heavy imports
(torch, transformers) happen inside the commands so that `d1 --help` stays fast.
"""

from __future__ import annotations

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


if __name__ == "__main__":
    app()
