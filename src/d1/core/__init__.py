"""The pure core: the maths of docs/method.md, with no tasks, config files or training loops.

- `d1.core.masking`: the forward (masking) process (§1);
- `d1.core.sampling`: the samplers and `SamplerConfig` (§2);
- `d1.core.likelihood`: the log-probability estimators (§4);
- `d1.core.models`: native LLaDA, the built-in tiny models, loading, LoRA, the forward call
  (docs/llada.md).

Nothing here imports a task, the training toolkit or a recipe (`tests/test_layers.py`).
"""
