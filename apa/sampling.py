"""Training samplers: the order in which the trainer's dataloader visits the examples of an epoch.

Light on purpose (torch only; no TRL, no model): apa.bench and the tests use it on token lengths alone.

Why not Hugging Face's LengthGroupedSampler: it sorts mega-batches of whole optimizer steps by length and keeps them
in that order, so consecutive steps hold examples of similar length. Here each utterance gives an APA and an MDD
example, and the APA prompt is ~185 tokens longer than the MDD one, so sorting by length separates the tasks: most
optimizer steps then hold one task only, in runs of ~9 APA steps, then ~9 MDD steps (`python -m apa.bench --mode
sampler` counts it). ShuffledLengthGroupedSampler keeps the short padding of sorted micro-batches but deals them out in
random order, so every optimizer step draws its micro-batches from random places of the epoch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

MEGABATCH_UNITS = 50  # units sorted together: more pads less, fewer lets micro-batch mates change more between epochs
ORDERS = ("shuffled_groups", "hf_grouped", "random")  # what apa.bench compares (see epoch_order)


class ShuffledLengthGroupedSampler(Sampler[int]):
    """Micro-batches of similar length (little padding), in random order (steps mix tasks and lengths).

    The order of an epoch depends on (seed + epoch) alone, so a run resumed mid-epoch skips exactly the batches the
    interrupted run had done; the Trainer calls set_epoch before each epoch. For that epoch:

    1. a random permutation of all examples is cut into mega-batches of `megabatch_units` units;
    2. each mega-batch is sorted by length (longest first; ties stay in random order) and cut into units;
    3. the full units are shuffled, the unit holding the longest example is swapped to the front (an out-of-memory
       error shows in the first step, not hours in), and the one short unit, if any, goes last.

    A unit is what one micro-step consumes on all ranks together: `per_device_train_batch_size x world_size`
    indices. The Trainer's DataLoader cuts the index stream into micro-batches of per_device_train_batch_size and
    accelerate's BatchSamplerShard hands consecutive micro-batches to ranks 0..world_size-1 in turn, so the ranks of
    one micro-step get neighbouring lengths (similar step times; no rank waits on another's long batch) and each
    optimizer step is `gradient_accumulation_steps` units from random places. The short unit stays last so that it
    cannot shift the cuts of the units after it.
    """

    def __init__(self, lengths: Sequence[int], unit: int, seed: int, megabatch_units: int = MEGABATCH_UNITS):
        if unit < 1 or megabatch_units < 1:
            raise ValueError(f"unit ({unit}) and megabatch_units ({megabatch_units}) must be positive")
        self.lengths = [int(n) for n in lengths]
        self.unit = unit
        self.seed = seed
        self.megabatch_units = megabatch_units
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order(self.epoch))

    def order(self, epoch: int) -> list[int]:
        """Every index once, in the order of `epoch`."""
        lengths, unit = self.lengths, self.unit
        generator = torch.Generator().manual_seed(self.seed + epoch)
        permutation = torch.randperm(len(lengths), generator=generator).tolist()
        size = unit * self.megabatch_units
        units = []
        for start in range(0, len(permutation), size):
            megabatch = sorted(permutation[start : start + size], key=lambda i: lengths[i], reverse=True)
            units += [megabatch[k : k + unit] for k in range(0, len(megabatch), unit)]
        # only the last mega-batch can end in a short unit: its shortest examples
        short = [units.pop()] if units and len(units[-1]) < unit else []
        units = [units[k] for k in torch.randperm(len(units), generator=generator).tolist()]
        if units:
            longest = max(range(len(units)), key=lambda k: lengths[units[k][0]])  # each unit is sorted
            units[0], units[longest] = units[longest], units[0]
        return [i for group in units + short for i in group]


def epoch_order(kind: str, lengths: Sequence[int], batch_size: int, accumulation: int, seed: int, epoch: int = 0,
                world_size: int = 1) -> list[int]:
    """The index order of one epoch under `kind` (what apa.bench compares):

    - "shuffled_groups": ShuffledLengthGroupedSampler, as the trainer uses it for `group_by_length`;
    - "hf_grouped": Hugging Face's stock length grouping, as this trainer did before: mega-batches of whole
      optimizer steps (batch x accumulation, as it was given), each sorted by length, in that order;
    - "random": a plain random permutation (`train_sampling_strategy=random`).
    """
    if kind == "shuffled_groups":
        return ShuffledLengthGroupedSampler(lengths, batch_size * world_size, seed).order(epoch)
    generator = torch.Generator().manual_seed(seed + epoch)
    if kind == "hf_grouped":
        from transformers.trainer_pt_utils import get_length_grouped_indices

        return get_length_grouped_indices(list(lengths), batch_size * accumulation, generator=generator)
    if kind == "random":
        return torch.randperm(len(lengths), generator=generator).tolist()
    raise ValueError(f"unknown order {kind!r}: one of {', '.join(ORDERS)}")
