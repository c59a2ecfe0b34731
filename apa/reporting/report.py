"""One self-contained, offline report.html for run folders: the Table-3-shaped comparison, curves, parameters and
timings, config differences, and a per-utterance browser (audio, scores, aligned phones, detection outcomes).

    apa report outputs/multirun/<sweep>                 every run folder below it -> <sweep>/report.html
    apa report <run> <run> ... --out <dir>
    apa report <sweep> --embed-audio                    clips inside the file (portable, larger)

No server and no network: CSS, JavaScript, plots (SVG) and data (JSON, embedded once) are inside the file; audio is
linked relative to the report (embedded automatically when all clips together are small, or with --embed-audio).
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import json
import logging
import math
import re
from pathlib import Path

from apa.data.release import describe as describe_data
from apa.errors import one_line_errors
from apa.metrics import fmt
from apa.reporting.browser import AUTO_EMBED_BYTES, browser_data
from apa.reporting.compare import (
    Confidence,
    answers_missing_note,
    comparison_notes,
    comparison_rows,
    run_column,
    test_set_columns,
)
from apa.reporting.confidence import REPEATS_TITLE
from apa.reporting.curves import epoch_figure, loss_figure, loss_series, svg_image
from apa.reporting.runs import collect, run_labels
from apa.reporting.table import (
    OURS,
    Column,
    Table,
    config_value,
    coverage_columns,
    html_table,
    metric_columns,
    value,
)
from apa.run_folder import find_runs, output_folder, read_record, write_atomic

STATIC = Path(__file__).parent / "static"


# ---------------------------------------------------------------------------------------------------------------
# Tables and plots
# ---------------------------------------------------------------------------------------------------------------


def _cell(value, digits: int = 3) -> str:
    if value is None or value == "" or (isinstance(value, float) and not math.isfinite(value)):
        return '<td class="na">n/a</td>'
    if isinstance(value, bool):
        return f"<td>{value}</td>"
    if isinstance(value, int):
        return f'<td class="num">{value:,}</td>'
    if isinstance(value, float):
        return f'<td class="num">{value:.{digits}f}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def _parsed(key: str, header: str) -> Column:
    return Column(header, lambda row: fmt(row.get(key)) if row.kind == OURS else "", numeric=True)


def comparison_table(rows: list[dict]) -> Table:
    """comparison.md's rows (runs named by their labels, with its marks) with the checkpoint and parse rates in place
    of sizes and timings (the parameters table has those), and its test-set column where there are several."""
    columns = [run_column(), value("lora"), value("checkpoint"), value("epoch"), *metric_columns(),
               _parsed("parse_rate_apa", "parsed APA"), _parsed("parse_rate_mdd", "parsed MDD"), *coverage_columns(),
               *test_set_columns(rows)]
    return Table(columns, comparison_rows(rows))


def _inline(text: str) -> str:
    """A note's Markdown (**bold**, `code`) as HTML."""
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(text, quote=False))
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def notes_html(rows: list[dict]) -> str:
    """comparison.md's notes (apa.reporting.compare.comparison_notes, the one home of what they say); a warning (its
    first words in bold) stands out."""
    return "".join(f'<p class="note{" warning" if note.startswith("**") else ""}">{_inline(note)}</p>'
                   for note in comparison_notes(rows))


def _missing_answers(rows: list[dict]) -> str:
    """In the utterance browser: which evaluated checkpoints have no view because their answers are missing."""
    note = answers_missing_note(rows)
    return f'<p class="note warning">{_inline(note)}</p>' if note else ""


