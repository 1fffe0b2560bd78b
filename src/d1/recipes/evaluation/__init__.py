"""Honest evaluation: batched generation on a split, scoring, and summaries across seeds.

- `d1.recipes.evaluation.stats`: mean, standard deviation and confidence intervals (pure functions).
- `d1.recipes.evaluation.runner`: `evaluate(EvalConfig)`, behind `d1 eval`.
- `d1.recipes.evaluation.select`: checkpoint choice on the validation split, behind `d1 select`.
"""
