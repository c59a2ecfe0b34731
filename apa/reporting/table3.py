"""Our runs laid out as the paper's Table 3.

    apa table3 <sweep or run folders...> [--baseline <folder with metrics.json>] [--out DIR]

writes table3.md / table3.csv: the untrained baseline (epoch 0), every evaluated epoch of the LoRA-only and the
Unfreeze runs, each beside the paper's row for the same setting and epoch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from apa.data.release import describe
from apa.errors import one_line_errors
from apa.reporting.confidence import DIFFERENCE_NOTE, compare_evaluations, difference_table, verdicts
from apa.reporting.table import (
    CI_KEYS,
    COVERAGE_KEYS,
    LORA_ONLY,
    NO_TRAINING,
    PAPER,
    PCC_P_KEYS,
    TABLE_COLUMNS,
    UNFREEZE,
    Column,
    Row,
    Table,
    coverage_columns,
    metric_columns,
    paper_rows,
    value,
)
from apa.run_folder import (
    METRICS,
    epoch_of,
    evaluations,
    find_runs,
    output_folder,
    read_metrics,
    read_record,
    write_atomic,
)

BASELINE_DIR = "baseline"  # <sweep or run>/baseline/base_model/: the untrained model's evaluation (epoch 0)
KEYS = ("setting", "epoch", "source", *TABLE_COLUMNS, *CI_KEYS, *PCC_P_KEYS, *COVERAGE_KEYS)  # table3.csv's columns


def setting_of(record: dict) -> str:
    """A run's Table 3 setting, from what it trained (its run record), not from its name."""
    return UNFREEZE if record["config"]["model"].get("unfreeze") else LORA_ONLY


def run_rows(run: Path) -> list[Row]:
    """A row per evaluated epoch checkpoint of `run`."""
    setting = setting_of(read_record(run))
    return [Row({**read_metrics(e), "setting": setting, "epoch": int(epoch_of(e.name)), "source": run.name})
            for e in evaluations(run) if epoch_of(e.name).isdigit()]


def baseline_metrics(folder: Path) -> dict | None:
    """The untrained model's metrics: `folder` is its evaluation, or holds it (as <sweep>/baseline/base_model/)."""
    for candidate in (folder, folder / "base_model"):
        if (candidate / METRICS).is_file():
            return read_metrics(candidate)
    return None


def table3_rows(runs: list[Path], baseline: Path | None) -> list[Row]:
    """Rows in the paper's order: epoch 0, then LoRA-only epochs, then Unfreeze epochs; ours first, paper's after."""
    ours = [row for run in runs for row in run_rows(run)]
    base = baseline_metrics(baseline) if baseline else None
    if base is not None:
        ours.append(Row({**base, "setting": NO_TRAINING, "epoch": 0, "source": "this project (untrained)"}))
    order = {NO_TRAINING: 0, LORA_ONLY: 1, UNFREEZE: 2}
    return sorted(ours + paper_rows(LORA_ONLY, UNFREEZE),
                  key=lambda r: (order[r.get("setting")], r.get("epoch"), r.kind == PAPER, r.get("source")))


SHORT = {"pcc_accuracy": "acc", "pcc_fluency": "flu", "pcc_prosodic": "pros", "pcc_total": "total", "wer": "WER",
         "per": "PER", "mdd_f1": "F1", "mdd_precision": "P", "mdd_recall": "R"}
INSIDE_NOTE = ("Paper inside our 95 % CI: of the paper's figures for the same setting and epoch, how many lie inside "
               "our row's interval, and which: the plain answer to \"did we reproduce it?\" (few test speakers give "
               "wide intervals; docs/metrics.md, Uncertainty).")


def paper_inside(row: Row, paper: dict[tuple, Row]) -> str:
    """'3/9: acc, flu, WER' for one of our rows: the paper's values (same setting and epoch) inside our intervals."""
    theirs = paper.get((row.get("setting"), row.get("epoch")))
    if row.kind == PAPER or theirs is None or not row.get("ci95"):
        return ""
    compared = [k for k in TABLE_COLUMNS if theirs.get(k) is not None and row.get(f"{k}_ci95_low") is not None]
    inside = [k for k in compared if row.get(f"{k}_ci95_low") <= theirs.get(k) <= row.get(f"{k}_ci95_high")]
    return f"{len(inside)}/{len(compared)}" + (": " + ", ".join(SHORT[k] for k in inside) if inside else "")