def parameters_table(runs: list[Path], records: dict[Path, dict], labels: dict[Path, str]) -> str:
    head = ["run", "lora", "parameters", "trainable", "trainable share", "trainable by group", "data",
            "train examples", "hours of audio", "world size", "optimizer steps", "train seconds", "samples/s",
            "final train loss", "started", "finished", "git commit"]
    body = []
    for run in runs:
        rec = records[run]
        params, data, metrics = rec.get("parameters", {}), rec.get("data", {}), rec.get("train_metrics", {})
        groups = ", ".join(f"{name} {g['trainable']:,}" for name, g in (params.get("groups") or {}).items()
                           if g.get("trainable"))
        share = params.get("trainable_share")
        body.append("".join([
            _cell(labels[run]), _cell(rec.get("config", {}).get("lora", {}).get("name")), _cell(params.get("total")),
            _cell(params.get("trainable")), _cell(None if share is None else f"{100 * share:.2f} %"),
            _cell(groups or None), _cell(describe_data(data.get("dataset"))), _cell(data.get("train_examples")),
            _cell((data.get("train_stats") or {}).get("hours")),
            _cell(data.get("world_size")), _cell(rec.get("global_steps")), _cell(rec.get("train_seconds"), 1),
            _cell(metrics.get("train_samples_per_second"), 2), _cell(rec.get("final_train_loss")),
            _cell(rec.get("started")), _cell(rec.get("finished")), _cell((rec.get("git_commit") or "")[:10] or None),
        ]))
    return html_table(head, body)


