"""The per-epoch plot hides no run: a run evaluated on its final model only is a point, runs with equal values stay
apart and the legend says they are identical, and a panel with nothing of ours to draw says why."""

from __future__ import annotations

import shutil

import matplotlib.pyplot as plt
import pytest

from apa.reporting.curves import FINAL, MARKERS, epoch_figure
from apa.reporting.runs import collect, run_labels
from apa.run_folder import find_runs
from tests.synthetic_runs import make_sweep


def rows_of(root) -> list[dict]:
    runs = find_runs([root])
    labels = run_labels(runs)
    return [{**row, "run": labels[run]} for run in runs for row in collect(run)]


def lines_of(ax) -> dict[str, object]:
    return {line.get_label(): line for line in ax.get_lines()}


def notes_of(ax) -> str:
    return " ".join(text.get_text().replace("\n", " ") for text in ax.texts)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """An overfit-like run (final model only, scored on its training split) beside a 2-epoch run and its exact
    copy (the same values at every epoch, as two random demo runs have)."""
    root = tmp_path_factory.mktemp("curves") / "sweep"
    make_sweep(root, runs=("overfit_0",), epochs=0, splits=("train",), tiny=True, unparsed=0.0)
    make_sweep(root, runs=("fresh_r64_1",), epochs=2, seed=1)
    shutil.copytree(root / "fresh_r64_1", root / "pretrained_r320_2")
    return rows_of(root)


def test_a_run_with_a_final_model_only_is_a_point_at_final(mixed):
    fig = epoch_figure(mixed, ("pcc_total", "wer"), cols=2)
    ax = fig.axes[0]
    point = lines_of(ax)["overfit_0, final model only"]
    expected = next(r["pcc_total"] for r in mixed if r["run"] == "overfit_0")
    assert list(point.get_ydata()) == [expected] and point.get_marker() in MARKERS
    assert point.get_linestyle() == "None"  # a point, not a line
    labels = [t.get_text() for t in ax.get_xticklabels()]
    final_x = dict(zip(labels, ax.get_xticks(), strict=True))[FINAL]
    assert abs(point.get_xdata()[0] - final_x) < 0.2 and final_x > 4  # right of the paper's 4 epochs
    plt.close(fig)


def test_runs_with_equal_values_stay_apart_and_the_legend_says_identical(mixed):
    fig = epoch_figure(mixed, ("pcc_total", "wer"), cols=2)
    lines = lines_of(fig.axes[0])
    first, copy = lines["fresh_r64_1"], lines["pretrained_r320_2 (identical to fresh_r64_1)"]
    assert list(first.get_ydata()) == list(copy.get_ydata())  # the same values ...
    assert all(a != b for a, b in zip(first.get_xdata(), copy.get_xdata(), strict=True))  # ... drawn apart
    assert first.get_marker() != copy.get_marker() and first.get_linestyle() != copy.get_linestyle()
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "pretrained_r320_2 (identical to fresh_r64_1)" in legend and "fresh_r64_1" in legend
    assert not any("identical" in label for label in legend if label.startswith(("fresh", "overfit")))
    plt.close(fig)


def test_an_unevaluated_sweep_says_so_on_the_plot(tmp_path):
    root = make_sweep(tmp_path / "sweep", runs=("fresh_r64_0",), epochs=1, n_utterances=2)
    shutil.rmtree(root / "fresh_r64_0" / "eval")
    rows = rows_of(root)
    fig = epoch_figure(rows, ("pcc_total", "wer"), cols=2)
    for ax in fig.axes:
        assert "No run evaluated yet" in notes_of(ax)
        assert all(label.startswith("paper") for label in lines_of(ax))  # only the paper's lines to draw
    plt.close(fig)


def test_a_panel_where_our_values_are_all_undefined_says_so(tmp_path):
    root = make_sweep(tmp_path / "sweep", runs=("fresh_r64_0",), epochs=2, n_utterances=4, tiny=True, unparsed=1.0)
    fig = epoch_figure(rows_of(root), ("pcc_total", "wer"), cols=2)
    assert "n/a (undefined) at every checkpoint: all our runs" in notes_of(fig.axes[0])  # no APA answer parsed
    assert notes_of(fig.axes[1]) == ""  # WER is defined: unparsed answers count as empty ones
    plt.close(fig)
