"""The results table: which rows (ours, the paper's), which columns, which notes, and how a table prints as
Markdown, CSV and HTML.

Every results table is a `Table`: epochs.md|csv, comparison.md|csv, table3.md|csv, the model card's evaluation and
report.html's comparison. A row holds raw values (metrics.json's keys and the table's own: what the CSV writes); a
column says what a reader sees of a row (one cell text for Markdown and HTML alike, from `apa.metrics.fmt` and
`apa.metrics.coverage`) and which note it needs. The paper's Table 3 lives here too.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from apa.metrics import NOT_SIGNIFICANT, coverage, fmt, fmt_pcc
from apa.run_folder import METRICS

# arXiv 2509.02915v1, Table 3, every row as printed: PCC acc/flu/pros/total, WER, PER, F1 (P, R).
# LoRA-only: epochs 0 (no training) to 4.
PAPER_TABLE3 = {
    0: (-0.041, -0.017, -0.0493, -0.104, 0.97, 0.792, 0.143, 0.154, 0.134),  # prosodic printed as -0.0493
    1: (0.547, 0.585, 0.567, 0.544, 0.15, 0.137, 0.686, 0.689, 0.682),
    2: (0.637, 0.726, 0.709, 0.662, 0.139, 0.118, 0.722, 0.725, 0.719),
    3: (0.656, 0.727, 0.711, 0.675, 0.14, 0.114, 0.724, 0.728, 0.721),
    4: (0.645, 0.733, 0.714, 0.668, 0.148, 0.121, 0.721, 0.723, 0.72),
}
# Unfreeze (LoRA + audio encoder + projector trained): epochs 1 to 4, with P and R like the LoRA-only rows.
PAPER_UNFREEZE = {
    1: (0.535, 0.559, 0.564, 0.55, 0.159, 0.199, 0.575, 0.579, 0.57),
    2: (0.624, 0.668, 0.653, 0.634, 0.145, 0.154, 0.651, 0.651, 0.651),
    3: (0.621, 0.669, 0.655, 0.637, 0.148, 0.15, 0.663, 0.665, 0.662),
    4: (0.743, 0.717, 0.704, 0.666, 0.142, 0.142, 0.667, 0.671, 0.663),
}
LORA_ONLY, UNFREEZE, NO_TRAINING = "LoRA-only", "Unfreeze", "no training"  # Table 3's settings
PAPER_SETTINGS = {LORA_ONLY: PAPER_TABLE3, UNFREEZE: PAPER_UNFREEZE}

TABLE_COLUMNS = ("pcc_accuracy", "pcc_fluency", "pcc_prosodic", "pcc_total", "wer", "per",
                 "mdd_f1", "mdd_precision", "mdd_recall")
# What every table calls `mdd_f1`, and the note under it (docs/metrics.md, MDD)
MDD_F1_LABEL = "MDD F1 (standard TA/FR/FA/TR hierarchy)"
TABLE_HEADERS = ("PCC acc", "PCC flu", "PCC pros", "PCC total", "WER", "PER", MDD_F1_LABEL, "MDD P", "MDD R")
TABLE_NOTE = ("Our rows: MDD P/R/F1 counted as Fu et al.'s scorer counts them (canonical and annotated phones "
              "aligned as its align-text step does; an unparsed answer counts as an empty one; docs/metrics.md). "
              "Paper rows: the paper's own F1 (P, R), whose definition is unpublished; no metric here claims to be "
              "it.")
PCC_NOTE = (f"{NOT_SIGNIFICANT}: PCC with a two-sided p >= 0.05 (scipy's Pearson test), as the paper underlines its "
            "own (its underlines are not carried into its rows here); each PCC is over the parsed APA answers, n in "
            "'APA parsed'.")
PCC_P_KEYS = tuple(f"{key}_p" for key in TABLE_COLUMNS if key.startswith("pcc_"))  # the CSVs' p-value columns

# How much of the test split each row scored (metrics.json's n_*_scored / n_*_in_split)
COVERAGE_KEYS = ("n_utterances_scored", "n_utterances_in_split", "n_phones_scored", "n_phones_in_split",
                 "n_apa_parsed", "n_apa", "n_mdd_parsed", "n_mdd")
COVERAGE_HEADERS = ("utterances evaluated", "phones evaluated", "APA parsed (PCC n)", "MDD parsed")
COVERAGE_NOTE = ("Evaluated: utterances and canonical phones with an answer, parsed or not / in the test split ('?': "
                 "split size not recorded, as in evaluations older than test_split.json; 'limit N': data.limit made "
                 "the split its first N utterances). Parsed: answers that parsed / answers; PCC is over the parsed "
                 "APA answers, WER/PER/MDD count an unparsed MDD answer as an empty one (wer_present and "
                 f"per_present in {METRICS} skip it).")

# Each metric's 95 % interval as the CSVs spell it: <metric>_ci95_low, <metric>_ci95_high (apa.uncertainty)
CI_SUFFIXES = ("_ci95_low", "_ci95_high")
CI_KEYS = tuple(f"{key}{suffix}" for key in TABLE_COLUMNS for suffix in CI_SUFFIXES)
CI_NOTE = ("[low, high]: 95 % interval of our figure, by a bootstrap over the test speakers, or over its utterances "
           "where the test split has fewer than 5 speakers (which one, resamples and "
           f"seed: ci_method in each {METRICS}; docs/metrics.md, Uncertainty).")

# What a row is: an evaluated checkpoint of ours, the paper's, or a run of ours not evaluated yet (no metrics)
OURS, PAPER, UNEVALUATED = "ours", "paper", "unevaluated"

# What a run's rows are marked with in the comparison, and the notes that say why (comparison_notes; a single
# run's table says the same of "this run")
RANDOM_MARK, TRAINING_SPLIT_MARK = "†", "§"


def random_weights_note(unparsed: bool, marked: bool = True) -> str:
    """Rows of runs whose base was a generated miniature with random weights; `unparsed`: some answered nothing
    parseable (their n/a is expected)."""
    who, they, their = (f"Runs marked {RANDOM_MARK}", "they", "their") if marked else ("This run", "it", "its")
    return (f"**{who} started from a generated miniature with random weights** (model=tiny / phi4mm_random): "
            f"whatever {they} learned, {their} figures check the pipeline, not the method."
            + (f" Where none of {their} answers parse (APA parsed 0/n), PCC and MDD are n/a (undefined), as "
               "expected; `python train.py experiment=overfit` shows the pipeline learn (parse rate 1.0, PCC 1.0 on "
               "its training utterances)." if unparsed else ""))


def training_split_note(marked: bool = True) -> str:
    """Rows scored on the split their run trained on (data.test_split = data.train_split, experiment=overfit)."""
    who, their = (f"Rows marked {TRAINING_SPLIT_MARK} were scored on the split their run", "their") if marked else (
        "This run was scored on the split it", "its")
    return (f"**{who} trained on** (data.test_split = data.train_split, as experiment=overfit does): on utterances "
            f"it learned, not held-out ones, so {their} figures measure memorisation and compare with no row scored "
            "on a test split.")


@dataclass(frozen=True)
class Row:
    """One line of a table: its raw `values` (what the CSV writes) and what it is (`kind`: OURS, PAPER,
    UNEVALUATED)."""

    values: dict
    kind: str = OURS

    def get(self, key: str, default=None):
        """The value of `key`; `<metric>_ci95_low|high` reads the metric's interval (metrics.json's `ci95`)."""
        if key not in self.values and key.endswith(CI_SUFFIXES):
            metric, _, side = key.rpartition("_ci95_")
            interval = (self.values.get("ci95") or {}).get(metric)
            return default if interval is None else interval[0 if side == "low" else 1]
        return self.values.get(key, default)


@dataclass(frozen=True)
class Column:
    """What a reader sees of a table: a header, each row's cell text (Markdown and HTML alike; "" for an empty
    cell), whether the cells are numbers (HTML aligns them right) and the note the column needs beside the table."""

    header: str
    cell: Callable[[Row], str]
    numeric: bool = False
    note: str | None = None


def value(header: str, key: str | None = None) -> Column:
    """The row's `key` (default: the header) as it is; empty where the row has none."""
    key = key or header
    return Column(header, lambda row: "" if row.get(key) is None else str(row.get(key)))


