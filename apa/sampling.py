"""Training samplers: the order in which the trainer's dataloader visits the examples of an epoch.

Light on purpose (torch and transformers' sampler utilities, no TRL): apa.bench and the tests use it without a model.
"""

from __future__ import annotations

import torch
from transformers.trainer_pt_utils import LengthGroupedSampler


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """Length-grouped batches (little padding) in an order fixed by (data_seed, epoch). The stock sampler draws
    from the global RNG, so a run resumed mid-epoch would skip other batches than the interrupted run had done;
    the Trainer calls set_epoch before each epoch."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths)
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.generator = torch.Generator().manual_seed(self.seed + epoch)
