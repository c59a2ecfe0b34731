"""What a training order does to the batches, counted without a model: the padding share of the micro-batches and
the mix of tasks in each optimizer step, for the trainer's order (apa.training.sampling.StepSortedSampler, behind
`group_by_length`), Hugging Face's length grouping it replaced, and plain random order (`apa bench --mode sampler`
on the synthetic full-size corpus; train mode on the measured lengths)."""

from __future__ import annotations

from collections.abc import Sequence
from statistics import mean, pstdev

import torch

from apa.bench.common import compose
from apa.bench.synthetic import synthetic_corpus
from apa.training.sampling import StepSortedSampler

ORDERS = ("step_sorted", "hf_grouped", "random")  # see epoch_order
ORDER_NAMES = {"step_sorted": "group_by_length (this trainer)", "hf_grouped": "HF length grouping (before)",
               "random": "random"}
STRATEGY_ORDER = {"group_by_length": "step_sorted", "random": "random"}  # the trainer's train_sampling_strategy


def epoch_order(kind: str, lengths: Sequence[int], batch_size: int, accumulation: int, seed: int, epoch: int = 0,
                world_size: int = 1) -> list[int]:
    """The index order of one epoch under `kind`:

    - "step_sorted": StepSortedSampler, as the trainer uses it for `group_by_length`;
    - "hf_grouped": Hugging Face's stock length grouping, as this trainer did before: mega-batches of whole
      optimizer steps (batch x accumulation, as it was given), each sorted by length, in that order;
    - "random": a plain random permutation (`train_sampling_strategy=random`).
    """
    if kind == "step_sorted":
        unit = batch_size * world_size
        return StepSortedSampler(lengths, unit, unit * accumulation, seed).order(epoch)
    generator = torch.Generator().manual_seed(seed + epoch)
    if kind == "hf_grouped":
        from transformers.trainer_pt_utils import get_length_grouped_indices

        return get_length_grouped_indices(list(lengths), batch_size * accumulation, generator=generator)
    if kind == "random":
        return torch.randperm(len(lengths), generator=generator).tolist()
    raise ValueError(f"unknown order {kind!r}: one of {', '.join(ORDERS)}")


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[round(q * (len(ordered) - 1))]


def batch_mix(order: list[int], lengths: list[int], tasks: list[str], batch_size: int, accumulation: int,
              world_size: int = 1, task: str = "apa") -> dict:
    """What a training order does, counted without a model.

    - padding_share: padded positions / all positions of the micro-batches (each of batch_size consecutive indices,
      right-padded to its longest example, as the collator pads);
    - per optimizer step (batch_size x accumulation x world_size consecutive indices; full steps only, the short
      last step of an epoch is left out): the share of `task` examples (mean, standard deviation, percentiles) and the
      share of steps that hold one task only.
    `order` may span several epochs, concatenated; steps and batches are then cut per epoch of len(lengths).
    """
    n = len(lengths)
    if n == 0 or len(order) % n:
        raise ValueError(f"order has {len(order)} indices: not whole epochs of {n}")
    real = padded = 0
    shares: list[float] = []
    step = batch_size * accumulation * world_size
    for epoch_start in range(0, len(order), n):
        epoch = order[epoch_start : epoch_start + n]
        for start in range(0, n, batch_size):
            batch = [lengths[i] for i in epoch[start : start + batch_size]]
            real += sum(batch)
            padded += max(batch) * len(batch)
        for start in range(0, n - step + 1, step):
            shares.append(sum(tasks[i] == task for i in epoch[start : start + step]) / step)
    ordered = sorted(shares)
    out = {"padding_share": 1 - real / padded, "steps": len(shares)}
    if shares:
        out.update({
            "single_task_steps": sum(s in (0.0, 1.0) for s in shares) / len(shares),
            f"{task}_share_mean": mean(shares),
            f"{task}_share_sd": pstdev(shares),
            **{f"{task}_share_p{q}": _percentile(ordered, q / 100) for q in (5, 25, 50, 75, 95)},
        })
    return out