def number(header: str, key: str, ours: Callable[[object], str] = fmt) -> Column:
    """A number of our runs (default: three decimals, n/a where undefined); empty in the paper's rows."""
    return Column(header, lambda row: "" if row.kind == PAPER else ours(row.get(key)), numeric=True)


def metric_columns(keys: Sequence[str] = TABLE_COLUMNS) -> list[Column]:
    """Table 3's metrics (or those of `keys`): three decimals, n/a where undefined; empty for a run not evaluated."""
    headers = dict(zip(TABLE_COLUMNS, TABLE_HEADERS, strict=True))
    return [Column(headers[key], lambda row, key=key: _metric_cell(row, key), numeric=True,
                   note=PCC_NOTE if key.startswith("pcc_") else TABLE_NOTE) for key in keys]


def _metric_cell(row: Row, key: str) -> str:
    """Three decimals; ours with their 95 % interval where the evaluation computed one (`0.675 [0.652, 0.697]`) and
    a PCC marked where not significant."""
    if row.kind == UNEVALUATED:
        return ""
    if row.kind != OURS:
        return fmt(row.get(key))
    text = fmt_pcc(row.values, key) if key.startswith("pcc_") else fmt(row.get(key))
    low, high = row.get(f"{key}_ci95_low"), row.get(f"{key}_ci95_high")
    return text if low is None or text == "n/a" else f"{text} [{low:.3f}, {high:.3f}]"


