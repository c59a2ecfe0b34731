"""Benchmark the composed training config: real optimizer steps, or the data pipeline alone.

    python -m apa.bench experiment=demo                                   tiny model on the CPU
    python -m apa.bench model=phi4mm_random data=sample lora=paper_r64 trainer.per_device_train_batch_size=8
    python -m apa.bench experiment=demo --mode data --workers 0 1 2       collate throughput per worker
    python -m apa.bench --mode sampler                                    task mix and padding per training order
    python -m apa.bench ... --json out.json                               the figures as JSON too

Train mode runs `--warmup` + `--steps` optimizer steps of the very trainer train.py builds (checkpoints and logging
off) and reports steps/s, samples/s, tokens/s (text and audio), the padding share of the batches (as sampled, and
with the other sampling strategy for comparison), peak memory (CUDA, else the process's RSS), MFU on a GPU, and the
projected wall time of paper_table3 (3 epochs of 2 x 2500 examples) at the measured throughput and token lengths.

Sampler mode needs no model: on a synthetic corpus of the full training set's size and length distribution
(apa.data.stats.synthetic_corpus) it counts, per training order (the trainer's `group_by_length` sampler, Hugging
Face's stock length grouping it replaced, plain random), the padding share of the micro-batches and the share of APA
examples in each optimizer step, with the composed config's batch size, accumulation and seed.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import resource
import tempfile
import time
from pathlib import Path

import torch

from apa.errors import UserError, one_line_errors

log = logging.getLogger("apa.bench")

FULL_CORPUS_EXAMPLES_PER_EPOCH = 2 * 2500  # SpeechOcean762 train: 2500 utterances x (APA + MDD)
PAPER_EPOCHS = 3
# Dense bf16 peak of common cards (vendor data sheets), for MFU; --peak-tflops overrides.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0,
                    "RTX 4090": 165.0, "RTX 3090": 71.0}


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from apa.config import register_configs

    register_configs()
    conf = Path(__file__).resolve().parent.parent / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=overrides)


# ---------------------------------------------------------------------------------------------------------------
# Padding, FLOPs
# ---------------------------------------------------------------------------------------------------------------


STRATEGY_ORDER = {"group_by_length": "step_sorted", "random": "random"}  # the trainer's, in apa.sampling terms


def order_mix(kind: str, lengths: list[int], tasks: list[str], batch_size: int, accumulation: int, seed: int,
              epochs: int = 1, world_size: int = 1) -> dict:
    """apa.data.stats.batch_mix of `epochs` epochs of the training order `kind` (apa.sampling.ORDERS)."""
    from apa.data.stats import batch_mix
    from apa.sampling import epoch_order

    order = [i for epoch in range(epochs)
             for i in epoch_order(kind, lengths, batch_size, accumulation, seed, epoch, world_size)]
    return batch_mix(order, lengths, tasks, batch_size, accumulation, world_size)


def flops_per_example(params: dict, mean_tokens: float, mean_audio_tokens: float, checkpointing: bool,
                      unfrozen: bool) -> float:
    """Matmul FLOPs of one training example: the frozen language model runs forward (2N per token), backward for
    activation gradients only (2N), and forward again under activation checkpointing (2N); the audio encoder runs
    forward only unless it is unfrozen. Embedding rows are lookups, not matmuls, and attention scores are left out."""
    groups = params["groups"]
    lm = groups["language_model"]["total"] - params.get("embedding_params", 0)
    audio = groups["audio_encoder"]["total"] + groups["audio_projector"]["total"]
    lm_factor = 6 if checkpointing else 4
    audio_factor = (6 if checkpointing else 4) if unfrozen else 2
    # the conformer runs at 8x the audio-token rate before its subsampling; counting it per audio token is a floor
    return lm_factor * lm * mean_tokens + audio_factor * audio * mean_audio_tokens


def peak_tflops(override: float | None) -> float | None:
    if override:
        return override
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


# ---------------------------------------------------------------------------------------------------------------
# Train mode
# ---------------------------------------------------------------------------------------------------------------


def bench_training(overrides: list[str], steps: int, warmup: int, peak: float | None) -> dict:
    from transformers import TrainerCallback

    from apa.training import build_trainer

    cfg = compose([*overrides, f"trainer.max_steps={warmup + steps}", "trainer.save_strategy=no",
                   "trainer.report_to=[]", f"trainer.logging_steps={warmup + steps}", "data.validation_fraction=0"])
    cuda = torch.cuda.is_available()
    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
            if state.global_step == warmup and cuda:
                torch.cuda.reset_peak_memory_stats()
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t0)

    with tempfile.TemporaryDirectory(prefix="apa-bench-") as tmp:
        trainer, _, record = build_trainer(cfg, Path(tmp) / "run")
        trainer.add_callback(StepTimer())
        started = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - started

    args = trainer.args
    measured = times[warmup:]
    if not measured:
        raise UserError(f"no measured steps: the dataset gives {len(times)} optimizer steps in all; lower --warmup")
    step_s = sum(measured) / len(measured)
    examples_per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    # token lengths as build_trainer measured them: per example in the `length` column, audio per task in the record
    totals = trainer.train_dataset["length"]
    mean_total = sum(totals) / len(totals)
    tasks = record["data"]["train_stats"]["tasks"].values()
    mean_audio = sum(t["audio"]["mean"] * t["examples"] for t in tasks) / sum(t["examples"] for t in tasks)
    samples_s = examples_per_step / step_s
    strategy = args.train_sampling_strategy
    other = "random" if strategy == "group_by_length" else "group_by_length"
    tasks = trainer.train_dataset["task"]
    batch, accumulation = args.per_device_train_batch_size, args.gradient_accumulation_steps
    seed = args.data_seed if args.data_seed is not None else args.seed
    mix = {s: order_mix(STRATEGY_ORDER[s], totals, tasks, batch, accumulation, seed, world_size=args.world_size)
           for s in (strategy, other) if s in STRATEGY_ORDER}
    # A few dozen examples form one mega-batch, so grouping cannot show here; resampled to the full corpus's 5000
    # examples per epoch, the measured lengths show what it buys there (an estimate: the sample's length spread, full
    # of ties; --mode sampler counts on a synthetic corpus of continuous lengths).
    drawn = torch.randint(len(totals), (FULL_CORPUS_EXAMPLES_PER_EPOCH,),
                          generator=torch.Generator().manual_seed(args.seed)).tolist()
    pad_corpus = {s: order_mix(STRATEGY_ORDER[s], [totals[i] for i in drawn], [tasks[i] for i in drawn], batch,
                               accumulation, seed)["padding_share"] for s in ("random", "group_by_length")}
    params = dict(record["parameters"])
    embeddings = trainer.model.get_base_model().get_input_embeddings().weight
    params["embedding_params"] = embeddings.numel()
    flops = flops_per_example(params, mean_total, mean_audio, bool(args.activation_checkpointing),
                              bool(cfg.model.unfreeze))
    result = {
        "config": {"model": cfg.model.name, "lora": cfg.lora.name, "batch": args.per_device_train_batch_size,
                   "accumulation": args.gradient_accumulation_steps, "world_size": args.world_size,
                   "bf16": args.bf16, "activation_checkpointing": bool(args.activation_checkpointing),
                   "sampling": strategy, "attn_implementation": cfg.model.attn_implementation,
                   "device": torch.cuda.get_device_name() if cuda else "cpu", "overrides": overrides},
        "steps_measured": len(measured),
        "seconds_per_step": step_s,
        "steps_per_s": 1 / step_s,
        "samples_per_s": samples_s,
        "tokens_per_s": samples_s * mean_total,
        "text_tokens_per_s": samples_s * (mean_total - mean_audio),
        "audio_tokens_per_s": samples_s * mean_audio,
        "mean_tokens_per_example": mean_total,
        "padding_share": mix[strategy]["padding_share"] if strategy in mix else None,
        f"padding_share_if_{other}": mix[other]["padding_share"],
        # APA examples per optimizer step of the first epoch, in the order the trainer uses (full steps only)
        "step_mix": {k: v for k, v in mix.get(strategy, {}).items() if k != "padding_share"},
        "padding_share_full_corpus_estimate": pad_corpus,
        "peak_memory_gb": (torch.cuda.max_memory_allocated() if cuda
                           else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 1e9,
        "peak_memory_kind": "cuda max allocated" if cuda else "process RSS",
        "trainable_params": record["parameters"]["trainable"],
        "total_params": record["parameters"]["total"],
        "train_wall_s": wall,
    }
    achieved = flops * samples_s
    result["model_tflops_per_s"] = achieved / 1e12
    result["mfu"] = achieved / (peak * 1e12) if peak else None
    total_examples = PAPER_EPOCHS * FULL_CORPUS_EXAMPLES_PER_EPOCH
    result["projected_paper_table3_3_epochs_min"] = total_examples / samples_s / 60
    return result


# ---------------------------------------------------------------------------------------------------------------
# Data mode
# ---------------------------------------------------------------------------------------------------------------


def bench_data(overrides: list[str], workers: list[int], batches: int) -> dict:
    """Collate throughput, as the trainer's dataloader runs it, in two states of the per-process feature cache:
    cold (every clip's log-mel computed: the first epoch's worst case) and warm (every clip cached: later epochs
    with persistent workers). Workers are forked from a process whose cache is already warm, as persistent workers
    are after their first epoch."""
    from torch.utils.data import DataLoader

    from apa.collate import SpeechSFTCollator
    from apa.data.speechocean import load_configured_split
    from apa.layout import load_processor
    from apa.modeling import resolve_model_path
    from apa.training import example_rows

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


# ---------------------------------------------------------------------------------------------------------------
# Sampler mode
# ---------------------------------------------------------------------------------------------------------------

ORDER_NAMES = {"step_sorted": "group_by_length (this trainer)", "hf_grouped": "HF length grouping (before)",
               "random": "random"}


def bench_sampler(overrides: list[str], epochs: int, world_size: int) -> dict:
    """Padding and the task mix per optimizer step of each training order, on the synthetic full-size corpus."""
    from apa.data.stats import synthetic_corpus
    from apa.sampling import ORDERS

    cfg = compose(overrides)
    batch, accumulation = cfg.trainer.per_device_train_batch_size, cfg.trainer.gradient_accumulation_steps
    seed = cfg.trainer.data_seed if cfg.trainer.get("data_seed") is not None else cfg.trainer.seed
    rows = synthetic_corpus()
    lengths, tasks = [r["total"] for r in rows], [r["task"] for r in rows]
    seconds = [r["seconds"] for r in rows[::2]]
    out: dict = {
        "config": {"batch": batch, "accumulation": accumulation, "world_size": world_size, "seed": seed,
                   "epochs": epochs, "trainer_sampling": cfg.trainer.train_sampling_strategy},
        "corpus": {"examples": len(rows), "mean_seconds": sum(seconds) / len(seconds),
                   "mean_tokens": sum(lengths) / len(lengths)},
    }
    for kind in ORDERS:
        out[kind] = order_mix(kind, lengths, tasks, batch, accumulation, seed, epochs, world_size)
    return out


def print_sampler_table(result: dict) -> None:
    """The three orders side by side."""
    from apa.sampling import ORDERS

    config, corpus = result["config"], result["corpus"]
    print(f"synthetic corpus: {corpus['examples']} examples, {corpus['mean_seconds']:.2f} s of audio and "
          f"{corpus['mean_tokens']:.0f} tokens per example on average; batch {config['batch']} x accumulation "
          f"{config['accumulation']} x world size {config['world_size']}, seed {config['seed']}, "
          f"{config['epochs']} epochs ({result[ORDERS[0]]['steps']} full optimizer steps)")
    print(f"{'':28}" + "".join(f"{ORDER_NAMES[k]:>32}" for k in ORDERS))
    rows = [("padding share", "padding_share", "{:.2%}"), ("single-task steps", "single_task_steps", "{:.2%}"),
            ("APA share per step: mean", "apa_share_mean", "{:.3f}"), ("  sd", "apa_share_sd", "{:.3f}")]
    rows += [(f"  p{q}", f"apa_share_p{q}", "{:.3f}") for q in (5, 25, 50, 75, 95)]
    for label, key, fmt in rows:
        print(f"{label:28}" + "".join(f"{fmt.format(result[k][key]):>32}" for k in ORDERS))


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def print_figures(result: dict) -> None:
    for key, value in result.items():
        if isinstance(value, dict):
            for sub, item in value.items():
                shown = {k: _fmt(v) for k, v in item.items()} if isinstance(item, dict) else _fmt(item)
                print(f"{key}.{sub!s:<34} {shown}")
        else:
            print(f"{key:<42} {_fmt(value)}")


@one_line_errors
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the train config (as for train.py)")
    parser.add_argument("--mode", choices=["train", "data", "sampler"], default="train")
    parser.add_argument("--steps", type=int, default=6, help="measured optimizer steps (train mode)")
    parser.add_argument("--warmup", type=int, default=2, help="optimizer steps run before measuring")
    parser.add_argument("--workers", type=int, nargs="+", default=[0], help="dataloader workers to try (data mode)")
    parser.add_argument("--batches", type=int, default=20, help="batches to collate per setting (data mode)")
    parser.add_argument("--epochs", type=int, default=20, help="epochs of training order to count (sampler mode)")
    parser.add_argument("--world-size", type=int, default=1, help="data-parallel ranks (sampler mode)")
    parser.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, for MFU")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    if args.mode == "train":
        result = bench_training(args.overrides, args.steps, args.warmup, peak_tflops(args.peak_tflops))
    elif args.mode == "data":
        result = bench_data(args.overrides, args.workers, args.batches)
    else:
        result = bench_sampler(args.overrides, args.epochs, args.world_size)
    print("\n== apa.bench (" + args.mode + ")")
    if args.mode == "sampler":
        print_sampler_table(result)
    else:
        print_figures(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return result


if __name__ == "__main__":
    main()
