"""Our runs laid out as the paper's Table 3.

    apa table3 <sweep or run folders...> [--baseline <folder with metrics.json>] [--out DIR]

writes table3.md / table3.csv: the untrained baseline (epoch 0), every evaluated epoch of the LoRA-only and the
Unfreeze runs, each beside the paper's row for the same setting and epoch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from omegaconf import OmegaConf

from apa.constants import CONF_DIR
from apa.data.release import describe
from apa.errors import one_line_errors
from apa.reporting.confidence import DIFFERENCE_NOTE, compare_evaluations, difference_table, verdicts
from apa.reporting.runs import random_weights
from apa.reporting.table import (
    CI_KEYS,
    COVERAGE_KEYS,
    LORA_ONLY,
    NO_TRAINING,
    PAPER,
    PCC_P_KEYS,
    RANDOM_MARK,
    TABLE_COLUMNS,
    UNFREEZE,
    Column,
    Row,
    Table,
    config_value,
    coverage_columns,
    metric_columns,
    paper_rows,
    random_weights_note,
    value,
)
from apa.run_folder import (
    METRICS,
    epoch_of,
    evaluations,
    find_runs,
    output_folder,
    read_metrics,
    read_record,
    write_atomic,
)

BASELINE_DIR = "baseline"  # <sweep or run>/baseline/base_model/: the untrained model's evaluation (epoch 0)
# table3.csv's columns: `random_weights` and `differs_from_paper` (differences_from_paper) mark our rows as the
# Markdown's source column does (RANDOM_MARK, SETTING_MARK)
KEYS = ("setting", "epoch", "source", *TABLE_COLUMNS, *CI_KEYS, *PCC_P_KEYS, *COVERAGE_KEYS, "random_weights",
        "differs_from_paper")
SETTING_MARK = "≠"  # a run that did not train in the paper's setting (differences_from_paper)
# The config files that hold the paper's setting (what experiment=table3_* trains): a run's record is compared with
# their values (differences_from_paper)
PAPER_CONFIG = {"trainer": "trainer/paper_table3.yaml", "prompts": "prompts/paper.yaml",
                "data": "data/speechocean762.yaml", "unfreeze": "experiment/table3_unfreeze.yaml"}


def setting_of(record: dict) -> str:
    """A run's Table 3 setting, from what it trained (its run record), not from its name."""
    return UNFREEZE if record["config"]["model"].get("unfreeze") else LORA_ONLY


def _paper_config(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONF_DIR / PAPER_CONFIG[name]), resolve=False)


def differences_from_paper(record: dict) -> list[str]:
    """How a run's training differs from the paper's Table 3 setting, read from its record: a base model with random
    weights; prompts other than the paper's text; data other than the whole SpeechOcean762 with its original labels;
    what the paper states of its training (epochs, learning rate, 64 examples per optimizer step: the values of
    trainer=paper_table3, with any max_steps); an Unfreeze of other modules than the paper's. [] in the paper's.
    What the record does not hold (an older run) is not counted as a difference."""
    config = record["config"]
    model, prompts = config.get("model") or {}, config.get("prompts") or {}
    data, trainer = config.get("data") or {}, config.get("trainer") or {}
    out = [f"model={model.get('name')}: random weights"] if random_weights(model) else []
    paper = _paper_config("prompts")
    texts = [task for task in ("apa", "mdd") if task in prompts]  # else only the name tells (an older record)
    named = prompts.get("name", paper["name"])
    if any(prompts[task] != paper[task] for task in texts) or not texts and named != paper["name"]:
        out.append(f"prompts={named} (paper: prompts={paper['name']})" if named != paper["name"] else
                   f"prompts={paper['name']} edited (not the paper's text)")
    paper = _paper_config("data")
    out += [f"data{'' if k == 'name' else '.' + k}={data[k]} (paper: {paper[k]})"
            for k in ("name", "labels", "train_split", "test_split") if k in data and data[k] != paper[k]]
    if data.get("validation_fraction"):  # speakers held out of training for validation: the paper trains on all
        out.append(f"data.validation_fraction={data['validation_fraction']} (paper: trains on the whole train split)")
    if data.get("limit") is not None:
        out.append(f"data.limit={data['limit']} (paper: the whole split)")
    paper = _paper_config("trainer")
    out += [f"trainer.{key}={config_value(trainer[key])} (paper: {config_value(paper[key])})"
            for key in ("num_train_epochs", "learning_rate") if key in trainer and trainer[key] != paper[key]]
    step = ("per_device_train_batch_size", "gradient_accumulation_steps")
    if all(key in trainer for key in step):
        per_step = trainer[step[0]] * trainer[step[1]] * ((record.get("data") or {}).get("world_size") or 1)
        if per_step != paper[step[0]] * paper[step[1]]:
            out.append(f"{per_step} examples per optimizer step (paper: {paper[step[0]] * paper[step[1]]})")
    if trainer.get("max_steps") not in (None, -1):
        out.append(f"trainer.max_steps={trainer['max_steps']} (paper: whole epochs)")
    paper_unfreeze = _paper_config("unfreeze")["model"]["unfreeze"]
    if model.get("unfreeze") and sorted(model["unfreeze"]) != sorted(paper_unfreeze):
        out.append(f"model.unfreeze={config_value(model['unfreeze'])} (paper's Unfreeze: "
                   f"{config_value(paper_unfreeze)})")
    return out


