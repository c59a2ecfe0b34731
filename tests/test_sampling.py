"""The training order (apa.sampling) on a synthetic corpus of the full training set's size: every optimizer step
mixes the tasks as random sampling does while micro-batches stay short of padding. No model: seconds."""

from statistics import mean

import pytest
from accelerate.data_loader import BatchSamplerShard
from torch.utils.data import BatchSampler

from apa.data.stats import audio_tokens, batch_mix, synthetic_corpus
from apa.sampling import ShuffledLengthGroupedSampler, epoch_order

BATCH, ACCUMULATION, SEED, EPOCHS = 8, 8, 42, 20  # paper_table3: 8 x 8 = 64 examples a step


@pytest.fixture(scope="module")
def corpus():
    rows = synthetic_corpus()
    return [r["total"] for r in rows], [r["task"] for r in rows], rows


@pytest.fixture(scope="module")
def mixes(corpus):
    """batch_mix of EPOCHS epochs (78 full steps each: 1,560 in all) of each order."""
    lengths, tasks, _ = corpus
    out = {}
    for kind in ("shuffled_groups", "hf_grouped", "random"):
        order = [i for e in range(EPOCHS) for i in epoch_order(kind, lengths, BATCH, ACCUMULATION, SEED, e)]
        out[kind] = batch_mix(order, lengths, tasks, BATCH, ACCUMULATION)
    return out


def test_synthetic_corpus_has_the_documented_distribution(corpus):
    _, _, rows = corpus
    assert len(rows) == 5000 and sum(r["task"] == "apa" for r in rows) == 2500
    seconds = [r["seconds"] for r in rows[::2]]
    assert min(seconds) >= 1.6 and max(seconds) <= 20 and mean(seconds) == pytest.approx(4.3, abs=0.1)
    assert len(set(seconds)) == 2500  # continuous draws, not resampled ties
    assert all(r["audio"] == audio_tokens(r["seconds"]) for r in rows)
    assert all(r["total"] == r["prompt"] + r["audio"] + r["answer"] for r in rows)
    apa, mdd = rows[0::2], rows[1::2]
    assert all(a["seconds"] == m["seconds"] and a["prompt"] - m["prompt"] == 189 for a, m in zip(apa, mdd, strict=True))
    assert synthetic_corpus() == rows  # fixed seed


def test_steps_mix_the_tasks_where_hf_grouping_separated_them(mixes):
    """Random sampling makes a step of 64 single-task with probability 2 x 0.5^64 (never). Ours draws a step's 8
    micro-batches from random places; sorted by length, most micro-batches hold one task (APA prompts are longer).
    Were all of them single-task, a step would be with probability 2 x 0.5^8 = 0.78 %; some mix both, so fewer are
    (0.26 % measured): 1 % bounds it with room for the count's noise over 1,560 steps. Hugging Face's grouping,
    which this replaces, left most steps single-task (69 %)."""
    new, old, random = mixes["shuffled_groups"], mixes["hf_grouped"], mixes["random"]
    assert new["steps"] == old["steps"] == random["steps"] == EPOCHS * (5000 // 64)
    assert new["single_task_steps"] <= 0.01
    assert old["single_task_steps"] > 0.5
    assert random["single_task_steps"] == 0
    assert new["apa_share_mean"] == pytest.approx(0.5, abs=0.01)
    assert new["apa_share_p5"] > 0.15 and new["apa_share_p95"] < 0.85  # old: 0 and 1
    assert old["apa_share_p5"] == 0 and old["apa_share_p95"] == 1


def test_micro_batches_pad_little(mixes):
    new, random = mixes["shuffled_groups"]["padding_share"], mixes["random"]["padding_share"]
    assert random > 0.2 and new < 0.03 and new < random / 10


def test_every_index_once_per_epoch_in_an_order_fixed_by_seed_and_epoch(corpus):
    lengths, _, _ = corpus
    sampler = ShuffledLengthGroupedSampler(lengths, unit=BATCH, seed=SEED)
    first = list(sampler)
    assert len(sampler) == len(first) == 5000 and sorted(first) == list(range(5000))
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(second) == list(range(5000)) and second != first
    assert list(sampler) == second  # iterating again (a resumed run) gives the same order
    again = ShuffledLengthGroupedSampler(lengths, unit=BATCH, seed=SEED)
    again.set_epoch(1)
    assert list(again) == second
    assert ShuffledLengthGroupedSampler(lengths, unit=BATCH, seed=SEED + 1).order(1) != second
    assert first == epoch_order("shuffled_groups", lengths, BATCH, ACCUMULATION, SEED, 0)


def test_units_are_sorted_longest_first_and_the_short_unit_last():
    lengths = [(7 * i) % 23 for i in range(45)]  # 45 = 5 units of 8 and a short one of 5
    order = ShuffledLengthGroupedSampler(lengths, unit=8, seed=0, megabatch_units=2).order(3)
    assert sorted(order) == list(range(45))
    units = [[lengths[i] for i in order[k : k + 8]] for k in range(0, 45, 8)]
    assert all(unit == sorted(unit, reverse=True) for unit in units)
    assert units[0][0] == max(lengths) and len(units[-1]) == 5


def test_under_ddp_the_ranks_of_one_micro_step_share_a_unit(corpus):
    """accelerate hands micro-batches to the ranks in turn: with unit = batch x world size, the ranks' batches of one
    micro-step are the two halves of one sorted unit (neighbouring lengths), and together the ranks see every index."""
    lengths, _, _ = corpus
    world, batch = 2, 4
    sampler = ShuffledLengthGroupedSampler(lengths, unit=batch * world, seed=SEED)
    order = sampler.order(0)
    ranks = [list(BatchSamplerShard(BatchSampler(sampler, batch, drop_last=False), world, rank)) for rank in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 5000 // (batch * world)
    for step, (a, b) in enumerate(zip(*ranks, strict=True)):
        assert a + b == order[step * batch * world : (step + 1) * batch * world]
        assert min(lengths[i] for i in a) >= max(lengths[i] for i in b)
    assert sorted(i for rank in ranks for batch_ in rank for i in batch_) == list(range(5000))