def coverage_columns() -> list[Column]:
    """How much of the test split each of our rows scored ('4/4 (limit 4)', '55/55'); empty in the others."""
    return [Column(header, lambda row, i=i: coverage(row.values)[i] if row.kind == OURS else "", numeric=True,
                   note=COVERAGE_NOTE) for i, header in enumerate(COVERAGE_HEADERS)]


def _undefined(values: dict, key: str) -> bool:
    value = values.get(key, math.nan)  # absent from a metrics.json of a task not evaluated: undefined too
    return value is None or (isinstance(value, float) and math.isnan(value))


def why_undefined(values: dict) -> list[tuple[str, str]]:
    """(metrics, why) for each of Table 3's metrics that `values` (one metrics.json) leaves n/a, the reason read from
    its own counts (docs/metrics.md): e.g. ("MDD R, MDD F1", "the references annotate no mispronounced phone
    (TR + FA = 0)"). A reason the counts cannot tell (older metrics.json) is left out."""
    headers = dict(zip(TABLE_COLUMNS, TABLE_HEADERS, strict=True))
    out = []
    pcc = [headers[k] for k in TABLE_COLUMNS if k.startswith("pcc_") and _undefined(values, k)]
    parsed = values.get("n_apa_parsed")
    if pcc and parsed is not None:
        out.append((", ".join(pcc), "no APA answer parsed" if parsed == 0 else
                    "one parsed APA answer (a correlation needs two)" if parsed == 1 else
                    "the human or the model scores are the same in every parsed answer"))
    if values.get("n_mdd") == 0:
        return out + [("WER, PER, MDD", "no MDD answer")]
    f1 = ["MDD F1"] if _undefined(values, "mdd_f1") else []
    counts = {k: values.get(f"mdd_{k}") for k in ("tr", "fr", "fa")}
    if _undefined(values, "mdd_precision") and counts["tr"] == 0 and counts["fr"] == 0:
        out.append((", ".join(["MDD P", *f1]), "the model rejected no phone (TR + FR = 0)"))
        f1 = []
    if _undefined(values, "mdd_recall") and counts["tr"] == 0 and counts["fa"] == 0:
        out.append((", ".join(["MDD R", *f1]), "the references annotate no mispronounced phone (TR + FA = 0)"))
    return out


def undefined_note(rows: Sequence[Row], label: Callable[[Row], str],
                   group: Callable[[Row], str] | None = None) -> str | None:
    """Why our rows' n/a cells are n/a (why_undefined), one sentence per reason naming the metrics and the rows (by
    `label`; by `group`, e.g. the run, where every row of the group has that reason); None without any."""
    ours = [row for row in rows if row.kind == OURS]
    reasons: dict[str, dict[str, list[Row]]] = {}  # why -> metrics -> rows
    for row in ours:
        for metrics, why in why_undefined(row.values):
            reasons.setdefault(why, {}).setdefault(metrics, []).append(row)
    if not reasons:
        return None

    def named(having: list[Row]) -> str:
        names = []
        for row in having:
            whole = group is not None and all(r in having for r in ours if group(r) == group(row))
            names.append(group(row) if whole else label(row))
        names = list(dict.fromkeys(names))
        return ", ".join(names) if len(names) <= 4 else f"{', '.join(names[:3])} and {len(names) - 3} more"

    all_pcc = ", ".join(h for k, h in zip(TABLE_COLUMNS, TABLE_HEADERS, strict=True) if k.startswith("pcc_"))
    return " ".join(f"n/a where {why}: " + "; ".join(f"{'PCC' if metrics == all_pcc else metrics} in {named(having)}"
                                                     for metrics, having in by_metrics.items()) + "."
                    for why, by_metrics in reasons.items())


