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
import base64
import datetime as dt
import html
import io
import json
import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from rapidfuzz.distance import Levenshtein  # noqa: E402

from apa.data.records import APA_ASPECTS  # noqa: E402
from apa.data.release import describe as describe_data  # noqa: E402
from apa.metrics import EPS, mdd_outcomes, normalise_phones, normalise_words  # noqa: E402
from apa.reporting.compare import collect, find_runs  # noqa: E402
from apa.reporting.table3 import MDD_F1_LABEL, PAPER_TABLE3, TABLE_COLUMNS, TABLE_HEADERS, TABLE_NOTE, epoch_of  # noqa: E402
from apa.run_folder import (
    resumable_checkpoints,  # noqa: E402
    write_atomic,
)

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
AUTO_EMBED_BYTES = 8 * 2**20  # --audio auto: embed every clip when all of them together are at most this
OUTCOME_CODES = {"ta": "a", "fr": "r", "fa": "f", "cd": "c", "de": "d"}  # one character per phone in the JSON
AUDIO_TYPES = {".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg", ".mp3": "audio/mpeg"}


# ---------------------------------------------------------------------------------------------------------------
# Reading run folders
# ---------------------------------------------------------------------------------------------------------------


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def read_predictions(path: Path) -> list[dict]:
    """The records of a predictions.jsonl; a torn line (evaluation stopped mid-write) is left out with a warning."""
    records = []
    with path.open() as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    log.warning("%s line %d is not JSON (an interrupted evaluation?): left out", path, n)
    return records


def run_labels(runs: list[Path]) -> dict[Path, str]:
    """Each run's folder name, or parent/name where two runs (from two sweeps) share a name."""
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.name] = counts.get(run.name, 0) + 1
    return {run: run.name if counts[run.name] == 1 else f"{run.parent.name}/{run.name}" for run in runs}


def loss_history(run: Path) -> dict[str, list[tuple[float, float]]]:
    """Training (and validation) loss by optimizer step: the newest checkpoint's trainer_state.json log_history,
    else the TensorBoard events under logs/."""
    checkpoints = resumable_checkpoints(run)
    if checkpoints:
        history = _json(checkpoints[-1] / "trainer_state.json").get("log_history", [])
        out = {"train": [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h],
               "validation": [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h and "step" in h]}
        if out["train"]:
            return out
    if any((run / "logs").glob("events.out.tfevents.*")):
        from apa.reporting.compare import training_loss

        steps, values = training_loss(run)
        return {"train": list(zip(steps, values, strict=True)), "validation": []}
    return {"train": [], "validation": []}


def utterance_info(record: dict) -> dict[str, dict]:
    """id -> {speaker, audio_path, text} from the run's own test split (labels only, no decoding); {} when the data
    cannot be read here (another machine's path, the hub offline): the report then has no audio or speakers."""
    from omegaconf import OmegaConf

    from apa.data import SAMPLE_ROOT
    from apa.data.sources import load_configured_split

    data = dict(record.get("config", {}).get("data") or {})
    if not data:
        return {}
    if data.get("source") == "local" and data.get("name") == "sample" and not Path(str(data.get("path"))).is_dir():
        data["path"] = str(SAMPLE_ROOT)  # the bundled sample, from a run folder made in another checkout
    try:
        utterances = load_configured_split(OmegaConf.create(data), data.get("test_split", "test"), decode=False)
    except Exception as e:  # noqa: BLE001 - any failure here only costs the report its audio links
        log.warning("no audio or speakers in the report: the test split of %s cannot be read here (%s)",
                    data.get("path") or data.get("hub_id"), e)
        return {}
    return {u.id: {"speaker": u.speaker, "audio_path": u.audio_path, "text": u.text} for u in utterances}


def _checkpoint_order(name: str) -> float:
    epoch = epoch_of(name)
    return float(epoch) if epoch != "final" else math.inf


def evaluated_checkpoints(run: Path) -> list[Path]:
    folders = [p.parent for p in (run / "eval").glob("*/predictions.jsonl")]
    return sorted(folders, key=lambda p: (_checkpoint_order(p.name), p.name))


