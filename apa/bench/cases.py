"""The cases mode: a matrix of train and generate measurements in one process (scripts/gpu_bench.sh), each case's
figures or error kept as it ends, and the matrix summarized as the markdown tables of docs/benchmarks.md."""

from __future__ import annotations

import gc
import json
import logging
import shlex
import time
from pathlib import Path

import torch

from apa.bench.generate import bench_generate
from apa.bench.train import bench_training
from apa.run_folder import write_atomic

log = logging.getLogger(__name__)


def read_cases(path: Path) -> list[tuple[str, str, list[str]]]:
    """Lines `<name> <train|generate> <override> ...`; blank lines and # comments skipped."""
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
            write_atomic(summary, summarize(entries))
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

    def percent(share):
        return "n/a" if share is None else f"{100 * share:.1f} %"

    lines = ["## Training", "",
             "| case | lora | batch x accum | ckpt | optim | s/step | samples/s | tokens/s | MFU | peak GB "
             "| projected min (epochs) | note |", "|---" * 12 + "|"]
    for e in (e for e in entries if e["mode"] == "train"):
        r = e.get("result") or {}
        c = r.get("config", {})
        lines.append("| " + " | ".join([
            e["name"], f(c.get("lora")), f"{c.get('batch', '?')} x {c.get('accumulation', '?')}" if c else "",
            f(c.get("activation_checkpointing")), f(r.get("optim")), f(r.get("seconds_per_step")),
            f(r.get("samples_per_s")), f(r.get("tokens_per_s")), percent(r.get("mfu")),
            f(r.get("peak_memory_gb")),
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
            lines.append("| " + " | ".join([
                e["name"], r["config"]["lora"] + (f", {r['config']['cache_implementation']} cache" if
                                                  r["config"]["cache_implementation"] else "")
                + (", compile on" if r["config"]["compile"] else ""), budget, str(b["batches"]),
                f(b["mean_answers_per_batch"]),
                f(b["answers_per_s"]), f(b["generated_tokens_per_s"]), percent(b.get("mfu")),
                f(b["peak_memory_gb"]), f(b["projected_test_split_min"]),
                "best" if int(budget) == r["best_budget"] else ""]) + " |")
        lines.append(f"| {e['name']}: full evaluation, {r['projected_checkpoints']} checkpoints at budget "
                     f"{r['best_budget']} + features | | | | | | | | | {f(r['projected_full_evaluation_min'])} | |")
    return "\n".join(lines) + "\n"
