"""End-to-end recipes composed of the core, the tasks and the training toolkit.

- `d1.recipes.sft`: masked SFT (docs/method.md §3);
- `d1.recipes.grpo`: diffu-GRPO (§4), `GRPORecipe` with its named phases;
- `d1.recipes.evaluation`: evaluation across seeds, checkpoint selection, scoring saved
  generations (§7);
- `d1.recipes.demo`: the whole recipe on a CPU; `merge`: LoRA merging; `report`: run reports.
"""
