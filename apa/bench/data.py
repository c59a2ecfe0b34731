"""Collate throughput: how many examples a second does the trainer's dataloader collate, per worker count, with the
feature cache cold and warm? (`apa bench --mode data`)"""

from __future__ import annotations

import math
import time

import torch

from apa.bench.common import compose
from apa.errors import UserError


def bench_data(overrides: list[str], workers: list[int], batches: int) -> dict:
    """Collate throughput, as the trainer's dataloader runs it, in two states of the per-process feature cache:
    cold (every clip's log-mel computed: the first epoch's worst case) and warm (every clip cached: later epochs
    with persistent workers). Workers are forked from a process whose cache is already warm, as persistent workers
    are after their first epoch."""
    from torch.utils.data import DataLoader

    from apa.checkpoint.layout import load_processor
    from apa.checkpoint.loading import resolve_model_path
    from apa.data.sources import load_configured_split
    from apa.sft.collate import SpeechSFTCollator
    from apa.training.recipe import example_rows

    if batches < 2:
        raise UserError("--batches must be at least 2: the first batch of each setting is not timed")
    cfg = compose(overrides)
    processor = load_processor(resolve_model_path(cfg.model), cfg.model.get("revision"))
    utterances = load_configured_split(cfg.data, cfg.data.train_split)
    rows = example_rows(utterances, cfg.prompts, processor.tokenizer.audio_token)
    batch_size = cfg.trainer.per_device_train_batch_size
    needed = batches * batch_size
    rows = (rows * math.ceil(needed / len(rows)))[:needed]
    warm = SpeechSFTCollator(processor, cfg.trainer.max_length, cfg.data.feature_cache_mb)
    for path in {r["audio_path"] for r in rows}:  # fill the cache (when it is on)
        warm.features(path)
    collators = {"cold": SpeechSFTCollator(processor, cfg.trainer.max_length, feature_cache_mb=0), "warm": warm}
    out: dict = {"batch": batch_size, "batches": batches, "feature_cache_mb": cfg.data.feature_cache_mb,
                 "torch_threads": torch.get_num_threads()}
    for state, collator in collators.items():
        out[state] = {}
        for n in workers:
            loader = DataLoader(rows, batch_size=batch_size, collate_fn=collator, num_workers=n, shuffle=False)
            # steady state: the clock starts at the first batch, so worker start-up (a fork, ~0.5 s) is left out
            batches_iter = iter(loader)
            next(batches_iter)
            started = time.perf_counter()
            count = sum(len(batch["input_ids"]) for batch in batches_iter)
            seconds = time.perf_counter() - started
            out[state][f"workers={n}"] = {"samples_per_s": count / seconds,
                                          "samples_per_s_per_worker": count / seconds / max(n, 1)}
    return out
