"""Data order and noise for training loops, reproducible and independent of the process count.

- `EpochSampler`: the order of epoch e is a permutation drawn from a `torch.Generator` seeded by
  `(seed, e)`: resuming at any (epoch, batch) needs no stored sampler state, and the global
  RNG is never touched.
- `prepare_train_loader`: a DataLoader over that order, sharded across processes by accelerate
  (process i of W takes micro-batches i, i + W, ...), so optimizer step s consumes the same
  global batch of examples whatever the split between processes and accumulation.
- `keyed_generator(seed, *keys)`: a fresh generator for one (example, epoch, purpose). Keying
  per-example noise (e.g. SFT masks) by the example instead of a running stream makes a run
  with 2 processes x batch 1 draw exactly the noise of 1 process x batch 2.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, Sampler

__all__ = [
    "EpochSampler",
    "ListDataset",
    "StepSchedule",
    "derive_seed",
    "iterate_micro_batches",
    "keyed_generator",
    "loader_generator",
    "prepare_train_loader",
]


def derive_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed derived from `seed` and any keys (stable across runs and platforms)."""
    text = "\x1f".join([str(int(seed)), *(str(k) for k in keys)])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def keyed_generator(
    seed: int, *keys: object, device: str | torch.device = "cpu"
) -> torch.Generator:
    """A new `torch.Generator` seeded by `derive_seed(seed, *keys)`."""
    return torch.Generator(device=device).manual_seed(derive_seed(seed, *keys))


class ListDataset(torch.utils.data.Dataset):
    """A map-style dataset over an in-memory list."""

    def __init__(self, items: Sequence[Any]):
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        return self.items[i]


class EpochSampler(Sampler[int]):
    """Indices 0..n-1 in a per-epoch order seeded by (seed, epoch); call `set_epoch` first."""

    def __init__(self, n: int, seed: int, *, shuffle: bool = True):
        self.n = int(n)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        gen = keyed_generator(self.seed, "data-order", epoch)
        return torch.randperm(self.n, generator=gen).tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.order(self.epoch))

    def __len__(self) -> int:
        return self.n


@dataclass(frozen=True)
class StepSchedule:
    """How many optimizer steps an epoch holds for a dataset and a global batch.

    Each step consumes `global_batch` examples (`per_device x accumulation x processes`);
    the epoch's remaining `n mod global_batch` examples are skipped (they differ per epoch).
    """

    num_examples: int
    per_device_batch_size: int
    gradient_accumulation_steps: int
    num_processes: int

    @property
    def global_batch(self) -> int:
        return self.per_device_batch_size * self.gradient_accumulation_steps * self.num_processes

    @property
    def steps_per_epoch(self) -> int:
        return self.num_examples // self.global_batch

    @property
    def micro_batches_per_epoch(self) -> int:
        """Micro-batches each process consumes per epoch."""
        return self.steps_per_epoch * self.gradient_accumulation_steps

    def total_steps(self, num_epochs: int, max_steps: int | None) -> int:
        return max_steps if max_steps is not None else self.steps_per_epoch * num_epochs

    def check(self) -> None:
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"The training set has {self.num_examples} examples, fewer than one global batch "
                f"({self.per_device_batch_size} per device x {self.gradient_accumulation_steps} "
                f"accumulation x {self.num_processes} processes = {self.global_batch}); lower "
                "train.per_device_batch_size / train.gradient_accumulation_steps or add data."
            )


def prepare_train_loader(
    dataset: torch.utils.data.Dataset,
    collate_fn: Callable[[list[Any]], Any],
    *,
    batch_size: int,
    seed: int,
    accelerator: Any,
    shuffle: bool = True,
) -> DataLoader:
    """A training DataLoader in `EpochSampler` order, prepared (sharded, device-placed) by
    accelerate. Incomplete batches are dropped."""
    sampler = EpochSampler(len(dataset), seed, shuffle=shuffle)
    batch_sampler = BatchSampler(sampler, batch_size=batch_size, drop_last=True)
    loader = DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        collate_fn=collate_fn,
        generator=loader_generator(seed),
    )
    return accelerator.prepare_data_loader(loader)


def loader_generator(seed: int) -> torch.Generator:
    """A DataLoader's own generator. Without one, every `iter(loader)` draws its worker base
    seed from torch's *global* RNG, so a resumed run (which starts iterating mid-epoch) would
    shift the global stream that e.g. dropout uses; with one, iteration never touches it."""
    return keyed_generator(seed, "dataloader")


def iterate_micro_batches(
    loader: DataLoader,
    accelerator: Any,
    *,
    start_epoch: int,
    start_micro_batch: int,
    micro_batches_per_epoch: int,
) -> Iterator[tuple[int, int, Any]]:
    """Endless `(epoch, micro_batch_index, batch)` from (`start_epoch`, `start_micro_batch`) on.

    Each epoch stops after `micro_batches_per_epoch` micro-batches (so every optimizer step is
    a full global batch); a resumed run skips the consumed micro-batches of its epoch.
    """
    epoch, skip = start_epoch, start_micro_batch
    while True:
        loader.set_epoch(epoch)
        it = accelerator.skip_first_batches(loader, skip) if skip else loader
        k = skip
        for batch in it:
            if k >= micro_batches_per_epoch:
                break
            yield epoch, k, batch
            k += 1
        if k < micro_batches_per_epoch:
            raise RuntimeError(
                f"Epoch {epoch} gave {k} micro-batches, expected {micro_batches_per_epoch}."
            )
        epoch, skip = epoch + 1, 0
