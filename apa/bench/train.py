"""Training throughput: how fast does the composed config train, in how much memory, at what MFU, and how long would
its epochs take on the full corpus? Real optimizer steps of the very trainer train.py builds (`apa bench`, train
mode)."""

from __future__ import annotations

import logging
import math
import tempfile
import time
from pathlib import Path

import torch

from apa.bench.common import FULL_CORPUS_EXAMPLES_PER_EPOCH, compose, peak_memory_gb
from apa.bench.flops import flop_breakdown, flop_params, mfu, model_dims
from apa.bench.sampler import STRATEGY_ORDER, order_mix
from apa.errors import UserError

log = logging.getLogger(__name__)


def bench_training(overrides: list[str], steps: int, warmup: int, peak: float | None) -> dict:
    """`warmup` + `steps` optimizer steps of the trainer build_trainer makes of the composed config (checkpoints and
    logging off, the training set repeated to fill every step); the figures of the `steps` after the warm-up."""
    from transformers import TrainerCallback

    from apa.training.recipe import build_trainer

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
        repeats = repeat_train_set(trainer, warmup + steps)
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
    task_of = trainer.train_dataset["task"]
    batch, accumulation = args.per_device_train_batch_size, args.gradient_accumulation_steps
    seed = args.data_seed if args.data_seed is not None else args.seed
    mix = {s: order_mix(STRATEGY_ORDER[s], totals, task_of, batch, accumulation, seed, world_size=args.world_size)
           for s in (strategy, other) if s in STRATEGY_ORDER}
    # A few dozen examples form one mega-batch, so grouping cannot show here; resampled to the full corpus's 5000
    # examples per epoch, the measured lengths show what it buys there (an estimate: the sample's length spread, full
    # of ties; --mode sampler counts on a synthetic corpus of continuous lengths).
    drawn = torch.randint(len(totals), (FULL_CORPUS_EXAMPLES_PER_EPOCH,),
                          generator=torch.Generator().manual_seed(args.seed)).tolist()
    pad_corpus = {s: order_mix(STRATEGY_ORDER[s], [totals[i] for i in drawn], [task_of[i] for i in drawn], batch,
                               accumulation, seed)["padding_share"] for s in ("random", "group_by_length")}
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
        "peak_memory_gb": peak_memory_gb(),
        "peak_memory_kind": "cuda max allocated" if cuda else "process RSS",
        "trainable_params": record["parameters"]["trainable"],
        "total_params": record["parameters"]["total"],
        "train_wall_s": wall,
    }
    # model_tflops_per_s and mfu over every FLOP flop_breakdown counts; the projection from the config's epochs
    params = flop_params(record["parameters"], trainer.model)
    mean_answer = sum(t["answer"]["mean"] * t["examples"] for t in tasks) / sum(t["examples"] for t in tasks)
    result.update(training_figures(trainer, cfg, params, totals, mean_audio, mean_answer, samples_s, peak, repeats))
    return result


def repeat_train_set(trainer, steps: int) -> int:
    """Repeat a small training set (the bundled sample's 40 examples) until it fills `steps` optimizer steps of the
    configured size, so that every measured step holds batch x accumulation examples; returns the repeat count."""
    from datasets import concatenate_datasets

    args = trainer.args
    needed = steps * args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    have = len(trainer.train_dataset)
    repeats = math.ceil(needed / have)
    if repeats > 1:
        log.info("repeating the %d training examples %d times to fill %d steps of %d", have, repeats, steps,
                 needed // steps)
        trainer.train_dataset = concatenate_datasets([trainer.train_dataset] * repeats)
    return repeats


def training_figures(trainer, cfg, params: dict, totals: list[int], mean_audio: float, mean_answer: float,
                     samples_s: float, peak: float | None, repeats: int) -> dict:
    """MFU over the FLOPs of flop_breakdown, and the projected wall time of the config's epochs on the full corpus."""
    args = trainer.args
    dims = model_dims(trainer.model)
    flops = flop_breakdown(params, dims, totals, mean_audio, bool(args.activation_checkpointing),
                           bool(cfg.model.unfreeze), mean_answer)
    achieved = flops["total"] * samples_s
    epochs = float(cfg.trainer.num_train_epochs)
    return {
        "optim": str(getattr(args.optim, "value", args.optim)),
        "train_set_repeats": repeats,
        "flops_per_example": flops,
        "flops_counted": "LM weight matmuls (frozen: fwd + activation grads), LM head at the answer tokens, LoRA "
                         "matmuls (fwd + both grads), causal LM attention, audio encoder matmuls + attention (fwd; + "
                         "grads if unfrozen); checkpointing's recomputation included; conv subsampling, norms, "
                         "elementwise ops left out",
        "model_tflops_per_s": achieved / 1e12,
        "mfu": mfu(achieved, peak),
        "peak_tflops": peak,
        "projected_epochs": epochs,
        "projected_full_corpus_min": epochs * FULL_CORPUS_EXAMPLES_PER_EPOCH / samples_s / 60,
    }