def config_value(value) -> str:
    """A config or record value as it was meant: an integer as an integer, also where the schema stores it as a
    float (num_train_epochs=2 is 2.0 in the record), other numbers as Python writes them (0.001, 1e-07), lists and
    mappings as JSON."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def paper_rows(*settings: str) -> list[Row]:
    """The paper's Table 3 rows of `settings` (default: all, LoRA-only epochs 0-4 then Unfreeze epochs 1-4), each
    with its setting (epoch 0: no training), epoch, `source` "paper" and metrics under TABLE_COLUMNS' keys."""
    rows = []
    for setting in settings or tuple(PAPER_SETTINGS):
        for epoch, values in PAPER_SETTINGS[setting].items():
            rows.append(Row({"setting": NO_TRAINING if epoch == 0 else setting, "epoch": epoch, "source": "paper",
                             **dict(zip(TABLE_COLUMNS, values, strict=True))}, PAPER))
    return rows


def paper_label(row: Row) -> str:
    """How a paper row names itself: "paper (arXiv 2509.02915, LoRA-only)", "..., Unfreeze)", "..., no training)"."""
    return f"paper (arXiv 2509.02915, {row.get('setting')})"


@dataclass(frozen=True)
class Table:
    """Rows and columns, rendered three ways: Markdown and HTML show `columns`, the CSV writes the rows' raw values
    under `keys`."""

    columns: Sequence[Column]
    rows: Sequence[Row]
    keys: Sequence[str] = ()

    @property
    def notes(self) -> list[str]:
        """The notes the columns need, once each, in column order; and what the intervals are, where a row has one."""
        notes = list(dict.fromkeys(c.note for c in self.columns if c.note))
        return notes + ([CI_NOTE] if any(row.kind == OURS and row.get("ci95") for row in self.rows) else [])

    def markdown(self) -> str:
        """A pipe table, one line per row (an empty cell is `| |`), ending in a newline."""
        lines = [_markdown_line(c.header for c in self.columns), "|" + "---|" * len(self.columns)]
        lines += [_markdown_line(c.cell(row) for c in self.columns) for row in self.rows]
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        """`keys`, then each row's value of each key (absent or None: empty), as Python's csv module writes them."""
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(self.keys)
        writer.writerows([row.get(key) for key in self.keys] for row in self.rows)
        return text.getvalue()

    def html(self, cls: str = "") -> str:
        """A <table> (in a scrolling <div>): n/a cells greyed, numbers right-aligned, the paper's rows marked."""
        body = []
        for row in self.rows:
            cells = "".join(_html_cell(c.cell(row), c.numeric) for c in self.columns)
            body.append((PAPER, cells) if row.kind == PAPER else cells)
        return html_table([c.header for c in self.columns], body, cls)


def _markdown_line(cells: Iterable[str]) -> str:
    return "|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|"


def _html_cell(text: str, numeric: bool) -> str:
    if text == "n/a":
        return '<td class="na">n/a</td>'
    return f'<td class="num">{html.escape(text)}</td>' if numeric and text else f"<td>{html.escape(text)}</td>"


def html_table(head: Iterable[str], rows: Iterable[str | tuple[str, str]], cls: str = "") -> str:
    """Every HTML table of the report. rows: the cells' HTML, or (row class, cells' HTML)."""
    header = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(f'<tr class="{r[0]}">{r[1]}</tr>' if isinstance(r, tuple) else f"<tr>{r}</tr>" for r in rows)
    return (f'<div class="scroll"><table class="{cls}"><thead><tr>{header}</tr></thead><tbody>{body}</tbody>'
            "</table></div>")
