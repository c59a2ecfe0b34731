"""The paper's Table 3 and the helpers that lay results out beside it (no heavy imports: compare uses it).

    apa table3 <sweep or run folders...> [--baseline <folder with metrics.json>] [--out DIR]

writes table3.md / table3.csv: the untrained baseline (epoch 0), every evaluated epoch of the LoRA-only and the
Unfreeze runs, each beside the paper's row for the same setting and epoch.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from apa.metrics import coverage, fmt  # noqa: F401  (re-exported: the tables' cell formats)

# arXiv 2509.02915, Table 3, LoRA-only rows: PCC acc/flu/pros/total, WER, PER, F1 (P, R). Epoch 0 = no training.
PAPER_TABLE3 = {
    0: (-0.041, -0.017, -0.0493, -0.104, 0.97, 0.792, 0.143, 0.154, 0.134),  # prosodic printed as -0.0493
    1: (0.547, 0.585, 0.567, 0.544, 0.15, 0.137, 0.686, 0.689, 0.682),
    2: (0.637, 0.726, 0.709, 0.662, 0.139, 0.118, 0.722, 0.725, 0.719),
    3: (0.656, 0.727, 0.711, 0.675, 0.14, 0.114, 0.724, 0.728, 0.721),
    4: (0.645, 0.733, 0.714, 0.668, 0.148, 0.121, 0.721, 0.723, 0.72),
}
# Table 3's "Unfreeze" row (LoRA + audio encoder + projector trained): epoch 4 only; P and R are not given.
PAPER_UNFREEZE = {4: (0.743, 0.717, 0.704, 0.666, 0.142, 0.142, 0.667, None, None)}
TABLE_COLUMNS = ("pcc_accuracy", "pcc_fluency", "pcc_prosodic", "pcc_total", "wer", "per",
                 "mdd_f1", "mdd_precision", "mdd_recall")
# What every table calls `mdd_f1`, and the note under it (docs/metrics.md, MDD)
MDD_F1_LABEL = "MDD F1 (standard TA/FR/FA/TR hierarchy)"
TABLE_HEADERS = ("PCC acc", "PCC flu", "PCC pros", "PCC total", "WER", "PER", MDD_F1_LABEL, "MDD P", "MDD R")
TABLE_NOTE = ("Our rows: MDD P/R/F1 counted as Fu et al.'s scorer counts them (docs/metrics.md). Paper rows: the "
              "paper's own F1 (P, R), whose definition is unpublished; no metric here claims to be it.")

# How much of the test split each row scored (metrics.json's n_*_scored / n_*_in_split)
COVERAGE_KEYS = ("n_utterances_scored", "n_utterances_in_split", "n_phones_scored", "n_phones_in_split")
COVERAGE_HEADERS = ("utterances scored", "phones scored")
COVERAGE_NOTE = ("Scored: utterances and canonical phones scored / in the test split ('?': split size not recorded, "
                 "as in evaluations older than test_split.json; 'limit N': data.limit made the split its first N "
                 "utterances).")


def epoch_of(checkpoint: str) -> str:
    """'checkpoint-epoch-2' -> '2'; 'final_model' -> 'final'."""
    return checkpoint.rsplit("-", 1)[-1] if checkpoint.startswith("checkpoint-epoch-") else "final"


# ---------------------------------------------------------------------------------------------------------------
# table3.md: our runs laid out as the paper's Table 3
# ---------------------------------------------------------------------------------------------------------------

LORA_ONLY, UNFREEZE, NO_TRAINING = "LoRA-only", "Unfreeze", "no training"
BASELINE_DIR = "baseline"  # <sweep or run>/baseline/base_model/metrics.json: the untrained model (epoch 0)
SCORED_COLUMNS = ("utterances scored", "phones scored")


def scored(metrics: dict, what: str) -> str:
    """'2500/2500': how many utterances (phones) were scored out of how many the test split has."""
    done, total = metrics.get(f"n_{what}_scored"), metrics.get(f"n_{what}_in_split")
    if done is None:
        return "n/a"
    return f"{done}/{total if total is not None else '?'}"


def setting_of(record: dict) -> str:
    """A run's Table 3 setting, from what it trained (training_config.json), not from its name."""
    return UNFREEZE if record["config"]["model"].get("unfreeze") else LORA_ONLY


def _run_rows(run: Path) -> list[dict]:
    record = json.loads((run / "training_config.json").read_text())
    rows = []
    for metrics_file in sorted((run / "eval").glob("checkpoint-epoch-*/metrics.json"),
                               key=lambda p: int(epoch_of(p.parent.name))):
        rows.append({"setting": setting_of(record), "epoch": int(epoch_of(metrics_file.parent.name)),
                     "source": run.name, "metrics": json.loads(metrics_file.read_text())})
    return rows