def run_rows(run: Path) -> list[Row]:
    """A row per evaluated epoch checkpoint of `run`, marked where it had random weights or another setting than
    the paper's (differences_from_paper)."""
    record = read_record(run)
    setting, differs = setting_of(record), "; ".join(differences_from_paper(record))
    marks = {"random_weights": random_weights(record["config"].get("model") or {}), "differs_from_paper": differs}
    return [Row({**read_metrics(e), "setting": setting, "epoch": int(epoch_of(e.name)), "source": run.name, **marks})
            for e in evaluations(run) if epoch_of(e.name).isdigit()]


def _source(row: Row) -> str:
    """The row's source with its marks: † random weights, ≠ not the paper's setting (setting_notes)."""
    marks = [mark for mark, key in ((RANDOM_MARK, "random_weights"), (SETTING_MARK, "differs_from_paper"))
             if row.get(key)]
    return " ".join([str(row.get("source")), *marks])


def setting_notes(rows: list[Row]) -> list[str]:
    """What the marks of our rows say: random weights (the comparison's own note), and in what each run marked ≠
    differs from the paper's setting."""
    ours = [row for row in rows if row.kind != PAPER]
    notes = []
    random = [row for row in ours if row.get("random_weights")]
    if random:
        notes.append(random_weights_note(any(not row.get("n_apa_parsed") for row in random)))
    differing = dict.fromkeys((row.get("source"), row.get("differs_from_paper")) for row in ours
                              if row.get("differs_from_paper"))
    if differing:
        notes.append(f"**Runs marked {SETTING_MARK} did not train in the paper's setting**, so their rows stand beside "
                     "the paper's for the layout, not as a reproduction of it: "
                     + "; ".join(f"{source}: {differs}" for source, differs in differing) + ".")
    return notes


def baseline_metrics(folder: Path) -> dict | None:
    """The untrained model's metrics: `folder` is its evaluation, or holds it (as <sweep>/baseline/base_model/)."""
    for candidate in (folder, folder / "base_model"):
        if (candidate / METRICS).is_file():
            return read_metrics(candidate)
    return None


def table3_rows(runs: list[Path], baseline: Path | None) -> list[Row]:
    """Rows in the paper's order: epoch 0, then LoRA-only epochs, then Unfreeze epochs; ours first, paper's after."""
    ours = [row for run in runs for row in run_rows(run)]
    base = baseline_metrics(baseline) if baseline else None
    if base is not None:
        ours.append(Row({**base, "setting": NO_TRAINING, "epoch": 0, "source": "this project (untrained)"}))
    order = {NO_TRAINING: 0, LORA_ONLY: 1, UNFREEZE: 2}
    return sorted(ours + paper_rows(LORA_ONLY, UNFREEZE),
                  key=lambda r: (order[r.get("setting")], r.get("epoch"), r.kind == PAPER, r.get("source")))


SHORT = {"pcc_accuracy": "acc", "pcc_fluency": "flu", "pcc_prosodic": "pros", "pcc_total": "total", "wer": "WER",
         "per": "PER", "mdd_f1": "F1", "mdd_precision": "P", "mdd_recall": "R"}
INSIDE_NOTE = ("Paper inside our 95 % CI: of the paper's figures for the same setting and epoch, how many lie inside "
               "our row's interval, and which: the plain answer to \"did we reproduce it?\" (few test speakers give "
               "wide intervals; docs/metrics.md, Uncertainty).")


