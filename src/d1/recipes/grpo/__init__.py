"""diffu-GRPO (docs/method.md §4): rollouts, advantages, the clipped loss and the RL trainer.

Modules:
- `advantages`: group-relative advantages `r - mean(group)` (optionally std-scaled).
- `loss`: the clipped ratio + k3 KL loss, completion masks, token aggregation weights.
- `schedule`: the per-inner-iteration prompt-mask schedule.
- `rollout`: sampling G completions per prompt and scoring them with the tasks' rewards.
- `generation`: the context every no-grad pass runs in (whole parameters under FSDP / ZeRO-3).
- `launch`: checks of the process count, backend and 4-bit / 8-bit settings before loading.
- `config` / `trainer`: `GRPOConfig` and `train_grpo(config)`.

The log-prob estimator itself lives in `d1.core.likelihood`.
"""