# ---------------------------------------------------------------------------------------------------------------
# The utterance browser's data
# ---------------------------------------------------------------------------------------------------------------


class _Outcomes:
    """mdd_outcomes with a cache: final_model usually repeats the last epoch's answers, and the same canonical and
    annotated phones return for every checkpoint."""

    def __init__(self) -> None:
        self.cache: dict[tuple, tuple[list, float]] = {}

    def __call__(self, canonical: list[str], said: list[str], heard: list[str]) -> tuple[list, float]:
        key = (tuple(canonical), tuple(said), tuple(heard))
        if key not in self.cache:
            self.cache[key] = (mdd_outcomes(canonical, said, heard), _error_rate(said, heard))
        return self.cache[key]


def _error_rate(reference: list[str], hypothesis: list[str]) -> float:
    """One utterance's (S + D + I) / N, as apa.metrics.error_rate counts it (the edit distance), computed by
    rapidfuzz (jiwer's own engine) without jiwer's per-call text transforms: thousands of utterances per report."""
    return Levenshtein.distance(reference, hypothesis) / len(reference) if reference else math.nan


def _finite(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else value


def browser_data(runs: list[Path], records: dict[Path, dict], labels: dict[Path, str], out_dir: Path,
                 audio: str) -> dict:
    """Everything the browser shows, each utterance's reference once and each checkpoint's answers as arrays indexed
    like the utterances."""
    info: dict[str, dict] = {}
    seen_data: set[str] = set()
    for run in runs:
        key = json.dumps(records[run].get("config", {}).get("data"), sort_keys=True)
        if key not in seen_data:
            seen_data.add(key)
            for utt_id, values in utterance_info(records[run]).items():
                info.setdefault(utt_id, values)

    predictions: dict[str, list[dict]] = {}
    views = []
    for run in runs:
        for folder in evaluated_checkpoints(run):
            key = f"{labels[run]}/{folder.name}"
            predictions[key] = read_predictions(folder / "predictions.jsonl")
            views.append({"key": key, "run": labels[run], "checkpoint": folder.name})

    utts: dict[str, dict] = {}
    for rows in predictions.values():
        for r in rows:
            u = utts.setdefault(r["id"], {"id": r["id"]})
            ref = r.get("reference") or {}
            if r["task"] == "apa" and "ref" not in u:
                u["ref"] = [ref.get(a) for a in APA_ASPECTS]
            elif r["task"] == "mdd" and "canonical" not in u:
                u["words"] = ref.get("word_transcript", "")
                u["canonical"] = normalise_phones(ref.get("canonical_phones", ""))
                u["said"] = normalise_phones(ref.get("phoneme_transcript", ""))
    ids = sorted(utts)
    index = {utt_id: i for i, utt_id in enumerate(ids)}
    outcomes = _Outcomes()
    for u in utts.values():
        meta = info.get(u["id"], {})
        u["speaker"] = meta.get("speaker") or ""
        u["text"] = meta.get("text") or u.get("words", "")
        if "canonical" in u:  # the canonical-annotated alignment is the same for every checkpoint: stored once
            positions = outcomes(u["canonical"], u["said"], [])[0]
            u["pos"] = [[c, s] for c, s, _, _ in positions]
            u["mis"] = sum(1 for c, s in u["pos"] if c != s)
    audio_urls = _audio_urls({i: info.get(i, {}).get("audio_path") for i in ids}, out_dir, audio)

    per_view = {}
    for view in views:
        apa: list = [None] * len(ids)
        mdd: list = [None] * len(ids)
        for r in predictions[view["key"]]:
            i, pred, raw = index[r["id"]], r.get("prediction"), r.get("raw", "")
            if r["task"] == "apa":
                apa[i] = {"p": [pred.get(a) for a in APA_ASPECTS]} if pred else {"p": None, "raw": raw}
            else:
                u = utts[r["id"]]
                heard = normalise_phones(pred.get("phoneme_transcript", "")) if pred else []
                decisions, per = outcomes(u.get("canonical", []), u.get("said", []), heard)
                entry = {"h": " ".join(h for _, _, h, _ in decisions),
                         "o": "".join(OUTCOME_CODES[o] for *_, o in decisions),
                         "per": _finite(per)}
                if pred:
                    entry.update(w=pred.get("word_transcript", ""), p=" ".join(heard),
                                 wer=_finite(_error_rate(normalise_words(u.get("words", "")).split(),
                                                         normalise_words(pred.get("word_transcript", "")).split())))
                else:
                    entry.update(w=None, p=None, raw=raw)
                mdd[i] = entry
        per_view[view["key"]] = {"apa": apa, "mdd": mdd}
    rows = []
    for utt_id in ids:
        u = utts[utt_id]
        rows.append({"id": utt_id, "speaker": u["speaker"], "text": u["text"], "audio": audio_urls.get(utt_id),
                     "ref": u.get("ref"), "words": u.get("words"), "pos": u.get("pos"), "mis": u.get("mis")})
    return {"aspects": list(APA_ASPECTS), "eps": EPS, "views": views, "utts": rows, "answers": per_view}


def _audio_urls(paths: dict[str, str | None], out_dir: Path, mode: str) -> dict[str, str]:
    found = {i: Path(p) for i, p in paths.items() if p and Path(p).is_file()}
    if mode == "none" or not found:
        return {}
    if mode == "auto":
        mode = "embed" if sum(p.stat().st_size for p in found.values()) <= AUTO_EMBED_BYTES else "link"
    if mode == "embed":
        return {i: f"data:{AUDIO_TYPES.get(p.suffix.lower(), 'audio/wav')};base64,"
                   + base64.b64encode(p.read_bytes()).decode() for i, p in found.items()}
    return {i: quote(Path(os.path.relpath(p.resolve(), out_dir.resolve())).as_posix()) for i, p in found.items()}


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


def _ratio_cell(scored, total) -> str:
    if scored is None or total is None:
        return '<td class="na">n/a</td>'
    return f'<td class="num">{scored:,} / {total:,}</td>'


def _table(head: Iterable[str], rows: Iterable[str | tuple[str, str]], cls: str = "") -> str:
    """rows: the cells' HTML, or (row class, cells' HTML)."""
    header = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(f'<tr class="{r[0]}">{r[1]}</tr>' if isinstance(r, tuple) else f"<tr>{r}</tr>" for r in rows)
    return (f'<div class="scroll"><table class="{cls}"><thead><tr>{header}</tr></thead><tbody>{body}</tbody>'
            "</table></div>")


def comparison_table(rows: list[dict]) -> str:
    head = ["run", "lora", "checkpoint", "epoch", *TABLE_HEADERS, "parsed APA", "parsed MDD", "utterances scored",
            "phones scored"]
    body = []
    for r in rows:
        cells = [_cell(r["run"]), _cell(r["lora"]), _cell(r.get("checkpoint") or "not evaluated"), _cell(r["epoch"])]
        cells += [_cell(r.get(c)) for c in TABLE_COLUMNS]
        cells += [_cell(r.get("parse_rate_apa")), _cell(r.get("parse_rate_mdd"))]
        cells += [_ratio_cell(r.get("n_utterances_scored"), r.get("n_utterances_in_split")),
                  _ratio_cell(r.get("n_phones_scored"), r.get("n_phones_in_split"))]
        body.append("".join(cells))
    for epoch, values in PAPER_TABLE3.items():
        cells = [_cell("paper (arXiv 2509.02915, LoRA-only)"), _cell("speech LoRA"), "<td></td>", _cell(str(epoch))]
        body.append(("paper", "".join(cells) + "".join(_cell(v) for v in values) + _cell(None) * 4))
    return _table(head, body, "results")


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
    return _table(head, body)


def _flatten(value, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


_MISSING = object()


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
        body.append(_cell(k) + "".join('<td class="na">absent</td>' if v is _MISSING else
                                       _cell(json.dumps(v) if isinstance(v, list | dict) else v) for v in values))
    note = f"<p>{len(differing)} of {len(keys)} keys differ; the others are the same in every run.</p>"
    return note + _table(["key", *(labels[run] for run in runs)], body, "config")


def _svg(fig) -> str:
    buf = io.StringIO()
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": "apa-report"}):
        fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    encoded = base64.b64encode(buf.getvalue().encode()).decode()
    return f'<img class="plot" alt="plot" src="data:image/svg+xml;base64,{encoded}">'


def epoch_curves(rows: list[dict]) -> str:
    labels = dict(zip(TABLE_COLUMNS, TABLE_HEADERS, strict=True)) | {"mdd_f1": MDD_F1_LABEL}
    cols = 3
    fig, axes = plt.subplots(math.ceil(len(TABLE_COLUMNS) / cols), cols, figsize=(12, 9), squeeze=False)
    for ax, metric in zip(axes.flat, TABLE_COLUMNS, strict=False):
        for run in dict.fromkeys(r["run"] for r in rows):
            points = [(int(r["epoch"]), math.nan if r.get(metric) is None else r[metric]) for r in rows
                      if r["run"] == run and str(r["epoch"]).isdigit()]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=run)
        paper = [(e, v[TABLE_COLUMNS.index(metric)]) for e, v in PAPER_TABLE3.items()]
        ax.plot(*zip(*paper, strict=True), linestyle="--", color="grey", label="paper")
        ax.set_title(labels[metric], fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(TABLE_COLUMNS):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return _svg(fig)


def loss_curves(runs: list[Path], labels: dict[Path, str]) -> str:
    fig, ax = plt.subplots(figsize=(8, 4))
    drawn = False
    for run in runs:
        history = loss_history(run)
        if history["train"]:
            line = ax.plot(*zip(*history["train"], strict=True), marker=".", label=f"{labels[run]} (train)")[0]
            drawn = True
            if history["validation"]:
                ax.plot(*zip(*history["validation"], strict=True), marker="s", linestyle=":", color=line.get_color(),
                        label=f"{labels[run]} (validation)")
    if not drawn:
        plt.close(fig)
        return ('<p class="na">No training loss logged (no trainer_state.json in a checkpoint, no TensorBoard '
                "events).</p>")
    ax.set(xlabel="optimizer step", ylabel="loss", title="Training loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _svg(fig)


# ---------------------------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------------------------


def _script_json(data: dict) -> str:
    """JSON safe inside <script>: no `</` (closes the element) and no `<!--`."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def render(paths: list[Path], out_dir: Path, audio: str = "auto") -> str:
    runs = find_runs(paths)
    records = {run: _json(run / "training_config.json") for run in runs}
    labels = run_labels(runs)
    rows = [{**row, "run": labels[run]} for run in runs for row in collect(run)]
    data = browser_data(runs, records, labels, out_dir, audio)
    n_utts = len(data["utts"])
    title = f"apa report: {', '.join(labels.values())}"
    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sources = ", ".join(html.escape(str(p)) for p in paths)
    sections = [
        ("comparison", "Comparison with the paper's Table 3",
         f"<p>One row per run and evaluated checkpoint; the paper's LoRA-only rows below. {html.escape(TABLE_NOTE)} "
         "“Utterances scored” and “phones scored”: how many of the test split's the metrics cover (n/a: metrics.json "
         "written before these counts existed).</p>" + comparison_table(rows)),
        ("curves", "Metrics per epoch and training loss",
         "<p>Epoch checkpoints only (final_model is usually the last epoch); grey dashes: the paper.</p>"
         + epoch_curves(rows) + loss_curves(runs, labels)),
        ("parameters", "Parameters and timing", parameters_table(runs, records, labels)),
        ("config", "Config differences", config_differences(runs, records, labels)),
        ("utterances", "Utterances",
         f'<p>{n_utts} utterances × {len(data["views"])} evaluated checkpoints. Pick a run and checkpoint; filter and '
         'sort; every row has its clip, the reference and predicted scores (coloured by error) and the phones '
         'aligned as the MDD scorer counts them.</p><div id="browser"></div>'),
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
    out = out or default_out(paths)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "report.html"
    write_atomic(target, render(paths, out, audio))
    return target


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
