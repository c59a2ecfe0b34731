"""After an evaluation: the per-checkpoint table of a run (<eval folder>/epochs.md|csv) and its model card."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from apa.metrics import coverage, fmt
from apa.reporting.table3 import (
    COVERAGE_HEADERS,
    COVERAGE_KEYS,
    COVERAGE_NOTE,
    PAPER_TABLE3,
    TABLE_COLUMNS,
    TABLE_HEADERS,
    TABLE_NOTE,
)
from apa.run_folder import epoch_of, read_record, write_atomic


def write_epoch_table(results: dict[str, dict], eval_dir: Path) -> None:
    """<eval folder>/epochs.csv and epochs.md: one row per checkpoint, Table 3's paper rows beside."""
    header = ["checkpoint", "epoch", *TABLE_COLUMNS, *COVERAGE_KEYS]
    rows = [[name, epoch_of(name), *(results[name].get(c, math.nan) for c in TABLE_COLUMNS),
             *(results[name].get(c) for c in COVERAGE_KEYS)] for name in results]
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    write_atomic(eval_dir / "epochs.csv", text.getvalue())
    head = ("source", "epoch", *TABLE_HEADERS, *COVERAGE_HEADERS)
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    lines += [f"| this run ({name}) | {epoch_of(name)} | "
              + " | ".join([*(fmt(results[name].get(c)) for c in TABLE_COLUMNS), *coverage(results[name])]) + " |"
              for name in results]
    lines += [f"| paper, LoRA-only | {epoch} | " + " | ".join(fmt(v) for v in values) + " |" + " |" * len(
        COVERAGE_HEADERS) for epoch, values in PAPER_TABLE3.items()]
    write_atomic(eval_dir / "epochs.md", "\n".join(lines) + "\n\n" + TABLE_NOTE + " " + COVERAGE_NOTE + "\n")


def report_evaluation(results) -> None:
    """What follows an evaluation (apa.evaluation.evaluate.Results): with checkpoint=all, epochs.md|csv (printed);
    for the run's own test data, its model card refreshed with the metrics now on disk."""
    from apa.reporting.model_card import write_model_card

    if results.run_dir is None:
        return
    if results.checkpoint == "all":
        write_epoch_table(results, results.folder)
        print((results.folder / "epochs.md").read_text())
    if results.own and read_record(results.run_dir) is not None:
        write_model_card(results.run_dir)
