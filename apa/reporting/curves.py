"""The curves of a set of runs, computed once and drawn as PNG (apa compare) or SVG (report.html): each metric per
epoch beside the paper's, and the training loss by optimizer step from each run's record (apa.run_folder)."""

from __future__ import annotations

import base64
import io
import math
import os
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from apa.reporting.table import LORA_ONLY, TABLE_COLUMNS, TABLE_HEADERS, UNFREEZE, paper_rows  # noqa: E402
from apa.run_folder import loss_history, validation_loss_history  # noqa: E402

Series = tuple[list[float], list[float]]  # (x, y)


def epoch_series(rows: list[dict], metric: str) -> tuple[dict[str, Series], dict[str, Series]]:
    """`metric` by epoch: per run (comparison rows, as apa.reporting.runs.collect gives them; epoch checkpoints only,
    NaN where undefined), and per Table 3 setting of the paper (LoRA-only from epoch 0, the untrained model;
    Unfreeze from epoch 1)."""
    ours: dict[str, Series] = {}
    for r in rows:
        if str(r["epoch"]).isdigit():
            epochs, values = ours.setdefault(r["run"], ([], []))
            epochs.append(int(r["epoch"]))
            values.append(math.nan if r.get(metric) is None else r[metric])  # null in metrics.json: undefined
    paper: dict[str, Series] = {}
    for setting in (LORA_ONLY, UNFREEZE):
        # the untrained row (epoch 0) starts both curves: each setting trains from the same base
        points = paper_rows(LORA_ONLY)[:1] + paper_rows(setting)[setting == LORA_ONLY:]
        paper[setting] = ([p.get("epoch") for p in points],
                          [math.nan if p.get(metric) is None else p.get(metric) for p in points])
    return ours, paper


def epoch_intervals(rows: list[dict], metric: str) -> dict[str, tuple[list[float], list[float]]]:
    """Per run, the 95 % interval of `metric` at each epoch of `epoch_series` (NaN where none was computed)."""
    out: dict[str, tuple[list[float], list[float]]] = {}
    for r in rows:
        if str(r["epoch"]).isdigit():
            lows, highs = out.setdefault(r["run"], ([], []))
            interval = (r.get("ci95") or {}).get(metric) or (math.nan, math.nan)
            lows.append(interval[0])
            highs.append(interval[1])
    return out


def loss_series(runs: list[Path], labels: dict[Path, str]) -> dict[str, dict[str, Series]]:
    """Per run that recorded its loss (by label): "train", the training loss by optimizer step, and "validation",
    the held-out speakers' loss where the run had some (data.validation_fraction > 0; else empty)."""
    out = {}
    for run in runs:
        steps, losses = loss_history(run)
        if steps:
            out[labels[run]] = {"train": (steps, losses), "validation": validation_loss_history(run)}
    return out


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h")  # one per run, so that runs drawn over each other stay apart
LINESTYLES = ("-", (0, (5, 2)), "-.", (0, (1, 1.5)))
SPREAD = 0.24  # our runs sit this far apart in all along x (at most), so that equal values stay visible
FINAL = "final"  # the x tick of the runs evaluated on their final model only


def _style(i: int) -> dict:
    return {"marker": MARKERS[i % len(MARKERS)], "linestyle": LINESTYLES[i % len(LINESTYLES)]}


def _same(a: Series, b: Series) -> bool:
    """Equal points (undefined where the other is undefined too)."""
    def key(series: Series) -> list:
        return [(x, None if math.isnan(y) else y) for x, y in zip(*series, strict=True)]

    return key(a) == key(b)


def final_points(rows: list[dict], metric: str) -> dict[str, float]:
    """`metric` of each run evaluated on its final model only (no epoch checkpoint evaluated: experiment=overfit)."""
    with_epochs = {r["run"] for r in rows if str(r["epoch"]).isdigit()}
    return {r["run"]: math.nan if r.get(metric) is None else r[metric]
            for r in rows if r["epoch"] == FINAL and r["run"] not in with_epochs}


def identical_runs(rows: list[dict], metrics: tuple[str, ...]) -> dict[str, str]:
    """Runs whose every curve of `metrics` equals an earlier run's: run -> that run (the legend says so)."""
    runs = list(dict.fromkeys(r["run"] for r in rows if str(r["epoch"]).isdigit() or r["epoch"] == FINAL))
    curves = {run: [] for run in runs}
    for metric in metrics:
        ours = epoch_series(rows, metric)[0]
        finals = final_points(rows, metric)
        for run in runs:
            curves[run].append(ours.get(run) or (([FINAL], [finals[run]]) if run in finals else ([], [])))
    same = {}
    for i, run in enumerate(runs):
        for other in runs[:i]:
            if other not in same and all(_same(a, b) for a, b in zip(curves[run], curves[other], strict=True)):
                same[run] = other
                break
    return same


