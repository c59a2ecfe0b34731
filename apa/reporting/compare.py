"""Compare run folders: a table per run and epoch (with the paper's rows), training-loss curves, metric-per-epoch
lines and human-vs-predicted scatter plots.

    apa compare outputs/multirun/<sweep>          every run folder below it
    apa compare <run> <run> ... --out <dir>
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from apa.data.records import APA_ASPECTS  # noqa: E402
from apa.data.release import describe as describe_data  # noqa: E402
from apa.errors import UserError, one_line_errors
from apa.reporting.table3 import (  # noqa: E402
    COVERAGE_HEADERS,
    COVERAGE_NOTE,
    MDD_F1_LABEL,
    PAPER_TABLE3,
    TABLE_COLUMNS,
    TABLE_HEADERS,
    TABLE_NOTE,
    coverage,
    epoch_of,
    fmt,
)
from apa.run_folder import write_atomic

EPOCH_METRICS = ("pcc_total", "wer", "per", "mdd_f1")


def find_runs(paths: list[Path]) -> list[Path]:
    runs = []
    for path in paths:
        if (path / "training_config.json").exists():
            runs.append(path)
        else:
            runs += sorted(p.parent for p in path.glob("*/training_config.json"))
    if not runs:
        raise UserError(f"no run folders (with training_config.json) in {', '.join(map(str, paths))}")
    return runs


def _checkpoint_order(name: str) -> float:
    epoch = epoch_of(name)
    return float(epoch) if epoch != "final" else math.inf


NOT_EVALUATED = "(not evaluated)"
RANDOM_NOTE = ("Runs marked † used a generated miniature with random weights (model=tiny / phi4mm_random): their "
               "answers rarely parse, so PCC and MDD are n/a (undefined), as expected. `python train.py "
               "experiment=overfit` shows the pipeline learn (parse rate 1.0, PCC 1.0 on its training utterances).")


def evaluated_data(eval_dir: Path) -> dict | None:
    """The dataset an evaluation folder was scored on (fingerprint.json's `data`: revision and label release)."""
    path = eval_dir / "fingerprint.json"
    try:
        return json.loads(path.read_text()).get("data") if path.is_file() else None
    except ValueError:
        return None


def test_set_digest(predictions: Path) -> str | None:
    """A short digest of what a predictions file was scored against: its (id, task, reference) triples, and the
    dataset's revision and label release (two label releases are two test sets, even where their references agree)."""
    if not predictions.is_file():
        return None
    data = evaluated_data(predictions.parent) or {}
    triples = [json.dumps({k: data.get(k) for k in ("hub_id", "revision", "labels")}, sort_keys=True)]
    for line in predictions.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        triples.append(json.dumps([rec.get("id"), rec.get("task"), rec.get("reference")], sort_keys=True))
    return hashlib.sha256("\n".join(sorted(triples)).encode()).hexdigest()[:10]


def collect(run: Path) -> list[dict]:
    """One row per evaluated checkpoint of `run` (or one row, marked, when it was never evaluated)."""
    record = json.loads((run / "training_config.json").read_text())
    model = record["config"].get("model", {})
    common = {
        "run": run.name,
        "lora": record["config"]["lora"]["name"],
        "trainable_params": record["parameters"]["trainable"],
        "train_seconds": record.get("train_seconds"),
        "final_train_loss": record.get("final_train_loss"),
        "random_weights": bool(model.get("tiny") or model.get("random")),
    }
    evaluated = sorted((run / "eval").glob("*/metrics.json"), key=lambda p: _checkpoint_order(p.parent.name))
    if not evaluated:
        return [{**common, "checkpoint": NOT_EVALUATED, "epoch": ""}]
    return [{**common, "checkpoint": m.parent.name, "epoch": epoch_of(m.parent.name),
             "test_set": test_set_digest(m.parent / "predictions.jsonl"),
             "data": describe_data(evaluated_data(m.parent)), **json.loads(m.read_text())}
            for m in evaluated]


def _save_figure(fig, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=100, format="png")
    os.replace(tmp, path)


def training_loss(run: Path) -> tuple[list[int], list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps, values = [], []
    for events in sorted((run / "logs").glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        if "train/loss" in acc.Tags().get("scalars", []):
            for e in acc.Scalars("train/loss"):
                steps.append(e.step)
                values.append(e.value)
    return steps, values


def write_tables(rows: list[dict], out: Path) -> str:
    """comparison.csv and comparison.md, each written whole to a temporary file and renamed into place."""
    columns = ["run", "lora", "checkpoint", "epoch", "trainable_params", "train_seconds", "final_train_loss"]
    metric_keys = sorted(({k for r in rows for k in r} | set(TABLE_COLUMNS)) - set(columns))  # paper rows need them
    test_sets = sorted({r["test_set"] for r in rows if r.get("test_set")})
    label = {digest: chr(ord("A") + i) for i, digest in enumerate(test_sets)}
    csv_text = io.StringIO()
    with csv_text as f:
        writer = csv.DictWriter(f, fieldnames=columns + metric_keys)
        writer.writeheader()
        writer.writerows(rows)
        for epoch, values in PAPER_TABLE3.items():
            writer.writerow({"run": "paper (arXiv 2509.02915, LoRA-only)", "lora": "speech LoRA", "epoch": epoch,
                             **dict(zip(TABLE_COLUMNS, values, strict=True))})
        write_atomic(out / "comparison.csv", f.getvalue())
    several = len(test_sets) > 1
    head = ["run", "lora", "epoch", "trainable", "train s", "final loss", *TABLE_HEADERS, *COVERAGE_HEADERS,
            *(["test set"] if several else [])]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        evaluated = r["checkpoint"] != NOT_EVALUATED
        scored = coverage(r) if evaluated else ("", "")  # a run never evaluated has no metrics
        name = r["run"] + (" †" if r.get("random_weights") else "")
        epoch = str(r["epoch"]) if evaluated else NOT_EVALUATED
        lines.append("| " + " | ".join([name, r["lora"], epoch, f"{r['trainable_params']:,}",
                                        fmt(r["train_seconds"]), fmt(r["final_train_loss"]),
                                        *(fmt(r.get(c)) if evaluated else "" for c in TABLE_COLUMNS), *scored,
                                        *([label.get(r.get("test_set"), "")] if several else [])]) + " |")
    for epoch, values in PAPER_TABLE3.items():
        lines.append("| paper | speech LoRA | " + f"{epoch} | | | | " + " | ".join(fmt(v) for v in values) + " |"
                     + " |" * (len(COVERAGE_HEADERS) + several))
    notes = []
    if any(r["checkpoint"] == NOT_EVALUATED for r in rows):
        notes.append(f"Rows marked {NOT_EVALUATED} have no metrics yet: `python evaluate.py run_dir=<run> "
                     "checkpoint=all`.")
    if several:
        data_of = {r.get("test_set"): r.get("data") for r in rows}
        sets = "; ".join(f"{label[d]}: {data_of[d]}" for d in test_sets)
        notes.append(f"**These rows were scored on {len(test_sets)} different test sets** (column `test set`: the "
                     "same letter, the same test utterances, references, dataset revision and label release); rows "
                     f"of different sets are not comparable. {sets}.")
    else:
        described = sorted({r["data"] for r in rows if r.get("data")})
        if described:
            notes.append("Test data: " + "; ".join(described) + ".")
    if any(r.get("random_weights") for r in rows):
        notes.append(RANDOM_NOTE)
    table = "\n".join(lines) + "\n" + ("\n" + "\n\n".join(notes) + "\n" if notes else "")
    write_atomic(out / "comparison.md",
                  "# Run comparison\n\nOne row per run and evaluated checkpoint; the paper's Table 3 (LoRA-only) "
                  f"below. {TABLE_NOTE} {COVERAGE_NOTE}\n\n" + table)
    return table


def plot_losses(runs: list[Path], out: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for run in runs:
        steps, values = training_loss(run)
        ax.plot(steps, values, marker=".", label=run.name)
    ax.set(xlabel="optimizer step", ylabel="training loss", title="Training loss")
    ax.legend()
    fig.tight_layout()
    _save_figure(fig, out / "training_loss.png")
    plt.close(fig)


def plot_epochs(rows: list[dict], out: Path) -> None:
    fig, axes = plt.subplots(1, len(EPOCH_METRICS), figsize=(4 * len(EPOCH_METRICS), 3.5))
    for ax, metric in zip(axes, EPOCH_METRICS, strict=True):
        for run in sorted({r["run"] for r in rows}):
            points = [(int(r["epoch"]), math.nan if r.get(metric) is None else r[metric]) for r in rows
                      if r["run"] == run and str(r["epoch"]).isdigit()]  # null in metrics.json: undefined
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=run)
        paper = [(e, v[TABLE_COLUMNS.index(metric)]) for e, v in PAPER_TABLE3.items()]
        ax.plot(*zip(*paper, strict=True), linestyle="--", color="grey", label="paper")
        ax.set(xlabel="epoch", title=MDD_F1_LABEL if metric == "mdd_f1" else metric)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    _save_figure(fig, out / "metrics_per_epoch.png")
    plt.close(fig)


def plot_scatter(run: Path, out: Path) -> Path | None:
    predictions = run / "eval" / "final_model" / "predictions.jsonl"
    if not predictions.exists():
        return None
    records = [json.loads(line) for line in predictions.read_text().splitlines() if line.strip()]
    apa = [r for r in records if r["task"] == "apa" and r["prediction"]]
    fig, axes = plt.subplots(1, len(APA_ASPECTS), figsize=(3.2 * len(APA_ASPECTS), 3.2))
    for ax, aspect in zip(axes, APA_ASPECTS, strict=True):
        ax.scatter([r["reference"][aspect] for r in apa], [r["prediction"][aspect] for r in apa], alpha=0.5, s=12)
        ax.plot([0, 10], [0, 10], color="grey", linewidth=0.8)
        ax.set(xlim=(-0.5, 10.5), ylim=(-0.5, 10.5), xlabel="human", ylabel="predicted", title=aspect)
    fig.suptitle(f"{run.name}: {len(apa)} parsed APA answers")
    fig.tight_layout()
    path = out / f"scatter_{run.name}.png"
    _save_figure(fig, path)
    plt.close(fig)
    return path


def compare(paths: list[Path], out: Path | None = None) -> str:
    runs = find_runs(paths)
    out = out or (paths[0] if len(paths) == 1 else paths[0].parent)
    out.mkdir(parents=True, exist_ok=True)
    rows = [row for run in runs for row in collect(run)]
    table = write_tables(rows, out)
    plot_losses(runs, out)
    plot_epochs(rows, out)
    for run in runs:
        plot_scatter(run, out)
    return table


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="a sweep folder, or run folders")
    parser.add_argument("--out", type=Path, help="where to write comparison.md/csv and the plots")
    args = parser.parse_args(argv)
    print(compare(args.paths, args.out))


if __name__ == "__main__":
    main()
