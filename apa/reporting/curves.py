"""The curves of a set of runs, computed once and drawn as PNG (apa compare) or SVG (report.html): each metric per
epoch beside the paper's, and the training loss by optimizer step from each run's record (apa.run_folder)."""

from __future__ import annotations

import base64
import io
import math
import os
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


def epoch_figure(rows: list[dict], metrics: tuple[str, ...] = TABLE_COLUMNS, cols: int = 3):
    """One panel per metric: each run's line by epoch with its 95 % interval as a band; the paper's LoRA-only rows
    dashed grey, its Unfreeze rows dotted grey."""
    titles = dict(zip(TABLE_COLUMNS, TABLE_HEADERS, strict=True))
    n_rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(4 * cols, 3.5 * n_rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        ours, paper = epoch_series(rows, metric)
        bands = epoch_intervals(rows, metric)
        for label, points in ours.items():
            line = ax.plot(*points, marker="o", label=label)[0]
            lows, highs = bands[label]
            if any(not math.isnan(v) for v in lows):  # the 95 % interval as a band around the line
                ax.fill_between(points[0], lows, highs, color=line.get_color(), alpha=0.15, linewidth=0)
        for setting, style in ((LORA_ONLY, "--"), (UNFREEZE, ":")):
            ax.plot(*paper[setting], linestyle=style, color="grey", label=f"paper, {setting}")
        ax.set_title(titles[metric], fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def loss_figure(series: dict[str, dict[str, Series]]):
    """The curves of `loss_series`: each run's training loss, its validation loss dotted in the same colour."""
    fig, ax = plt.subplots(figsize=(8, 4))
    for label, curves in series.items():
        line = ax.plot(*curves["train"], marker=".", label=label)[0]
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
