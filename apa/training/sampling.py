"""The training sampler: the order in which the trainer's dataloader visits the examples of an epoch.

Light on purpose (torch only; no TRL, no model): the benchmarks (apa.bench.sampler, which compares it with the orders
it replaced) and the tests use it on token lengths alone.

Why not Hugging Face's LengthGroupedSampler: it sorts mega-batches of whole optimizer steps by length and keeps them
in that order, so consecutive steps hold examples of similar length. Here each utterance gives an APA and an MDD
example, and the APA prompt is ~185 tokens longer than the MDD one, so sorting by length separates the tasks: most
optimizer steps then hold one task only, in runs of APA steps, then MDD steps (`apa bench --mode sampler`
counts it). StepSortedSampler draws each optimizer step's examples exactly as random sampling does and sorts only
inside the step, so the step's mix of tasks and lengths is random sampling's and its micro-batches pad little.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class StepSortedSampler(Sampler[int]):
    """Optimizer steps drawn at random, micro-batches sorted by length inside each step.

    The order of an epoch depends on (seed + epoch) alone, so a run resumed mid-epoch skips exactly the batches the
    interrupted run had done; the Trainer calls set_epoch before each epoch. For that epoch:

    1. a random permutation of all examples is cut into steps of `step` examples (per_device_train_batch_size x
       world_size x gradient_accumulation_steps): each step holds the very examples random sampling would give it;
    2. inside each step the examples are sorted by length (longest first; ties stay in random order) and cut into
       units of `unit` (per_device_train_batch_size x world_size), the micro-steps, which therefore pad little;
    3. the step holding the longest example is swapped to the front (an out-of-memory error shows in the first step,
       not hours in; steps are exchangeable, so this changes no statistic); the short last step stays last.

    The Trainer's DataLoader cuts the index stream into micro-batches of per_device_train_batch_size and accelerate's
    BatchSamplerShard hands consecutive micro-batches to ranks 0..world_size-1 in turn, so the ranks of one micro-step
    get neighbouring lengths (similar step times) and each optimizer step consumes exactly one drawn step.
    """

    def __init__(self, lengths: Sequence[int], unit: int, step: int, seed: int):
        if unit < 1 or step < unit or step % unit:
            raise ValueError(f"step ({step}) must be a positive multiple of unit ({unit})")
        self.lengths = [int(n) for n in lengths]
        self.unit = unit
        self.step = step
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order(self.epoch))

    def order(self, epoch: int) -> list[int]:
        """Every index once, in the order of `epoch`."""
        lengths = self.lengths
        generator = torch.Generator().manual_seed(self.seed + epoch)
        permutation = torch.randperm(len(lengths), generator=generator).tolist()
        steps = [sorted(permutation[k : k + self.step], key=lambda i: lengths[i], reverse=True)
                 for k in range(0, len(permutation), self.step)]
        short = [steps.pop()] if steps and len(steps[-1]) < self.step else []
        if steps:
            longest = max(range(len(steps)), key=lambda k: lengths[steps[k][0]])  # each step is sorted
            steps[0], steps[longest] = steps[longest], steps[0]
        return [i for group in steps + short for i in group]
