"""Evaluation's generation: how fast does evaluation's own batching and decoding answer the test split, at which
token budget per batch, and how long would a full evaluation take? Each answer is forced to its reference answer's
token length, since random weights never stop early (`apa bench --mode generate`)."""

from __future__ import annotations

import math
import time
from dataclasses import asdict

import torch

from apa.bench.common import FULL_TEST_ANSWERS_PER_TASK, compose, fmt, peak_memory_gb
from apa.bench.flops import flop_params, generation_flops, mfu, model_dims


def bench_generate(overrides: list[str], budgets: list[int], answers: int | None, peak: float | None,
                   batch_size: int = 4096, cache_implementation: str | None = None, compile: bool = False) -> dict:
    """Evaluation's generation at each token budget in `budgets`: the test split's prompts (repeated to `answers`
    if given), batched by apa.evaluation.predictions.plan_batches, each batch generating exactly as many tokens as
    the longest reference answer in it (min_new_tokens = max_new_tokens), capped at evaluation's max_new_tokens."""
    from apa.checkpoint.loading import add_control_tokens, attach_lora, load_base, parameter_report
    from apa.config import MaxNewTokens
    from apa.evaluation.examples import evaluation_examples
    from apa.evaluation.predictions import plan_batches, prompt_lengths
    from apa.sft.collate import SpeechSFTCollator
    from apa.sft.generation import generate_answers
    from apa.sft.lengths import audio_tokens, clip_seconds

    cfg = compose(overrides)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    model, processor, path = load_base(cfg.model)
    control_ids = add_control_tokens(model, processor, cfg.seed)
    model = attach_lora(model, cfg.lora, path, control_ids, cfg.seed, cfg.model.unfreeze, cfg.model.get("revision"))
    model = model.to(device).eval()
    params = flop_params(parameter_report(model), model)
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
    n_audio = {clip: audio_tokens(seconds) for clip, seconds in clip_seconds(clips).items()}
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
            "peak_memory_gb": peak_memory_gb(),
            "model_tflops_per_s": flops / seconds / 1e12,
            "mfu": mfu(flops / seconds, peak),
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


def answer_lengths(rows: list[dict], batcher) -> list[int]:
    """Tokens a trained model generates for each row's reference answer: the answer and its <|end|> (generation stops
    there; the training target's final end-of-text is never generated)."""
    eos = batcher.tokens.processor.tokenizer.eos_token_id
    out = []
    for row in rows:
        ids = batcher.tokens.answer(row["user_content"], row["answer"])
        out.append(len(ids) - 1 if ids and ids[-1] == eos else len(ids))
    return out


def _mean_max(values: list[int]) -> dict:
    return {"mean": sum(values) / len(values), "max": max(values)} if values else {"mean": None, "max": None}


def print_generate(result: dict) -> None:
    """A figure a line; each token budget's figures on one line, its seconds per answer on the next."""
    for key, value in result.items():
        if key == "budgets":
            for budget, figures in value.items():
                print(f"budget {budget:>8} tokens: " + ", ".join(f"{k}={fmt(v)}" for k, v in figures.items()
                                                               if not isinstance(v, dict)))
                print(f"{'':24}seconds_per_answer: " + ", ".join(
                    f"{t}={fmt(v)}" for t, v in figures["seconds_per_answer"].items()))
        else:
            print(f"{key:<42} {fmt(value)}")
