"""d1: post-train masked diffusion language models to reason (masked SFT + diffu-GRPO)."""

__version__ = "0.1.0"