def _note(ax, text: str) -> None:
    text = "\n".join(textwrap.fill(line, 42) for line in text.splitlines())
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=7,
            bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "grey", "alpha": 0.9})


def epoch_figure(rows: list[dict], metrics: tuple[str, ...] = TABLE_COLUMNS, cols: int = 3):
    """One panel per metric: each run's line by epoch with its 95 % interval as a band, its own marker and line
    style, the runs shifted a little apart along x (equal values stay visible; the legend names a run identical to
    another); a run evaluated on its final model only as one point at "final"; the paper's LoRA-only rows dashed
    grey, its Unfreeze rows dotted grey. A panel says so where none of our runs has a value to draw."""
    titles = dict(zip(TABLE_COLUMNS, TABLE_HEADERS, strict=True))
    runs = list(dict.fromkeys(r["run"] for r in rows))
    evaluated = [run for run in runs if any(r["run"] == run and (str(r["epoch"]).isdigit() or r["epoch"] == FINAL)
                                            for r in rows)]
    same = identical_runs(rows, metrics)
    style = {run: _style(i) for i, run in enumerate(runs)}
    step = min(0.08, SPREAD / max(1, len(evaluated) - 1))
    offset = {run: (i - (len(evaluated) - 1) / 2) * step for i, run in enumerate(evaluated)}
    last = max([4, *(int(r["epoch"]) for r in rows if str(r["epoch"]).isdigit())])  # the paper's 4 epochs at least
    n_rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(4 * cols, 3.5 * n_rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        ours, paper = epoch_series(rows, metric)
        finals = final_points(rows, metric)
        bands = epoch_intervals(rows, metric)
        undefined = []  # runs with no value to draw in this panel
        for run in evaluated:
            label = run + (f" (identical to {same[run]})" if run in same else "")
            if run in ours:
                xs, ys = [x + offset[run] for x in ours[run][0]], ours[run][1]
                line = ax.plot(xs, ys, label=label, **style[run])[0]
                lows, highs = bands[run]
                if any(not math.isnan(v) for v in lows):  # the 95 % interval as a band around the line
                    ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.15, linewidth=0)
            else:  # final model only: one point, larger, at "final"
                xs, ys = [last + 1 + offset[run]], [finals[run]]
                ax.plot(xs, ys, linestyle="none", marker=style[run]["marker"], markersize=9,
                        label=f"{label}, final model only")
            if all(math.isnan(y) for y in ys):
                undefined.append(run)
        for setting, linestyle in ((LORA_ONLY, "--"), (UNFREEZE, ":")):
            ax.plot(*paper[setting], linestyle=linestyle, color="grey", label=f"paper, {setting}")
        if runs and not evaluated:
            _note(ax, "No run evaluated yet: only the paper's lines.\n"
                      "python evaluate.py run_dir=<run> checkpoint=all")
        elif undefined:
            _note(ax, "n/a (undefined) at every checkpoint: "
                  + ("all our runs" if len(undefined) == len(evaluated) else ", ".join(undefined)))
        ax.set_title(titles[metric], fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ticks = [int(x) for x in MaxNLocator(integer=True).tick_values(0, last) if 0 <= x <= last]
        if finals:
            ax.set_xticks([*ticks, last + 1], [*map(str, ticks), FINAL])
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def loss_figure(series: dict[str, dict[str, Series]]):
    """The curves of `loss_series`: each run's training loss (its own marker and line style), its validation loss
    dotted in the same colour."""
    fig, ax = plt.subplots(figsize=(8, 4))
    for i, (label, curves) in enumerate(series.items()):
        line = ax.plot(*curves["train"], label=label, markersize=4, **_style(i))[0]
        if curves["validation"][0]:
            ax.plot(*curves["validation"], marker="s", linestyle=":", color=line.get_color(),
                    label=f"{label} (validation)")
    ax.set(xlabel="optimizer step", ylabel="loss", title="Training loss")
    if series:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save_png(fig, path: Path) -> None:
    """`fig` as a PNG at `path`, written to a temporary name beside it and renamed into place; the figure is closed."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fig.savefig(tmp, dpi=100, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)


def svg_image(fig) -> str:
    """`fig` as an <img> with the SVG inside (text kept as text, ids stable from one report to the next); the figure
    is closed."""
    buf = io.StringIO()
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": "apa-report"}):
        fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    encoded = base64.b64encode(buf.getvalue().encode()).decode()
    return f'<img class="plot" alt="plot" src="data:image/svg+xml;base64,{encoded}">'
