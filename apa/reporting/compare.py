"""Compare run folders: comparison.md|csv (a row per run and evaluated checkpoint, the paper's Table 3 below), and
PNG plots: training loss, metrics per epoch, human-vs-predicted scores.

    apa compare outputs/multirun/<sweep>          every run folder below it
    apa compare <run> <run> ... --out <dir>
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from apa.data.records import APA_ASPECTS  # noqa: E402
from apa.errors import one_line_errors  # noqa: E402
from apa.reporting.confidence import (  # noqa: E402
    DIFFERENCE_NOTE,
    REPEATS_TITLE,
    configurations,
    difference_rows,
    difference_table,
    repeats_note,
    seed_table,
    verdicts,
)
from apa.reporting.curves import epoch_figure, loss_figure, loss_series, save_png  # noqa: E402
from apa.reporting.runs import NOT_EVALUATED, collect, read_answers, run_labels  # noqa: E402
from apa.reporting.table import (  # noqa: E402
    CI_KEYS,
    OURS,
    PAPER,
    RANDOM_MARK,
    TABLE_COLUMNS,
    TRAINING_SPLIT_MARK,
    UNEVALUATED,
    Column,
    Row,
    Table,
    coverage_columns,
    metric_columns,
    number,
    paper_label,
    paper_rows,
    random_weights_note,
    training_split_note,
    undefined_note,
    value,
)
from apa.run_folder import EVAL_DIR, FINAL_MODEL, PREDICTIONS, find_runs, output_folder, write_atomic  # noqa: E402

EPOCH_METRICS = ("pcc_total", "wer", "per", "mdd_f1")  # metrics_per_epoch.png
PAPER_LORA = "speech LoRA"  # the paper's rows in the comparison: run "paper (arXiv 2509.02915, <setting>)"
# comparison.csv's first columns; every metrics.json key follows, sorted
RUN_KEYS = ("run", "lora", "checkpoint", "epoch", "trainable_params", "train_seconds", "final_train_loss")
NESTED_KEYS = {"ci95", "ci_method"}  # metrics.json's objects: the CSV spells the intervals as <metric>_ci95_low|high


def comparison_rows(rows: list[dict]) -> list[Row]:
    """`rows` (apa.reporting.runs.collect's) as table rows, then all of the paper's Table 3: LoRA-only epochs 0-4,
    Unfreeze epochs 1-4."""
    ours = [Row(r, UNEVALUATED if r["checkpoint"] == NOT_EVALUATED else OURS) for r in rows]
    return ours + [Row({**p.values, "run": paper_label(p), "lora": PAPER_LORA}, PAPER) for p in paper_rows()]


def _run_name(row: Row) -> str:
    if row.kind == PAPER:
        return paper_label(row)
    marks = [mark for mark, key in ((RANDOM_MARK, "random_weights"), (TRAINING_SPLIT_MARK, "training_split"))
             if row.get(key)]
    return " ".join([row.get("run"), *marks])


def run_column() -> Column:
    """The run's name with its marks: † random weights, § scored on its own training split (comparison_notes)."""
    return Column("run", _run_name)


def test_set_columns(rows: list[dict]) -> list[Column]:
    """Where the rows were scored on several test sets: a column naming each by a letter (scored_sets); else none."""
    letter = scored_sets(rows)
    return [Column("test set", lambda row: letter.get(row.get("test_set"), ""))] if len(letter) > 1 else []


def scored_sets(rows: list[dict]) -> dict[str, str]:
    """The test sets the rows were scored on (apa.reporting.runs.scored_set_digest), each named by a letter."""
    digests = sorted({r["test_set"] for r in rows if r.get("test_set")})
    return {digest: chr(ord("A") + i) for i, digest in enumerate(digests)}


def comparison_table(rows: list[dict]) -> Table:
    """comparison.md|csv: sizes, timings, metrics and coverage per run and checkpoint; where the rows were scored on
    several test sets, a column names each set by a letter."""
    columns = [
        run_column(), value("lora"),
        Column("epoch", lambda row: NOT_EVALUATED if row.kind == UNEVALUATED else str(row.get("epoch"))),
        number("trainable", "trainable_params", lambda n: f"{n:,}"), number("train s", "train_seconds"),
        number("final loss", "final_train_loss"), *metric_columns(), *coverage_columns(), *test_set_columns(rows),
    ]
    keys = [*RUN_KEYS, *sorted(({k for r in rows for k in r} | set(TABLE_COLUMNS) | set(CI_KEYS))
                               - set(RUN_KEYS) - NESTED_KEYS)]
    return Table(columns, comparison_rows(rows), keys)


def comparison_notes(rows: list[dict]) -> list[str]:
    """What the comparison's rows need said under them (comparison.md and report.html alike): runs not evaluated,
    several test sets (or the one test data), rows scored on their training split, random weights, and why each
    n/a is undefined. A warning's first words are in bold."""
    notes = []
    if any(r["checkpoint"] == NOT_EVALUATED for r in rows):
        notes.append(f"Rows marked {NOT_EVALUATED} have no metrics yet: `python evaluate.py run_dir=<run> "
                     "checkpoint=all`.")
    letter = scored_sets(rows)
    if len(letter) > 1:
        data_of = {r.get("test_set"): f"{r.get('data')}, split {r.get('split') or '?'}" for r in rows}
        sets = "; ".join(f"{name}: {data_of[digest]}" for digest, name in letter.items())
        notes.append(f"**These rows were scored on {len(letter)} different test sets** (column `test set`: the "
                     "same letter, the same test utterances, references, dataset revision and label release); rows "
                     f"of different sets are not comparable. {sets}.")
    else:
        described = sorted({r["data"] for r in rows if r.get("data")})
        if described:
            notes.append("Test data: " + "; ".join(described) + ".")
    if any(r.get("training_split") for r in rows):
        notes.append(training_split_note())
    random = [r for r in rows if r.get("random_weights")]
    if random:
        notes.append(random_weights_note(any(not r.get("n_apa_parsed") for r in random)))  # none parsed, or none yet
    missing = answers_missing_note(rows)
    if missing:
        notes.append(missing)
    ours = [Row(r) for r in rows if r["checkpoint"] != NOT_EVALUATED]
    why = undefined_note(ours, lambda row: f"{row.get('run')} {row.get('checkpoint')}", lambda row: row.get("run"))
    return notes + ([why] if why else [])


def answers_missing_note(rows: list[dict]) -> str | None:
    """Evaluated checkpoints whose answers are gone (apa.reporting.runs.collect's `answers_missing`: metrics.json
    without its predictions file): named, with what is missing because of it and how to write them again."""
    missing = [r for r in rows if r.get("answers_missing")]
    if not missing:
        return None
    named = "; ".join(f"{r['run']} {r['checkpoint']} (`{r['answers_missing']}`)" for r in missing)
    return (f"**The answers of {len(missing)} evaluated checkpoint(s) are missing** (no {PREDICTIONS}): {named}. "
            "Their metrics rows stand, but their answers are not in the utterance browser, the scatter plot or the "
            "paired differences; `python evaluate.py run_dir=<run> checkpoint=<checkpoint>` writes them again.")


def write_tables(rows: list[dict], out: Path, confidence: Confidence | None = None) -> str:
    """comparison.csv and comparison.md (each written whole, atomically), with, where there are several
    configurations or seeds, comparison_differences.csv and comparison_seeds.csv; returns the Markdown tables and
    their notes."""
    table = comparison_table(rows)
    write_atomic(out / "comparison.csv", table.csv())
    notes = comparison_notes(rows)
    text = table.markdown() + ("\n" + "\n\n".join(notes) + "\n" if notes else "")
    confidence = confidence or Confidence()
    for title, extra, name, note in confidence.tables():
        write_atomic(out / name, extra.csv())
        text += f"\n## {title}\n\n{note}\n\n" + extra.markdown()
    if confidence.repeats:
        text += f"\n## {REPEATS_TITLE}\n\n{confidence.repeats}\n"
    write_atomic(out / "comparison.md",
                 "# Run comparison\n\nOne row per run and evaluated checkpoint; the paper's Table 3 below. "
                 f"{' '.join(table.notes)}\n\n" + text)
    return text


@dataclass
class Confidence:
    """The seed aggregate and the differences between configurations of a set of runs."""

    seeds: Table | None = None
    differences: list[Row] = field(default_factory=list)
    repeats: str | None = None  # the runs that repeat another's config and seed (confidence.repeats_note)

    @classmethod
    def of(cls, runs: list[Path], labels: dict[Path, str]) -> Confidence:
        configs = configurations(runs, labels)
        return cls(seed_table(configs), difference_rows(configs, labels), repeats_note(configs, labels))

    def tables(self) -> list[tuple[str, Table, str, str]]:
        """(title, table, CSV name, note) of each table there is."""
        out = []
        if self.differences:
            out.append(("Differences between configurations", difference_table(self.differences),
                        "comparison_differences.csv", DIFFERENCE_NOTE))
        if self.seeds is not None:
            out.append(("Across seeds", self.seeds, "comparison_seeds.csv",
                        "Runs that differ only in their seed: mean ± sample standard deviation across them, beside "
                        "each run's own interval above."))
        return out


def plot_scatter(run: Path, out: Path, label: str | None = None) -> Path | None:
    """Human vs predicted scores of the final model's parsed APA answers, one panel per aspect."""
    answers = read_answers(run / EVAL_DIR / FINAL_MODEL)
    if not answers:
        return None
    apa = [r for r in answers if r["task"] == "apa" and r["prediction"]]
    fig, axes = plt.subplots(1, len(APA_ASPECTS), figsize=(3.2 * len(APA_ASPECTS), 3.2))
    for ax, aspect in zip(axes, APA_ASPECTS, strict=True):
        ax.scatter([r["reference"][aspect] for r in apa], [r["prediction"][aspect] for r in apa], alpha=0.5, s=12)
        ax.plot([0, 10], [0, 10], color="grey", linewidth=0.8)
        ax.set(xlim=(-0.5, 10.5), ylim=(-0.5, 10.5), xlabel="human", ylabel="predicted", title=aspect)
    label = label or run.name
    fig.suptitle(f"{label}: {len(apa)} parsed APA answers")
    fig.tight_layout()
    path = out / f"scatter_{label.replace('/', '__')}.png"  # one file per run, also for two runs of one name
    save_png(fig, path)
    return path


def compare(paths: list[Path], out: Path | None = None) -> str:
    """comparison.md|csv (with the differences and seed tables where there are several configurations or seeds)
    and the plots of the runs in `paths` into `out` (default: the one path given, or the first one's parent);
    returns comparison.md's tables and a one-sentence verdict per pair of configurations."""
    runs = find_runs(paths)
    out = output_folder(out or (paths[0] if len(paths) == 1 else paths[0].parent))
    out.mkdir(parents=True, exist_ok=True)
    labels = run_labels(runs)
    rows = [{**row, "run": labels[run]} for run in runs for row in collect(run)]  # unique: <sweep>/<run> if needed
    confidence = Confidence.of(runs, labels)
    table = write_tables(rows, out, confidence)
    lines = verdicts(confidence.differences)
    save_png(loss_figure(loss_series(runs, run_labels(runs))), out / "training_loss.png")
    save_png(epoch_figure(rows, EPOCH_METRICS, cols=len(EPOCH_METRICS)), out / "metrics_per_epoch.png")
    for run in runs:
        plot_scatter(run, out, labels[run])
    return table + ("\n" + "\n".join(lines) + "\n" if lines else "")


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="a sweep folder, or run folders")
    parser.add_argument("--out", type=Path, help="where to write comparison.md/csv and the plots")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    print(compare(args.paths, args.out))


if __name__ == "__main__":
    main()
