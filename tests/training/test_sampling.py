"""The training order (apa.training.sampling) on a synthetic corpus of the full training set's size, beside the orders
it replaced (apa.bench.sampler): every optimizer step holds the examples random sampling gives it (so its mix of
tasks and lengths is random sampling's) while micro-batches stay short of padding. No model: seconds."""

import pytest
from accelerate.data_loader import BatchSamplerShard
from torch.utils.data import BatchSampler

from apa.bench.sampler import batch_mix, epoch_order
from apa.bench.synthetic import synthetic_corpus
from apa.training.sampling import StepSortedSampler

BATCH, ACCUMULATION, SEED, EPOCHS = 8, 8, 42, 20  # paper_table3: 8 x 8 = 64 examples a step


@pytest.fixture(scope="module")
def corpus():
    rows = synthetic_corpus()  # its distribution: tests/bench/test_synthetic.py
    return [r["total"] for r in rows], [r["task"] for r in rows], rows


@pytest.fixture(scope="module")
def mixes(corpus):
    """batch_mix of EPOCHS epochs (78 full steps each: 1,560 in all) of each order."""
    lengths, tasks, _ = corpus
    out = {}
    for kind in ("step_sorted", "hf_grouped", "random"):
        order = [i for e in range(EPOCHS) for i in epoch_order(kind, lengths, BATCH, ACCUMULATION, SEED, e)]
        out[kind] = batch_mix(order, lengths, tasks, BATCH, ACCUMULATION)
    return out


def test_steps_mix_the_tasks_as_random_sampling_does(mixes, corpus):
    """A step of 64 random examples is single-task with probability 2 x 0.5^64 (never), and its APA share has the
    hypergeometric spread (sd ~0.062). Ours holds exactly a random step's examples, so the same; Hugging Face's
    grouping, which this replaces, left most steps single-task (~69 %). The bound: no single-task step at all."""
    new, old, random = mixes["step_sorted"], mixes["hf_grouped"], mixes["random"]
    assert new["steps"] == old["steps"] == random["steps"] == EPOCHS * (5000 // 64)
    assert new["single_task_steps"] == 0 == random["single_task_steps"]
    assert old["single_task_steps"] > 0.5
    assert new["apa_share_mean"] == pytest.approx(0.5, abs=0.01)
    assert new["apa_share_sd"] == pytest.approx(random["apa_share_sd"], rel=0.15)  # old: ~0.48
    assert old["apa_share_p5"] == 0 and old["apa_share_p95"] == 1
    # not just statistically: each step is the set of examples the same seed's random permutation puts there
    lengths, _, _ = corpus
    ours, plain = epoch_order("step_sorted", lengths, BATCH, ACCUMULATION, SEED, 3), epoch_order(
        "random", lengths, BATCH, ACCUMULATION, SEED, 3)
    steps = {frozenset(ours[k : k + 64]) for k in range(0, 4992, 64)}
    assert steps == {frozenset(plain[k : k + 64]) for k in range(0, 4992, 64)}


def test_micro_batches_pad_little(mixes):
    new, random = mixes["step_sorted"]["padding_share"], mixes["random"]["padding_share"]
    assert random > 0.2 and new < 0.1 and new < random / 3


def test_every_index_once_per_epoch_in_an_order_fixed_by_seed_and_epoch(corpus):
    lengths, _, _ = corpus
    sampler = StepSortedSampler(lengths, unit=BATCH, step=BATCH * ACCUMULATION, seed=SEED)
    first = list(sampler)
    assert len(sampler) == len(first) == 5000 and sorted(first) == list(range(5000))
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(second) == list(range(5000)) and second != first
    assert list(sampler) == second  # iterating again (a resumed run) gives the same order
    again = StepSortedSampler(lengths, unit=BATCH, step=BATCH * ACCUMULATION, seed=SEED)
    again.set_epoch(1)
    assert list(again) == second
    assert StepSortedSampler(lengths, unit=BATCH, step=BATCH * ACCUMULATION, seed=SEED + 1).order(1) != second
    assert first == epoch_order("step_sorted", lengths, BATCH, ACCUMULATION, SEED, 0)


def test_steps_are_sorted_longest_first_and_the_short_step_last():
    lengths = [(7 * i) % 23 for i in range(45)]  # 45 = 2 steps of 16 (4 units of 4) and a short one of 13
    order = StepSortedSampler(lengths, unit=4, step=16, seed=0).order(3)
    assert sorted(order) == list(range(45))
    steps = [[lengths[i] for i in order[k : k + 16]] for k in range(0, 45, 16)]
    assert all(step == sorted(step, reverse=True) for step in steps)
    assert steps[0][0] == max(steps[0][0], steps[1][0]) and len(steps[-1]) == 13  # longest full step first
    with pytest.raises(ValueError, match="multiple of unit"):
        StepSortedSampler(lengths, unit=4, step=10, seed=0)


def test_under_ddp_the_ranks_of_one_micro_step_share_a_unit(corpus):
    """accelerate hands micro-batches to the ranks in turn: with unit = batch x world size, the ranks' batches of one
    micro-step are the two halves of one sorted unit (neighbouring lengths), and together the ranks see every index."""
    lengths, _, _ = corpus
    world, batch = 2, 4
    sampler = StepSortedSampler(lengths, unit=batch * world, step=batch * world * 2, seed=SEED)
    order = sampler.order(0)
    ranks = [list(BatchSamplerShard(BatchSampler(sampler, batch, drop_last=False), world, rank)) for rank in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 5000 // (batch * world)
    for step, (a, b) in enumerate(zip(*ranks, strict=True)):
        assert a + b == order[step * batch * world : (step + 1) * batch * world]
        assert min(lengths[i] for i in a) >= max(lengths[i] for i in b)
    assert sorted(i for rank in ranks for batch_ in rank for i in batch_) == list(range(5000))
