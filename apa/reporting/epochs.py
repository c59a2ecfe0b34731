"""After an evaluation: the per-checkpoint table of a run (<eval folder>/epochs.md|csv) and its model card."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

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


def write_epoch_table(results: dict[str, dict], eval_dir: Path) -> None:
    """<eval folder>/epochs.csv (our checkpoints) and epochs.md (Table 3's paper rows below them)."""
    table = epoch_table(results)
    write_atomic(eval_dir / "epochs.csv", table.csv())
    with_paper = dataclasses.replace(table, rows=[*table.rows, *paper_rows()])
    write_atomic(eval_dir / "epochs.md", with_paper.markdown() + "\n" + " ".join(table.notes) + "\n")


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
