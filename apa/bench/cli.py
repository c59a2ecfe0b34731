"""Benchmark the composed training config: real optimizer steps, or the data pipeline alone.

    apa bench experiment=demo                                   tiny model on the CPU
    apa bench model=phi4mm_random data=sample lora=fresh_r64 trainer.per_device_train_batch_size=8
    apa bench experiment=demo --mode data --workers 0 1 2       collate throughput per worker
    apa bench model=tiny --mode sampler                         task mix and padding per training order
    apa bench experiment=demo --mode generate                   evaluation's generation, forced lengths
    apa bench model=phi4mm_random data=sample --mode cases --cases cases.txt --results out.jsonl
                                                                          a matrix in one process (scripts/gpu_bench.sh)
    apa bench ... --json out.json                               the figures as JSON too

Train mode runs `--warmup` + `--steps` optimizer steps of the very trainer train.py builds (checkpoints and logging
off) and reports steps/s, samples/s, tokens/s (text and audio), the padding share of the batches (as sampled, and
with the other sampling strategy for comparison), peak memory (CUDA, else the process's RSS), MFU on a GPU, and the
projected wall time of the composed trainer config's epochs over the full corpus (2 x 2500 examples an epoch; 4 for
trainer=paper_table3) at the measured throughput and token lengths. MFU counts the FLOPs listed in
`apa.bench.flops.flop_breakdown`.

Sampler mode needs no weights, only the model's tokenizer (to count the configured prompts' tokens): on a synthetic
corpus of the full training set's size and length distribution (apa.bench.synthetic.synthetic_corpus) it counts, per
training order (the trainer's `group_by_length` sampler, Hugging Face's stock length grouping it replaced, plain
random), the padding share of the micro-batches and the share of APA examples in each optimizer step, with the
composed config's batch size, accumulation and seed.

Generate mode times evaluation's own batching and generation (apa.evaluation.predictions.plan_batches,
apa.sft.generation) on the test split's prompts at several token budgets, each answer forced to the token length of
its reference answer (random weights never stop early), and projects a full test split (2 x 2500 answers) and a
checkpoint=all evaluation.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from apa.bench.cases import run_cases, summarize
from apa.bench.common import fmt
from apa.bench.data import bench_data
from apa.bench.flops import peak_tflops
from apa.bench.generate import bench_generate, print_generate
from apa.bench.sampler import bench_sampler, print_sampler_table
from apa.bench.train import bench_training
from apa.command_line import check_renamed_choices
from apa.errors import one_line_errors
from apa.run_folder import write_atomic

MODES = ("train", "data", "sampler", "generate", "cases")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the train config (as for train.py)")
    parser.add_argument("--mode", choices=MODES, default="train")
    parser.add_argument("--steps", type=int, default=6, help="measured optimizer steps (train mode)")
    parser.add_argument("--warmup", type=int, default=2, help="optimizer steps run before measuring")
    parser.add_argument("--workers", type=int, nargs="+", default=[0], help="dataloader workers to try (data mode)")
    parser.add_argument("--batches", type=int, default=20, help="batches to collate per setting (data mode)")
    parser.add_argument("--epochs", type=int, default=20, help="epochs of training order to count (sampler mode)")
    parser.add_argument("--world-size", type=int, default=1, help="data-parallel ranks (sampler mode)")
    parser.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, for MFU")
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
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_intermixed_args(argv)


def print_figures(result: dict) -> None:
    """One figure a line; a dict of figures one line per item (train and data modes)."""
    for key, value in result.items():
        if isinstance(value, dict):
            for sub, item in value.items():
                shown = {k: fmt(v) for k, v in item.items()} if isinstance(item, dict) else fmt(item)
                print(f"{key}.{sub!s:<34} {shown}")
        else:
            print(f"{key:<42} {fmt(value)}")


PRINTERS = {"sampler": print_sampler_table, "generate": print_generate}  # the rest: print_figures


def run_mode(args: argparse.Namespace) -> dict | list:
    """The figures of the mode (cases mode: its entries, one per case)."""
    if args.mode == "data":
        return bench_data(args.overrides, args.workers, args.batches)
    if args.mode == "sampler":
        return bench_sampler(args.overrides, args.epochs, args.world_size)
    peak = peak_tflops(args.peak_tflops)
    train = {"steps": args.steps, "warmup": args.warmup, "peak": peak}
    generate = {"budgets": args.budgets, "answers": args.answers, "peak": peak, "batch_size": args.batch_cap,
                "cache_implementation": args.cache_implementation, "compile": args.compile}
    if args.mode == "train":
        return bench_training(args.overrides, **train)
    if args.mode == "generate":
        return bench_generate(args.overrides, **generate)
    if not (args.cases and args.results):
        raise SystemExit("--mode cases needs --cases and --results")
    return run_cases(args.overrides, args.cases, args.results, args.summary, args.deadline_s, train, generate)


@one_line_errors
def main(argv: list[str] | None = None) -> dict | list:
    """`apa bench`: run one mode and print its figures (cases: the summary tables); --json writes them too."""
    args = parse_args(argv)
    check_renamed_choices(args.overrides)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    result = run_mode(args)
    if args.mode == "cases":
        print(summarize(result))
        return result
    print(f"\n== apa.bench.cli ({args.mode})")
    PRINTERS.get(args.mode, print_figures)(result)
    if args.json:
        write_atomic(args.json, json.dumps(result, indent=2, default=str))
    return result


if __name__ == "__main__":
    main()
