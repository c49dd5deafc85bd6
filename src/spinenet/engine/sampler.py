"""A resumable, seedable stream of (index, augmentation seed) batches.

The stream is a pure function of (seed, position): epoch ``e`` is a permutation drawn from ``seed`` and ``e``, and
every sample gets its own augmentation seed. Resuming at step ``s`` restarts the stream at position
``s * batch_size``, so N steps straight and N/2 + resume + N/2 see exactly the same data and augmentations.
With ``world_size > 1`` each rank takes every ``world_size``-th sample of each global batch (DDP sharding).
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Dataset, Sampler


class ResumableBatchSampler(Sampler[list[tuple[int, int]]]):
    def __init__(self, num_samples: int, batch_size: int, seed: int, start_step: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        if num_samples <= 0:
            raise ValueError("the training set is empty")
        self.n, self.batch_size, self.seed = num_samples, batch_size, seed
        self.start_step, self.rank, self.world_size = start_step, rank, world_size

    def _epoch(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        global_batch = self.batch_size * self.world_size
        position = self.start_step * global_batch
        epoch, offset = divmod(position, self.n)
        perm = self._epoch(epoch)
        while True:
            batch = []
            for _ in range(global_batch):
                if offset == self.n:
                    epoch, offset = epoch + 1, 0
                    perm = self._epoch(epoch)
                # the augmentation seed identifies (epoch, slot) so it never repeats across epochs
                batch.append((int(perm[offset]), (self.seed * 7919 + epoch) * 1_000_003 + offset))
                offset += 1
            yield batch[self.rank::self.world_size]

    def __len__(self) -> int:  # infinite stream; DataLoader only needs this for len(), which we never call
        return 2**62


class Augmented(Dataset):
    """Applies ``transform(image, target, generator)`` with the per-sample seed from the sampler."""

    def __init__(self, base: Dataset, transform) -> None:
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        image, target = self.base[index]
        if self.transform is None:
            return image, target
        return self.transform(image, target, torch.Generator().manual_seed(seed))