def _flatten(value, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


_MISSING = object()


def _config_cell(value) -> str:
    """A config value as it was meant (config_value: num_train_epochs 2, not 2.000); n/a for null."""
    if value is None:
        return '<td class="na">n/a</td>'
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    return ('<td class="num">' if numeric else "<td>") + f"{html.escape(config_value(value))}</td>"


def config_differences(runs: list[Path], records: dict[Path, dict], labels: dict[Path, str]) -> str:
    """The resolved config (and library versions, git commit) keys whose values are not the same in every run."""
    flat = {run: _flatten({"config": records[run].get("config", {}),
                           "library_versions": records[run].get("library_versions", {}),
                           "git_commit": records[run].get("git_commit")}) for run in runs}
    keys = sorted(set().union(*(f.keys() for f in flat.values())))
    differing = [k for k in keys if len({json.dumps(f.get(k, "<absent>"), sort_keys=True, default=str)
                                         for f in flat.values()}) > 1]
    if len(runs) < 2:
        return "<p>One run: nothing to compare.</p>"
    if not differing:
        return f"<p>All {len(runs)} runs have the same config ({len(keys)} keys).</p>"
    body = []
    for k in differing:
        values = [flat[run].get(k, _MISSING) for run in runs]
        body.append(_cell(k) + "".join('<td class="na">absent</td>' if v is _MISSING else _config_cell(v)
                                       for v in values))
    note = f"<p>{len(differing)} of {len(keys)} keys differ; the others are the same in every run.</p>"
    return note + html_table(["key", *(labels[run] for run in runs)], body, "config")


def confidence_section(runs: list[Path], labels: dict[Path, str]) -> str:
    """The differences between configurations (paired, with intervals and p) and the seed aggregate, or why there
    are none."""
    confidence = Confidence.of(runs, labels)
    tables = confidence.tables()
    repeats = (f'<h3>{REPEATS_TITLE}</h3><p class="note warning">{_inline(confidence.repeats)}</p>'
               if confidence.repeats else "")
    if not tables:
        return repeats or ("<p>One configuration with one run: nothing to set side by side. Each figure's own 95 % "
                           "interval is in the comparison above.</p>")
    return "".join(f"<h3>{html.escape(title)}</h3><p>{html.escape(note)}</p>" + table.html("confidence")
                   for title, table, _, note in tables) + repeats


def curves(rows: list[dict], runs: list[Path], labels: dict[Path, str]) -> str:
    """Every metric per epoch beside the paper's, then the training loss (or why there is none)."""
    losses = loss_series(runs, labels)
    loss = svg_image(loss_figure(losses)) if losses else (
        '<p class="na">No training loss recorded (no run record has a loss history: has a training finished?).</p>')
    return svg_image(epoch_figure(rows)) + loss


# ---------------------------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------------------------


def _script_json(data: dict) -> str:
    """JSON safe inside <script>: no `</` (closes the element) and no `<!--`."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def render(paths: list[Path], out_dir: Path, audio: str = "auto") -> str:
    runs = find_runs(paths)
    records = {run: read_record(run) for run in runs}
    labels = run_labels(runs)
    rows = [{**row, "run": labels[run]} for run in runs for row in collect(run)]
    data = browser_data(runs, records, labels, out_dir, audio)
    n_utts = len(data["utts"])
    title = f"apa report: {', '.join(labels.values())}"
    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sources = ", ".join(html.escape(str(p)) for p in paths)
    comparison = comparison_table(rows)
    sections = [
        ("comparison", "Comparison with the paper's Table 3",
         "<p>One row per run and evaluated checkpoint; all of the paper's Table 3 below (LoRA-only epochs 0-4, "
         "Unfreeze epochs 1-4). "
         f"{html.escape(' '.join(comparison.notes))}</p>" + notes_html(rows) + comparison.html("results")),
        ("confidence", "Differences and seeds", confidence_section(runs, labels)),
        ("curves", "Metrics per epoch and training loss",
         "<p>Epoch checkpoints (final_model is usually the last epoch); a run evaluated on its final model only is "
         "one larger point at \"final\". Each run has its own marker and line style, and the runs are drawn a "
         "little apart along x, so that equal values stay visible (the legend names a run identical to another). "
         "Bands: our 95 % intervals; grey: the paper (dashed LoRA-only, dotted Unfreeze; both start from the "
         "untrained epoch 0).</p>"
         + curves(rows, runs, labels)),
        ("parameters", "Parameters and timing", parameters_table(runs, records, labels)),
        ("config", "Config differences", config_differences(runs, records, labels)),
        ("utterances", "Utterances",
         f'<p>{n_utts} utterances × {len(data["views"])} evaluated checkpoints. Pick a run and checkpoint; filter and '
         'sort; every row has its clip, the reference and predicted scores (coloured by error) and the phones '
         'aligned as the MDD scorer counts them.</p>' + _missing_answers(rows) + '<div id="browser"></div>'),
    ]
    nav = " · ".join(f'<a href="#{key}">{html.escape(name)}</a>' for key, name, _ in sections)
    body = "".join(f'<section id="{key}"><h2>{html.escape(name)}</h2>{content}</section>'
                   for key, name, content in sections)
    css = (STATIC / "report.css").read_text()
    js = (STATIC / "report.js").read_text()
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<link rel=\"icon\" href=\"data:,\"><title>{html.escape(title)}</title><style>{css}</style></head><body>"
        f"<header><h1>{html.escape(title)}</h1><p>Generated {generated} from {sources} by "
        f"<code>apa report</code>.</p><nav>{nav}</nav></header><main>{body}</main>"
        f"<script type=\"application/json\" id=\"report-data\">{_script_json(data)}</script>"
        f"<script>{js}</script></body></html>\n"
    )


def default_out(paths: list[Path]) -> Path:
    """Where compare writes comparison.md: the folder given, or the first one's parent."""
    return paths[0] if len(paths) == 1 else paths[0].parent


def write_report(paths: list[Path], out: Path | None = None, audio: str = "auto") -> Path:
    find_runs(paths)  # a path with no runs is refused before the folder is made
    out = output_folder(out or default_out(paths))
    out.mkdir(parents=True, exist_ok=True)
    target = out / "report.html"
    write_atomic(target, render(paths, out, audio))
    return target


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="a sweep folder, or run folders")
    parser.add_argument("--out", type=Path, help="folder for report.html (default: as apa.reporting.compare)")
    parser.add_argument("--audio", choices=("auto", "link", "embed", "none"), default="auto",
                        help="clips linked relative to the report, embedded in it, or left out; auto: embedded "
                             f"when they total at most {AUTO_EMBED_BYTES // 2**20} MiB, else linked")
    parser.add_argument("--embed-audio", action="store_const", const="embed", dest="audio",
                        help="same as --audio embed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    print(write_report(args.paths, args.out, args.audio))


if __name__ == "__main__":
    main()
