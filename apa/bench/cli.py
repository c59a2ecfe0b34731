"""Benchmark the composed training config: real optimizer steps, or the data pipeline alone.

    apa bench experiment=demo                                   tiny model on the CPU
    apa bench model=phi4mm_random data=sample lora=paper_r64 trainer.per_device_train_batch_size=8
    apa bench experiment=demo --mode data --workers 0 1 2       collate throughput per worker
    apa bench --mode sampler                                    task mix and padding per training order
    apa bench experiment=demo --mode generate                   evaluation's generation, forced lengths
    apa bench model=phi4mm_random data=sample --mode cases --cases cases.txt --results out.jsonl
                                                                          a matrix in one process (scripts/gpu_bench.sh)
    apa bench ... --json out.json                               the figures as JSON too

Train mode runs `--warmup` + `--steps` optimizer steps of the very trainer train.py builds (checkpoints and logging
off) and reports steps/s, samples/s, tokens/s (text and audio), the padding share of the batches (as sampled, and
with the other sampling strategy for comparison), peak memory (CUDA, else the process's RSS), MFU on a GPU, and the
projected wall time of the composed trainer config's epochs over the full corpus (2 x 2500 examples an epoch; 4 for
trainer=paper_table3) at the measured throughput and token lengths. MFU counts the FLOPs listed in `flop_breakdown`.

Sampler mode needs no model: on a synthetic corpus of the full training set's size and length distribution
(apa.data.stats.synthetic_corpus) it counts, per training order (the trainer's `group_by_length` sampler, Hugging
Face's stock length grouping it replaced, plain random), the padding share of the micro-batches and the share of APA
examples in each optimizer step, with the composed config's batch size, accumulation and seed.

Generate mode times evaluation's own batching and generation (apa.evaluation.evaluate.plan_batches,
apa.sft.generation) on the
test split's prompts at several token budgets, each answer forced to the token length of its reference answer
(random weights never stop early), and projects a full test split (2 x 2500 answers) and a checkpoint=all evaluation.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import resource
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

from apa.constants import CONF_DIR
from apa.errors import UserError, one_line_errors

log = logging.getLogger("apa.bench.cli")

FULL_CORPUS_EXAMPLES_PER_EPOCH = 2 * 2500  # SpeechOcean762 train: 2500 utterances x (APA + MDD)
FULL_TEST_ANSWERS_PER_TASK = 2500  # SpeechOcean762 test: 2500 utterances, one APA and one MDD answer each
# Dense bf16 peak of common cards (vendor data sheets), for MFU; --peak-tflops overrides.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0,
                    "RTX 4090": 165.0, "RTX 3090": 71.0}


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from apa.config import register_configs

    register_configs()
    conf = CONF_DIR
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=overrides)


# ---------------------------------------------------------------------------------------------------------------
# Padding, FLOPs
# ---------------------------------------------------------------------------------------------------------------


STRATEGY_ORDER = {"group_by_length": "step_sorted", "random": "random"}  # the trainer's, in apa.training.sampling terms


def order_mix(kind: str, lengths: list[int], tasks: list[str], batch_size: int, accumulation: int, seed: int,
              epochs: int = 1, world_size: int = 1) -> dict:
    """apa.data.stats.batch_mix of `epochs` epochs of the training order `kind` (apa.training.sampling.ORDERS)."""
    from apa.data.stats import batch_mix
    from apa.training.sampling import epoch_order

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
    achieved = flops * samples_s  # frozen-LM and audio matmuls only: the MFU docs/benchmarks.md gave before 11-29
    result["matmul_floor_tflops_per_s"] = achieved / 1e12
    result["mfu_matmul_floor"] = achieved / (peak * 1e12) if peak else None
    # model_tflops_per_s and mfu over every FLOP flop_breakdown counts; the projection from the config's epochs
    mean_answer = sum(t["answer"]["mean"] * t["examples"] for t in tasks) / sum(t["examples"] for t in tasks)
    result.update(training_figures(trainer, cfg, params, totals, mean_audio, mean_answer, samples_s, peak, repeats))
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


# ---------------------------------------------------------------------------------------------------------------
# Sampler mode
# ---------------------------------------------------------------------------------------------------------------

ORDER_NAMES = {"step_sorted": "group_by_length (this trainer)", "hf_grouped": "HF length grouping (before)",
               "random": "random"}


def bench_sampler(overrides: list[str], epochs: int, world_size: int) -> dict:
    """Padding and the task mix per optimizer step of each training order, on the synthetic full-size corpus."""
    from apa.data.stats import synthetic_corpus
    from apa.training.sampling import ORDERS

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
    from apa.training.sampling import ORDERS

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
# FLOPs counted for MFU, projections (train mode)
# ---------------------------------------------------------------------------------------------------------------


def model_dims(model) -> dict[str, int]:
    """The sizes the attention FLOPs need, from the model's config (a PeftModel passes its base model's)."""
    config = model.config
    text = config.get_text_config()
    audio = config.audio_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return {"lm_layers": text.num_hidden_layers, "lm_attention_width": text.num_attention_heads * head_dim,
            "audio_layers": audio.num_blocks, "audio_width": audio.hidden_size}


def flop_breakdown(params: dict, dims: dict, tokens: list[int], audio_tokens: float, checkpointing: bool,
                   unfrozen: bool, answer_tokens: float = 0.0) -> dict[str, float]:
    """FLOPs of one training example (mean over `tokens`, each an example's total length), by part:

    - lm_matmul: the frozen language model's weight matmuls (the embedding matrix left out), 2N per token forward,
      2N backward (activation gradients only: its weights are frozen), 2N again under activation checkpointing;
    - lm_head: the tied embedding matrix as the output projection, which TRL's fused loss applies at the
      `answer_tokens` labelled positions only: 2E forward + 2E backward each (not checkpointed);
    - lora_matmul: the LoRA matrices, trained: 2N forward, 4N backward (activation and weight gradients), +2N under
      checkpointing;
    - lm_attention: scores and weighted sums of the causal self-attention, only the causal half counted:
      2 x layers x width x L^2 forward per example of L tokens, x3 with the backward, x4 with checkpointing;
    - audio_matmul and audio_attention: the conformer at the audio-token rate (its conv subsampling before that is
      not counted), bidirectional attention (4 x layers x width x A^2 forward), forward only unless model.unfreeze
      trains it (then x3; its layers are not checkpointed). A is the mean audio length, so its square is a floor.
    """
    groups = params["groups"]
    lm = groups["language_model"]["total"] - params.get("embedding_params", 0)
    lora = groups["lora"]["total"]
    audio = groups["audio_encoder"]["total"] + groups["audio_projector"]["total"]
    mean_l = sum(tokens) / len(tokens)
    mean_l2 = sum(n * n for n in tokens) / len(tokens)
    out = {
        "lm_matmul": (6 if checkpointing else 4) * lm * mean_l,
        "lm_head": 4 * params.get("embedding_params", 0) * answer_tokens,
        "lora_matmul": (8 if checkpointing else 6) * lora * mean_l,
        "lm_attention": (4 if checkpointing else 3) * 2 * dims["lm_layers"] * dims["lm_attention_width"] * mean_l2,
        "audio_matmul": (6 if unfrozen else 2) * audio * audio_tokens,
        "audio_attention": (3 if unfrozen else 1) * 4 * dims["audio_layers"] * dims["audio_width"] * audio_tokens ** 2,
    }
    out["total"] = sum(out.values())
    return out


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
        "mfu": achieved / (peak * 1e12) if peak else None,
        "peak_tflops": peak,
        "projected_epochs": epochs,
        "projected_full_corpus_min": epochs * FULL_CORPUS_EXAMPLES_PER_EPOCH / samples_s / 60,
    }


# ---------------------------------------------------------------------------------------------------------------
# Generate mode
# ---------------------------------------------------------------------------------------------------------------


def answer_lengths(rows: list[dict], batcher) -> list[int]:
    """Tokens a trained model generates for each row's reference answer: the answer and its <|end|> (generation stops
    there; the training target's final end-of-text is never generated)."""
    eos = batcher.tokens.processor.tokenizer.eos_token_id
    out = []
    for row in rows:
        ids = batcher.tokens.answer(row["user_content"], row["answer"])
        out.append(len(ids) - 1 if ids and ids[-1] == eos else len(ids))
    return out


def generation_flops(params: dict, dims: dict, prompt: int, audio: int, generated: int) -> float:
    """Forward FLOPs of one answer: the prompt's prefill (LM + LoRA matmuls, causal attention, the audio encoder) and
    `generated` decoding steps, each attending to everything before it; the LM head once per generated token."""
    groups = params["groups"]
    lm = groups["language_model"]["total"] - params.get("embedding_params", 0) + groups["lora"]["total"]
    audio_params = groups["audio_encoder"]["total"] + groups["audio_projector"]["total"]
    attention = 2 * dims["lm_layers"] * dims["lm_attention_width"]
    prefill = 2 * lm * prompt + attention * prompt ** 2
    encoder = 2 * audio_params * audio + 4 * dims["audio_layers"] * dims["audio_width"] * audio ** 2
    decode = 2 * lm * generated + 2 * attention * (prompt * generated + generated ** 2 / 2)
    head = 2 * params.get("embedding_params", 0) * generated
    return prefill + encoder + decode + head


def bench_generate(overrides: list[str], budgets: list[int], answers: int | None, peak: float | None,
                   batch_size: int = 4096, cache_implementation: str | None = None, compile: bool = False) -> dict:
    """Evaluation's generation at each token budget in `budgets`: the test split's prompts (repeated to `answers`
    if given), batched by apa.evaluation.evaluate.plan_batches, each batch generating exactly as many tokens as the
    longest
    reference answer in it (min_new_tokens = max_new_tokens), capped at evaluation's max_new_tokens."""
    from apa.checkpoint.loading import add_control_tokens, attach_lora, load_base, parameter_report
    from apa.config import MaxNewTokens
    from apa.evaluation.examples import evaluation_examples
    from apa.evaluation.predictions import plan_batches, prompt_lengths
    from apa.sft.collate import SpeechSFTCollator
    from apa.sft.generation import generate_answers
    from apa.sft.lengths import audio_tokens

    cfg = compose(overrides)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    model, processor, path = load_base(cfg.model)
    control_ids = add_control_tokens(model, processor, cfg.seed)
    model = attach_lora(model, cfg.lora, path, control_ids, cfg.seed, cfg.model.unfreeze, cfg.model.get("revision"))
    model = model.to(device).eval()
    params = parameter_report(model)
    params["embedding_params"] = model.get_base_model().get_input_embeddings().weight.numel()
    dims = model_dims(model)
    rows = evaluation_examples(cfg, processor.tokenizer.audio_token)
    if answers:
        by_task = {t: [r for r in rows if r["task"] == t] for t in ("apa", "mdd")}
        rows = [dict(r) for t in by_task
                for r in (by_task[t] * math.ceil(answers / 2 / len(by_task[t])))[: answers // 2]]
    batcher = SpeechSFTCollator(processor, feature_cache_mb=cfg.data.feature_cache_mb)
    started = time.perf_counter()
    clips = sorted({r["audio_path"] for r in rows})
    for clip in clips:  # log-mel features once per clip, as evaluation computes them; timed apart from generation
        batcher.features(clip)
    feature_s = (time.perf_counter() - started) / len(clips)
    max_new = asdict(MaxNewTokens())
    lengths = prompt_lengths(rows, batcher)
    targets = [min(n, max_new[r["task"]]) for r, n in zip(rows, answer_lengths(rows, batcher), strict=True)]
    key = {id(r): i for i, r in enumerate(rows)}
    n_audio = {clip: audio_tokens(sf_seconds(clip)) for clip in clips}
    kwargs: dict = {"disable_compile": not compile}
    if cache_implementation:
        kwargs["cache_implementation"] = cache_implementation

    def run(batch) -> float:
        n = max(targets[key[id(r)]] for r in batch)
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        generate_answers(model, processor, batch, max_new_tokens=n, min_new_tokens=n, batcher=batcher, **kwargs)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    run(rows[:2])  # warm-up (kernels, allocator), not timed
    out: dict = {
        "config": {"model": cfg.model.name, "lora": cfg.lora.name, "device": torch.cuda.get_device_name() if cuda
                   else "cpu", "dtype": str(next(model.parameters()).dtype), "cache_implementation":
                   cache_implementation, "compile": compile, "batch_size_cap": batch_size, "overrides": overrides},
        "answers": len(rows),
        "max_new_tokens": max_new,
        "answer_tokens": {t: _mean_max([n for r, n in zip(rows, targets, strict=True) if r["task"] == t])
                          for t in ("apa", "mdd")},
        "prompt_tokens": {t: _mean_max([n for r, n in zip(rows, lengths, strict=True) if r["task"] == t])
                          for t in ("apa", "mdd")},
        "feature_seconds_per_clip": feature_s,
        "budgets": {},
    }
    for budget in budgets:
        batches = plan_batches(rows, batch_size, lengths, budget, max_new)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        per_task = {t: {"answers": 0, "seconds": 0.0, "tokens": 0, "decode_tokens": 0} for t in ("apa", "mdd")}
        flops = 0.0
        for batch in batches:
            task = per_task[batch[0]["task"]]
            seconds = run(batch)
            ids = [key[id(r)] for r in batch]
            task["answers"] += len(batch)
            task["seconds"] += seconds
            task["tokens"] += sum(targets[i] for i in ids)
            task["decode_tokens"] += len(batch) * max(targets[i] for i in ids)
            flops += sum(generation_flops(params, dims, lengths[i], n_audio[rows[i]["audio_path"]], targets[i])
                         for i in ids)
        seconds = sum(t["seconds"] for t in per_task.values())
        projected = sum(FULL_TEST_ANSWERS_PER_TASK * t["seconds"] / t["answers"] for t in per_task.values()) / 60
        out["budgets"][str(budget)] = {
            "batches": len(batches),
            "mean_answers_per_batch": len(rows) / len(batches),
            "seconds": seconds,
            "answers_per_s": len(rows) / seconds,
            "generated_tokens_per_s": sum(t["tokens"] for t in per_task.values()) / seconds,
            "decode_tokens_per_s": sum(t["decode_tokens"] for t in per_task.values()) / seconds,
            "seconds_per_answer": {t: v["seconds"] / v["answers"] for t, v in per_task.items()},
            "peak_memory_gb": (torch.cuda.max_memory_allocated() if cuda
                               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 1e9,
            "model_tflops_per_s": flops / seconds / 1e12,
            "mfu": flops / seconds / (peak * 1e12) if peak else None,
            "projected_test_split_min": projected,
        }
    best = min(out["budgets"], key=lambda b: out["budgets"][b]["projected_test_split_min"])
    checkpoints = int(math.ceil(float(cfg.trainer.num_train_epochs)))  # final_model reuses the last epoch's answers
    features_min = FULL_TEST_ANSWERS_PER_TASK * feature_s / 60
    out["best_budget"] = int(best)
    out["projected_features_min"] = features_min
    out["projected_checkpoints"] = checkpoints
    out["projected_full_evaluation_min"] = checkpoints * out["budgets"][best]["projected_test_split_min"] + features_min
    out["projection_note"] = (f"{FULL_TEST_ANSWERS_PER_TASK} answers per task at the measured seconds per answer of "
                              f"each task; checkpoint=all of the config's {checkpoints} epochs with the base model "
                              "loaded once (loading not counted); features once per clip")
    return out


def sf_seconds(path: str) -> float:
    import soundfile as sf

    info = sf.info(path)
    return info.frames / info.samplerate


def _mean_max(values: list[int]) -> dict:
    return {"mean": sum(values) / len(values), "max": max(values)} if values else {"mean": None, "max": None}


# ---------------------------------------------------------------------------------------------------------------
# Cases mode: a matrix of train / generate measurements in one process (scripts/gpu_bench.sh)
# ---------------------------------------------------------------------------------------------------------------


def read_cases(path: Path) -> list[tuple[str, str, list[str]]]:
    """Lines `<name> <train|generate> <override> ...`; blank lines and # comments skipped."""
    import shlex

    cases = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, mode, *overrides = shlex.split(line)
            if mode not in ("train", "generate"):
                raise SystemExit(f"{path}: case {name!r} has mode {mode!r}; train or generate")
            cases.append((name, mode, overrides))
    return cases


def run_cases(common: list[str], cases_file: Path, results: Path, summary: Path | None, deadline_s: float | None,
              train_kwargs: dict, generate_kwargs: dict) -> list[dict]:
    """Each case in turn, its figures (or its error: an out-of-memory is a result too) appended to `results` as one
    JSON line as soon as it ends, and `summary` rewritten after every case, so that a run cut short keeps what it
    measured. Cases that would start after `deadline_s` are recorded as skipped."""
    import gc

    started = time.perf_counter()
    entries = []
    for name, mode, overrides in read_cases(cases_file):
        entry: dict = {"name": name, "mode": mode, "overrides": [*common, *overrides]}
        if deadline_s is not None and time.perf_counter() - started > deadline_s:
            entry.update(ok=False, error=f"skipped: the {deadline_s:.0f} s deadline had passed")
        else:
            log.info("== case %s (%s): %s", name, mode, " ".join(entry["overrides"]))
            t0 = time.perf_counter()
            try:
                if mode == "train":
                    result = bench_training(entry["overrides"], **train_kwargs)
                else:
                    hydra, options = generate_options(entry["overrides"], generate_kwargs)
                    result = bench_generate(hydra, **options)
                entry.update(ok=True, result=result)
            except (Exception, SystemExit) as e:  # noqa: BLE001 - every failure is a figure of the matrix
                entry.update(ok=False, error=f"{type(e).__name__}: {str(e)[:400]}")
                log.exception("case %s failed", name)
            entry["wall_s"] = time.perf_counter() - t0
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        entries.append(entry)
        with results.open("a") as f:
            f.write(json.dumps(entry, default=str) + "\n")
        if summary is not None:
            summary.write_text(summarize(entries))
    return entries


def generate_options(overrides: list[str], defaults: dict) -> tuple[list[str], dict]:
    """A generate case's `gen.<option>=<value>` items (gen.budgets=4096,16384 gen.cache_implementation=static
    gen.compile=true gen.answers=256) override the command line's generate options; the rest go to Hydra."""
    options = dict(defaults)
    hydra = []
    for item in overrides:
        key, _, value = item.partition("=")
        if not key.startswith("gen."):
            hydra.append(item)
            continue
        name = key[4:]
        if name == "budgets":
            options[name] = [int(v) for v in value.split(",")]
        elif name in ("answers", "batch_size"):
            options[name] = int(value)
        elif name == "compile":
            options[name] = value.lower() == "true"
        elif name == "cache_implementation":
            options[name] = value or None
        else:
            raise SystemExit(f"unknown generate option {key}: gen.budgets, gen.answers, gen.batch_size, "
                             "gen.cache_implementation, gen.compile")
    return hydra, options


def summarize(entries: list[dict]) -> str:
    """Markdown tables of a cases run: training, then generation, one row per case (errors included)."""
    def f(value, digits=3):
        return "n/a" if value is None else (f"{value:.{digits}g}" if isinstance(value, float) else str(value))

    lines = ["## Training", "",
             "| case | lora | batch x accum | ckpt | optim | s/step | samples/s | tokens/s | MFU | MFU (matmul floor) "
             "| peak GB | projected min (epochs) | note |", "|---" * 13 + "|"]
    for e in (e for e in entries if e["mode"] == "train"):
        r = e.get("result") or {}
        c = r.get("config", {})
        mfu = r.get("mfu")
        floor = r.get("mfu_matmul_floor")
        lines.append("| " + " | ".join([
            e["name"], f(c.get("lora")), f"{c.get('batch', '?')} x {c.get('accumulation', '?')}" if c else "",
            f(c.get("activation_checkpointing")), f(r.get("optim")), f(r.get("seconds_per_step")),
            f(r.get("samples_per_s")), f(r.get("tokens_per_s")), "n/a" if mfu is None else f"{100 * mfu:.1f} %",
            "n/a" if floor is None else f"{100 * floor:.1f} %", f(r.get("peak_memory_gb")),
            f"{f(r.get('projected_full_corpus_min'))} ({f(r.get('projected_epochs'))})" if r else "",
            "" if e.get("ok") else e.get("error", "")[:120]]) + " |")
    lines += ["", "## Generation (answers forced to their reference's token length)", "",
              "| case | lora | budget (tokens) | batches | answers/batch | answers/s | generated tok/s | MFU | peak GB "
              "| projected 5,000 answers (min) | note |", "|---" * 11 + "|"]
    for e in (e for e in entries if e["mode"] == "generate"):
        r = e.get("result") or {}
        if not r:
            lines.append(f"| {e['name']} |" + " |" * 9 + f" {e.get('error', '')[:120]} |")
            continue
        for budget, b in r["budgets"].items():
            mfu = b.get("mfu")
            lines.append("| " + " | ".join([
                e["name"], r["config"]["lora"] + (f", {r['config']['cache_implementation']} cache" if
                                                  r["config"]["cache_implementation"] else "")
                + (", compile on" if r["config"]["compile"] else ""), budget, str(b["batches"]),
                f(b["mean_answers_per_batch"]),
                f(b["answers_per_s"]), f(b["generated_tokens_per_s"]), "n/a" if mfu is None else f"{100 * mfu:.1f} %",
                f(b["peak_memory_gb"]), f(b["projected_test_split_min"]),
                "best" if int(budget) == r["best_budget"] else ""]) + " |")
        lines.append(f"| {e['name']}: full evaluation, {r['projected_checkpoints']} checkpoints at budget "
                     f"{r['best_budget']} + features | | | | | | | | | {f(r['projected_full_evaluation_min'])} | |")
    return "\n".join(lines) + "\n"


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
    parser.add_argument("--mode", choices=["train", "data", "sampler", "generate", "cases"], default="train")
    parser.add_argument("--steps", type=int, default=6, help="measured optimizer steps (train mode)")
    parser.add_argument("--warmup", type=int, default=2, help="optimizer steps run before measuring")
    parser.add_argument("--workers", type=int, nargs="+", default=[0], help="dataloader workers to try (data mode)")
    parser.add_argument("--batches", type=int, default=20, help="batches to collate per setting (data mode)")
    parser.add_argument("--epochs", type=int, default=20, help="epochs of training order to count (sampler mode)")
    parser.add_argument("--world-size", type=int, default=1, help="data-parallel ranks (sampler mode)")
    parser.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, for MFU")
    add_generate_arguments(parser)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    if args.mode in ("generate", "cases"):
        return generate_or_cases(args)
    if args.mode == "train":
        result = bench_training(args.overrides, args.steps, args.warmup, peak_tflops(args.peak_tflops))
    elif args.mode == "data":
        result = bench_data(args.overrides, args.workers, args.batches)
    else:
        result = bench_sampler(args.overrides, args.epochs, args.world_size)
    print("\n== apa.bench.cli (" + args.mode + ")")
    if args.mode == "sampler":
        print_sampler_table(result)
    else:
        print_figures(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return result


def add_generate_arguments(parser) -> None:
    parser.add_argument("--budgets", type=int, nargs="+", default=[1024, 4096, 16384],
                        help="token budgets per batch to time (generate mode; evaluation's max_batch_tokens)")
    parser.add_argument("--answers", type=int, help="repeat the test split's prompts to this many answers")
    parser.add_argument("--batch-cap", type=int, default=4096, help="most answers per batch (evaluation's batch_size)")
    parser.add_argument("--cache-implementation", help="e.g. static (generate mode)")
    parser.add_argument("--compile", action="store_true", help="let transformers compile decoding (static cache)")
    parser.add_argument("--cases", type=Path, help="cases mode: lines `<name> <train|generate> <override> ...`")
    parser.add_argument("--results", type=Path, help="cases mode: JSON lines appended here")
    parser.add_argument("--summary", type=Path, help="cases mode: markdown tables written here")
    parser.add_argument("--deadline-s", type=float, help="cases mode: start no case after this many seconds")


def generate_or_cases(args) -> dict | list:
    peak = peak_tflops(args.peak_tflops)
    generate_kwargs = {"budgets": args.budgets, "answers": args.answers, "peak": peak, "batch_size": args.batch_cap,
                       "cache_implementation": args.cache_implementation, "compile": args.compile}
    if args.mode == "cases":
        if not (args.cases and args.results):
            raise SystemExit("--mode cases needs --cases and --results")
        entries = run_cases(args.overrides, args.cases, args.results, args.summary, args.deadline_s,
                            {"steps": args.steps, "warmup": args.warmup, "peak": peak}, generate_kwargs)
        print(summarize(entries))
        return entries
    result = bench_generate(args.overrides, **generate_kwargs)
    print("\n== apa.bench.cli (generate)")
    for key, value in result.items():
        if key == "budgets":
            for budget, figures in value.items():
                print(f"budget {budget:>8} tokens: " + ", ".join(f"{k}={_fmt(v)}" for k, v in figures.items()
                                                                if not isinstance(v, dict)))
                print(f"{'':24}seconds_per_answer: " + ", ".join(
                    f"{t}={_fmt(v)}" for t, v in figures["seconds_per_answer"].items()))
        else:
            print(f"{key:<42} {_fmt(value)}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return result


if __name__ == "__main__":
    main()