def order_mix(kind: str, lengths: list[int], tasks: list[str], batch_size: int, accumulation: int, seed: int,
              epochs: int = 1, world_size: int = 1) -> dict:
    """batch_mix of `epochs` epochs of the training order `kind` (one of ORDERS)."""
    order = [i for epoch in range(epochs)
             for i in epoch_order(kind, lengths, batch_size, accumulation, seed, epoch, world_size)]
    return batch_mix(order, lengths, tasks, batch_size, accumulation, world_size)


def prompt_tokens(cfg) -> dict[str, int]:
    """Text tokens of each task's prompt as the recipe builds it (cfg.prompts, in the chat template of cfg.model's
    tokenizer, the audio placeholder not counted: it expands to the clip's audio tokens)."""
    from apa.checkpoint.layout import load_processor
    from apa.checkpoint.loading import resolve_model_path
    from apa.sft.collate import chat_text
    from apa.sft.prompts import TASKS, user_content

    processor = load_processor(resolve_model_path(cfg.model), cfg.model.get("revision"))
    instructions = {"apa": cfg.prompts.apa, "mdd": cfg.prompts.mdd}
    audio = processor.tokenizer.audio_token
    return {task: len(processor.tokenizer(chat_text(processor, user_content(task, instructions, audio), None),
                                          add_special_tokens=False).input_ids) - 1 for task in TASKS}


def bench_sampler(overrides: list[str], epochs: int, world_size: int) -> dict:
    """Padding and the task mix per optimizer step of each training order, on the synthetic full-size corpus whose
    prompts are the configured ones (prompts=paper by default, as paper_table3 trains)."""
    cfg = compose(overrides)
    batch, accumulation = cfg.trainer.per_device_train_batch_size, cfg.trainer.gradient_accumulation_steps
    seed = cfg.trainer.data_seed if cfg.trainer.get("data_seed") is not None else cfg.trainer.seed
    prompt = prompt_tokens(cfg)
    rows = synthetic_corpus(prompt=prompt)
    lengths, tasks = [r["total"] for r in rows], [r["task"] for r in rows]
    seconds = [r["seconds"] for r in rows[::2]]
    out: dict = {
        "config": {"batch": batch, "accumulation": accumulation, "world_size": world_size, "seed": seed,
                   "epochs": epochs, "trainer_sampling": cfg.trainer.train_sampling_strategy,
                   "prompts": cfg.prompts.name, "prompt_tokens": prompt, "model": cfg.model.name},
        "corpus": {"examples": len(rows), "mean_seconds": sum(seconds) / len(seconds),
                   "mean_tokens": sum(lengths) / len(lengths)},
    }
    for kind in ORDERS:
        out[kind] = order_mix(kind, lengths, tasks, batch, accumulation, seed, epochs, world_size)
    return out


def print_sampler_table(result: dict) -> None:
    """The three orders side by side."""
    config, corpus = result["config"], result["corpus"]
    print(f"synthetic corpus: {corpus['examples']} examples, {corpus['mean_seconds']:.2f} s of audio and "
          f"{corpus['mean_tokens']:.0f} tokens per example on average (prompts={config['prompts']}: "
          f"{config['prompt_tokens']['apa']} / {config['prompt_tokens']['mdd']} APA / MDD prompt tokens, "
          f"{config['model']}'s tokenizer); batch {config['batch']} x accumulation "
          f"{config['accumulation']} x world size {config['world_size']}, seed {config['seed']}, "
          f"{config['epochs']} epochs ({result[ORDERS[0]]['steps']} full optimizer steps)")
    print(f"{'':28}" + "".join(f"{ORDER_NAMES[k]:>32}" for k in ORDERS))
    rows = [("padding share", "padding_share", "{:.2%}"), ("single-task steps", "single_task_steps", "{:.2%}"),
            ("APA share per step: mean", "apa_share_mean", "{:.3f}"), ("  sd", "apa_share_sd", "{:.3f}")]
    rows += [(f"  p{q}", f"apa_share_p{q}", "{:.3f}") for q in (5, 25, 50, 75, 95)]
    for label, key, fmt in rows:
        print(f"{label:28}" + "".join(f"{fmt.format(result[k][key]):>32}" for k in ORDERS))