def _baseline_metrics(folder: Path) -> dict | None:
    for candidate in (folder / "metrics.json", folder / "base_model" / "metrics.json"):
        if candidate.is_file():
            return json.loads(candidate.read_text())
    return None


def table3_rows(runs: list[Path], baseline: Path | None) -> list[dict]:
    """Rows in the paper's order: epoch 0, then LoRA-only epochs, then Unfreeze epochs; ours first, paper's after."""
    ours = [row for run in runs for row in _run_rows(run)]
    base = _baseline_metrics(baseline) if baseline else None
    if base is not None:
        ours.append({"setting": NO_TRAINING, "epoch": 0, "source": "this project (untrained)", "metrics": base})
    paper = [{"setting": NO_TRAINING, "epoch": 0, "source": "paper",
              "metrics": dict(zip(TABLE_COLUMNS, PAPER_TABLE3[0], strict=True))}]
    paper += [{"setting": LORA_ONLY, "epoch": e, "source": "paper", "metrics": dict(zip(TABLE_COLUMNS, v, strict=True))}
              for e, v in PAPER_TABLE3.items() if e]
    paper += [{"setting": UNFREEZE, "epoch": e, "source": "paper", "metrics": dict(zip(TABLE_COLUMNS, v, strict=True))}
              for e, v in PAPER_UNFREEZE.items()]
    order = {NO_TRAINING: 0, LORA_ONLY: 1, UNFREEZE: 2}
    rows = ours + paper
    return sorted(rows, key=lambda r: (order[r["setting"]], r["epoch"], r["source"] == "paper", r["source"]))


def data_line(runs: list[Path]) -> str:
    """Which dataset (revision, label release) the runs trained on, from their records; several are named as such."""
    from apa.data.release import describe
    from apa.run_folder import saved_record

    described = sorted({describe((saved_record(run) or {}).get("data", {}).get("dataset")) for run in runs})
    if len(described) > 1:
        return "**The runs trained on different data**: " + "; ".join(described) + "."
    return "Data: " + (described[0] if described else "no run") + "."


def write_table3(runs: list[Path], baseline: Path | None, out: Path) -> str:
    """table3.md and table3.csv in `out`; returns the markdown table."""
    rows = table3_rows(runs, baseline)
    head = ["setting", "epoch", "source", *TABLE_HEADERS, *SCORED_COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        m = r["metrics"]
        cells = [r["setting"], str(r["epoch"]), r["source"], *(fmt(m.get(c)) for c in TABLE_COLUMNS)]
        cells += ["", ""] if r["source"] == "paper" else [scored(m, "utterances"), scored(m, "phones")]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    missing = [] if any(r["setting"] == NO_TRAINING and r["source"] != "paper" for r in rows) else [
        "No untrained baseline was found (evaluate it with `python evaluate.py model=... data=...`, or pass "
        "--baseline)."]
    out.mkdir(parents=True, exist_ok=True)
    (out / "table3.md").write_text(
        "# Table 3, reproduced\n\nThe paper's Table 3 (arXiv 2509.02915): PCC per aspect, WER, PER and F1 (P, R) per "
        "epoch, for the LoRA-only and the Unfreeze settings; each of our rows above the paper's for the same setting "
        f"and epoch. {TABLE_NOTE} {' '.join(missing)}\n\n{data_line(runs)}\n\n" + table)
    with (out / "table3.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["setting", "epoch", "source", *TABLE_COLUMNS, "n_utterances_scored", "n_utterances_in_split",
                         "n_phones_scored", "n_phones_in_split"])
        for r in rows:
            m = r["metrics"]
            writer.writerow([r["setting"], r["epoch"], r["source"], *(m.get(c) for c in TABLE_COLUMNS),
                             *(m.get(k) for k in ("n_utterances_scored", "n_utterances_in_split", "n_phones_scored",
                                                  "n_phones_in_split"))])
    return table


def main(argv: list[str] | None = None) -> None:
    from apa.errors import one_line_errors

    one_line_errors(_main)(argv)


def _main(argv: list[str] | None) -> None:
    from apa.reporting.compare import find_runs

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="a sweep folder, or run folders")
    parser.add_argument("--baseline", type=Path, help="folder of the untrained model's metrics.json "
                        "(default: <first path>/baseline)")
    parser.add_argument("--out", type=Path, help="where to write table3.md/csv (default: the first path)")
    args = parser.parse_args(argv)
    runs = find_runs(args.paths)
    print(write_table3(runs, args.baseline or args.paths[0] / BASELINE_DIR, args.out or args.paths[0]))


if __name__ == "__main__":
    main()