def paper_inside(row: Row, paper: dict[tuple, Row]) -> str:
    """'3/9: acc, flu, WER' for one of our rows: the paper's values (same setting and epoch) inside our intervals."""
    theirs = paper.get((row.get("setting"), row.get("epoch")))
    if row.kind == PAPER or theirs is None or not row.get("ci95"):
        return ""
    compared = [k for k in TABLE_COLUMNS if theirs.get(k) is not None and row.get(f"{k}_ci95_low") is not None]
    inside = [k for k in compared if row.get(f"{k}_ci95_low") <= theirs.get(k) <= row.get(f"{k}_ci95_high")]
    return f"{len(inside)}/{len(compared)}" + (": " + ", ".join(SHORT[k] for k in inside) if inside else "")


def setting_differences(runs: list[Path]) -> list[Row]:
    """Unfreeze minus LoRA-only at each epoch both evaluated, run against run with the same seed (apa.reporting.
    confidence: paired on the same test set)."""
    by_setting: dict[str, dict] = {LORA_ONLY: {}, UNFREEZE: {}}
    for run in runs:
        record = read_record(run)
        by_setting[setting_of(record)][record["config"].get("seed")] = run
    rows = []
    for seed, unfreeze in by_setting[UNFREEZE].items():
        lora = by_setting[LORA_ONLY].get(seed)
        if lora is None:
            continue
        epochs_l = {e.name: e for e in evaluations(lora) if epoch_of(e.name).isdigit()}
        for e in evaluations(unfreeze):
            if e.name in epochs_l:
                rows += compare_evaluations(e, epochs_l[e.name],
                                            f"{UNFREEZE} − {LORA_ONLY}, epoch {epoch_of(e.name)} (seed {seed})")
    return rows


def data_line(runs: list[Path]) -> str:
    """Which dataset (revision, label release) the runs trained on, from their records; several are named as such."""
    described = sorted({describe((read_record(run) or {}).get("data", {}).get("dataset")) for run in runs})
    if len(described) > 1:
        return "**The runs trained on different data**: " + "; ".join(described) + "."
    return "Data: " + (described[0] if described else "no run") + "."


def write_table3(runs: list[Path], baseline: Path | None, out: Path) -> str:
    """table3.md and table3.csv in `out`; returns the Markdown table."""
    rows = table3_rows(runs, baseline)
    paper = {(r.get("setting"), r.get("epoch")): r for r in rows if r.kind == PAPER}
    inside = Column("paper inside our 95 % CI", lambda row: paper_inside(row, paper), note=INSIDE_NOTE)
    table = Table([value("setting"), value("epoch"), Column("source", _source), *metric_columns(), inside,
                   *coverage_columns()], rows, KEYS)
    marks = setting_notes(rows)
    differences = setting_differences(runs)
    missing = [] if any(r.get("setting") == NO_TRAINING and r.kind != PAPER for r in rows) else [
        "No untrained baseline was found (evaluate it with `python evaluate.py model=... data=...`, or pass "
        "--baseline)."]
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "table3.md",
                 "# Table 3, reproduced\n\nThe paper's Table 3 (arXiv 2509.02915): PCC per aspect, WER, PER and F1 "
                 "(P, R) per epoch, for the LoRA-only and the Unfreeze settings; each of our rows above the paper's "
                 f"for the same setting and epoch. {' '.join([*table.notes, *missing])}\n\n{data_line(runs)}\n\n"
                 + "".join(f"{note}\n\n" for note in marks) + table.markdown() + _differences_section(differences))
    write_atomic(out / "table3.csv", table.csv())
    if differences:
        write_atomic(out / "table3_differences.csv", difference_table(differences).csv())
    return table.markdown() + "".join(f"\n{note}\n" for note in marks) + "".join(f"\n{line}" for line in
                                                                               verdicts(differences))


def _differences_section(rows: list[Row]) -> str:
    if not rows:
        return ""
    return (f"\n## {UNFREEZE} − {LORA_ONLY}, epoch by epoch\n\n{DIFFERENCE_NOTE}\n\n"
            + difference_table(rows).markdown())


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="a sweep folder, or run folders")
    parser.add_argument("--baseline", type=Path, help="folder of the untrained model's evaluation "
                        "(default: <first path>/baseline)")
    parser.add_argument("--out", type=Path, help="where to write table3.md/csv (default: the first path)")
    args = parser.parse_args(argv)
    runs = find_runs(args.paths)
    print(write_table3(runs, args.baseline or args.paths[0] / BASELINE_DIR, output_folder(args.out or args.paths[0])))


if __name__ == "__main__":
    main()