def setting_differences(runs: list[Path]) -> list[Row]:
    """Unfreeze minus LoRA-only at each epoch both evaluated, run against run with the same seed (apa.reporting.
    confidence: paired on the same test set)."""
    by_setting: dict[str, dict] = {LORA_ONLY: {}, UNFREEZE: {}}
    for run in runs:
        record = read_record(run)
        by_setting[setting_of(record)][record["config"].get("seed")] = run
    rows = []
    for seed, unfreeze in by_setting[UNFREEZE].items():
        lora = by_setting[LORA_ONLY].get(seed)
        if lora is None:
            continue
        epochs_l = {e.name: e for e in evaluations(lora) if epoch_of(e.name).isdigit()}
        for e in evaluations(unfreeze):
            if e.name in epochs_l:
                rows += compare_evaluations(e, epochs_l[e.name],
                                            f"{UNFREEZE} − {LORA_ONLY}, epoch {epoch_of(e.name)} (seed {seed})")
    return rows


def data_line(runs: list[Path]) -> str:
    """Which dataset (revision, label release) the runs trained on, from their records; several are named as such."""
    described = sorted({describe((read_record(run) or {}).get("data", {}).get("dataset")) for run in runs})
    if len(described) > 1:
        return "**The runs trained on different data**: " + "; ".join(described) + "."
    return "Data: " + (described[0] if described else "no run") + "."


def write_table3(runs: list[Path], baseline: Path | None, out: Path) -> str:
    """table3.md and table3.csv in `out`; returns the Markdown table."""
    rows = table3_rows(runs, baseline)
    paper = {(r.get("setting"), r.get("epoch")): r for r in rows if r.kind == PAPER}
    inside = Column("paper inside our 95 % CI", lambda row: paper_inside(row, paper), note=INSIDE_NOTE)
    table = Table([value("setting"), value("epoch"), value("source"), *metric_columns(), inside, *coverage_columns()],
                  rows, KEYS)
    differences = setting_differences(runs)
    missing = [] if any(r.get("setting") == NO_TRAINING and r.kind != PAPER for r in rows) else [
        "No untrained baseline was found (evaluate it with `python evaluate.py model=... data=...`, or pass "
        "--baseline)."]
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "table3.md",
                 "# Table 3, reproduced\n\nThe paper's Table 3 (arXiv 2509.02915): PCC per aspect, WER, PER and F1 "
                 "(P, R) per epoch, for the LoRA-only and the Unfreeze settings; each of our rows above the paper's "
                 f"for the same setting and epoch. {' '.join([*table.notes, *missing])}\n\n{data_line(runs)}\n\n"
                 + table.markdown() + _differences_section(differences))
    write_atomic(out / "table3.csv", table.csv())
    if differences:
        write_atomic(out / "table3_differences.csv", difference_table(differences).csv())
    return table.markdown() + "".join(f"\n{line}" for line in verdicts(differences))


def _differences_section(rows: list[Row]) -> str:
    if not rows:
        return ""
    return (f"\n## {UNFREEZE} − {LORA_ONLY}, epoch by epoch\n\n{DIFFERENCE_NOTE}\n\n"
            + difference_table(rows).markdown())


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="a sweep folder, or run folders")
    parser.add_argument("--baseline", type=Path, help="folder of the untrained model's evaluation "
                        "(default: <first path>/baseline)")
    parser.add_argument("--out", type=Path, help="where to write table3.md/csv (default: the first path)")
    args = parser.parse_args(argv)
    runs = find_runs(args.paths)
    print(write_table3(runs, args.baseline or args.paths[0] / BASELINE_DIR, output_folder(args.out or args.paths[0])))


if __name__ == "__main__":
    main()
