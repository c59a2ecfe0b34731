"""After an evaluation: the per-checkpoint table of a run (<eval folder>/epochs.md|csv) and its model card."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from apa.reporting.runs import random_weights
from apa.reporting.table import (
    CI_KEYS,
    COVERAGE_KEYS,
    PAPER,
    PCC_P_KEYS,
    TABLE_COLUMNS,
    Column,
    Row,
    Table,
    coverage_columns,
    metric_columns,
    paper_label,
    paper_rows,
    random_weights_note,
    training_split_note,
    undefined_note,
    value,
)
from apa.run_folder import epoch_of, read_record, write_atomic


def _source(row: Row) -> str:
    return paper_label(row) if row.kind == PAPER else f"this run ({row.get('checkpoint')})"


def epoch_table(results: dict[str, dict]) -> Table:
    """One row per checkpoint of `results` (checkpoint name -> metrics, as the evaluation computed them: an
    undefined metric is NaN)."""
    rows = [Row({**metrics, "checkpoint": name, "epoch": epoch_of(name),
                 **{c: metrics.get(c, math.nan) for c in TABLE_COLUMNS}}) for name, metrics in results.items()]
    columns = [Column("source", _source), value("epoch"), *metric_columns(), *coverage_columns()]
    return Table(columns, rows, ("checkpoint", "epoch", *TABLE_COLUMNS, *CI_KEYS, *PCC_P_KEYS, *COVERAGE_KEYS))


def run_notes(run_dir: Path | None, results: dict[str, dict], own: bool = True) -> list[str]:
    """What a run's own facts add under its table (as comparison_notes says them for a sweep): random weights, and
    a test split that is its training split (`own`: evaluated on the run's own data, whose split its record names)."""
    record = read_record(run_dir) if run_dir is not None else None
    if record is None:
        return []
    model, data = record["config"].get("model", {}), record["config"].get("data") or {}
    notes = []
    if own and data.get("test_split") is not None and data.get("test_split") == data.get("train_split"):
        notes.append(training_split_note(marked=False))
    if random_weights(model):
        notes.append(random_weights_note(any(m.get("n_apa_parsed") == 0 for m in results.values()), marked=False))
    return notes


def epoch_text(results: dict[str, dict], run_dir: Path | None = None, own: bool = True) -> str:
    """The per-checkpoint table (Table 3's paper rows below ours) and its notes: epochs.md, and what evaluate.py
    prints."""
    table = epoch_table(results)
    with_paper = dataclasses.replace(table, rows=[*table.rows, *paper_rows()])
    why = undefined_note(table.rows, lambda row: row.get("checkpoint"))
    extra = [*run_notes(run_dir, results, own), *([why] if why else [])]
    return with_paper.markdown() + "\n" + " ".join(table.notes) + "\n" + "".join(f"\n{n}\n" for n in extra)


def write_epoch_table(results: dict[str, dict], eval_dir: Path, run_dir: Path | None = None,
                      own: bool = True) -> None:
    """<eval folder>/epochs.csv (our checkpoints) and epochs.md (epoch_text)."""
    write_atomic(eval_dir / "epochs.csv", epoch_table(results).csv())
    write_atomic(eval_dir / "epochs.md", epoch_text(results, run_dir, own))


def report_evaluation(results) -> str | None:
    """What follows an evaluation (apa.evaluation.evaluate.Results): with checkpoint=all, epochs.md|csv; for the
    run's own test data, its model card refreshed with the metrics now on disk. Returns the table to show (the
    caller prints it: evaluate.py at once, the sweep callback once at the end), None for re-scored predictions."""
    from apa.reporting.model_card import write_model_card

    if results.run_dir is None:
        return epoch_text(results) if results.checkpoint == "base_model" else None
    if results.checkpoint == "all":
        write_epoch_table(results, results.folder, results.run_dir, results.own)
    if results.own and read_record(results.run_dir) is not None:
        write_model_card(results.run_dir)
    return epoch_text(results, results.run_dir, results.own)
