"""Comparisons with their uncertainty: runs that differ only in their seed form one configuration (mean ± sd across
seeds), and two configurations evaluated on the same test set are compared pair by pair (apa.uncertainty.paired:
the difference, its paired speaker-bootstrap interval and p-value; Zou's interval and Steiger's p for PCCs).

The tables it makes (each a `Table`): the seed aggregate and the differences, in comparison.md|csv, table3.md and
report.html; `verdicts` gives the console's one sentence per pair.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from statistics import mean, stdev

from apa.metrics import fmt
from apa.reporting.runs import read_answers
from apa.reporting.table import TABLE_COLUMNS, TABLE_HEADERS, Column, Row, Table, value
from apa.run_folder import EVAL_DIR, FINAL_MODEL, SPLIT_FILE, epoch_of, evaluations, read_metrics, read_record
from apa.run_folder.check import flatten_config
from apa.uncertainty import RESAMPLES, SEED, SPEAKER, NotPaired, paired

log = logging.getLogger(__name__)

# What may differ between the runs of one configuration: the seed (and what interpolates it), and how a run was
# started or continued. Two runs of one configuration with the same SEED_KEYS are one training run twice.
SEED_KEYS = frozenset({"seed", "trainer.seed", "trainer.data_seed"})
RESTART_KEYS = frozenset({"resume", "extend", "allow_other_versions"})
HEADLINE = ("pcc_accuracy", "pcc_fluency", "pcc_prosodic", "pcc_total", "wer", "per", "mdd_f1")  # differences
HEADERS = dict(zip(TABLE_COLUMNS, TABLE_HEADERS, strict=True))


@dataclass(frozen=True)
class Configuration:
    """Runs that differ only in SEED_KEYS (and RESTART_KEYS): `label` names what sets it apart from the others
    compared; `runs` holds one run per seed (the replicates); `repeats` each further run of a seed already there,
    with the run it repeats (the same config and seed: not a replicate, counted once)."""

    label: str
    runs: tuple[Path, ...]
    repeats: tuple[tuple[Path, Path], ...] = ()

    def seed_of(self, run: Path) -> object:
        return read_record(run)["config"].get("seed")


def configurations(runs: list[Path], labels: dict[Path, str]) -> list[Configuration]:
    """`runs` grouped by their resolved config without SEED_KEYS and RESTART_KEYS, in order of first appearance,
    each run of a seed already in its group set apart as a repeat. A group is labelled by the keys whose values
    differ between groups (`lora.name=fresh_r64`), or by its first run's label."""
    whole = {run: flatten_config(read_record(run)["config"]) for run in runs}
    flat = {run: {k: v for k, v in config.items() if k not in SEED_KEYS | RESTART_KEYS}
            for run, config in whole.items()}
    groups: dict[str, list[Path]] = {}
    for run in runs:
        groups.setdefault(json.dumps(flat[run], sort_keys=True, default=str), []).append(run)
    firsts = [members[0] for members in groups.values()]
    keys = sorted(set().union(*(flat[r].keys() for r in firsts)))
    differing = [k for k in keys if len({json.dumps(flat[r].get(k), default=str) for r in firsts}) > 1]
    # a config group chosen by name (lora=fresh_r64) is named so, its other keys left out
    named = [k.removesuffix(".name") for k in differing if k.endswith(".name")]
    shown_keys = [f"{k}.name" for k in named] + [
        k for k in differing if not k.endswith(".name") and not k.startswith(tuple(f"{n}." for n in named))]
    out = []
    for members in groups.values():
        shown = ", ".join(f"{k.removesuffix('.name')}={_short(flat[members[0]].get(k))}" for k in shown_keys[:3])
        seeds: dict[str, Path] = {}  # each seed's first run
        repeats = []
        for run in members:
            seed = json.dumps({k: whole[run].get(k) for k in sorted(SEED_KEYS)}, default=str)
            if seed in seeds:
                repeats.append((run, seeds[seed]))
            else:
                seeds[seed] = run
        out.append(Configuration(shown or labels[members[0]], tuple(seeds.values()), tuple(repeats)))
    return out


REPEATS_TITLE = "Repeated runs"


def repeats_note(configs: list[Configuration], labels: dict[Path, str]) -> str | None:
    """The runs that repeat another run's config and seed, named, and how they are counted; None without any."""
    pairs = [(run, first, config.seed_of(run)) for config in configs for run, first in config.repeats]
    if not pairs:
        return None
    named = "; ".join(f"{labels[run]} repeats {labels[first]} (seed {seed})" for run, first, seed in pairs)
    return (f"**Same config, same seed: not replicates.** {named}. Such runs are one training run twice (any "
            "difference between them is nondeterminism, not the spread across seeds), so \"Across seeds\" and the "
            "differences count each seed once, its first run; their own rows above stand as they are. For "
            "replicates, sweep the seed: `python train.py -m seed=1,2,3 …`.")


def _short(v) -> str:
    return json.dumps(v) if isinstance(v, (list, dict)) else str(v)


# ---------------------------------------------------------------------------------------------------------------
# Across seeds
# ---------------------------------------------------------------------------------------------------------------


def seed_rows(configs: list[Configuration]) -> list[Row]:
    """Per configuration with two or more runs and per checkpoint all of them evaluated: the mean and (sample)
    standard deviation of each metric across the runs (NaN where a run's figure is undefined)."""
    rows = []
    for config in configs:
        if len(config.runs) < 2:
            continue
        per_run = [{e.name: read_metrics(e) for e in evaluations(run)} for run in config.runs]
        common = [name for name in per_run[0] if all(name in m for m in per_run[1:])]
        for name in common:
            values = {"configuration": config.label, "checkpoint": name, "epoch": epoch_of(name),
                      "seeds": ", ".join(str(config.seed_of(r)) for r in config.runs), "n": len(config.runs)}
            for key in TABLE_COLUMNS:
                xs = [m[name].get(key) for m in per_run]
                defined = [x for x in xs if x is not None and not math.isnan(x)]
                values[f"{key}_mean"] = mean(defined) if len(defined) == len(xs) else math.nan
                values[f"{key}_sd"] = stdev(defined) if len(defined) == len(xs) else math.nan
            rows.append(Row(values))
    return rows


def seed_table(configs: list[Configuration]) -> Table | None:
    """The seed aggregate (`mean ± sd`), or None where no configuration has two runs."""
    rows = seed_rows(configs)
    if not rows:
        return None
    columns = [value("configuration"), value("checkpoint"), value("seeds"),
               *(Column(HEADERS[k], lambda row, k=k: _mean_sd(row, k), numeric=True) for k in TABLE_COLUMNS)]
    keys = ["configuration", "checkpoint", "epoch", "seeds", "n",
            *(f"{k}_{s}" for k in TABLE_COLUMNS for s in ("mean", "sd"))]
    return Table(columns, rows, keys)


def _mean_sd(row: Row, key: str) -> str:
    m, s = row.get(f"{key}_mean"), row.get(f"{key}_sd")
    return "n/a" if m is None or math.isnan(m) else f"{m:.3f} ± {s:.3f}"


# ---------------------------------------------------------------------------------------------------------------
# Differences between configurations
# ---------------------------------------------------------------------------------------------------------------


def _speakers(eval_dir: Path) -> dict[str, str] | None:
    path = eval_dir / SPLIT_FILE
    try:
        return json.loads(path.read_text()).get("speakers") if path.is_file() else None
    except ValueError:
        return None


def _settings(eval_dir: Path) -> dict:
    """The bootstrap the evaluation used for its own intervals (its metrics' ci_method), so both agree."""
    method = read_metrics(eval_dir).get("ci_method") or {}
    return {"resamples": method.get("resamples", RESAMPLES), "seed": method.get("seed", SEED),
            "unit": method.get("unit", SPEAKER)}


def compare_evaluations(a: Path, b: Path, label: str) -> list[Row]:
    """One row per HEADLINE metric: evaluation `a` minus `b` (same test set), or one row saying why not paired."""
    answers_a, answers_b = read_answers(a), read_answers(b)
    empty = [e for e, answers in ((a, answers_a), (b, answers_b)) if not answers]
    if empty:
        return [Row({"pair": label, "checkpoint": a.name, "metric": "",
                     "verdict": "not paired: no answers to pair in "
                                + ", ".join(str(Path(*e.parts[-3:])) for e in empty)})]  # <run>/eval/<checkpoint>
    try:
        result = paired(answers_a, answers_b, _speakers(a), **_settings(a))
    except NotPaired as e:
        return [Row({"pair": label, "checkpoint": a.name, "metric": "", "verdict": f"not paired: {e}"})]
    rows = []
    for key in HEADLINE:
        r = result[key]
        low, high = r["ci95"] or (None, None)
        zou = r.get("zou_ci95") or (None, None)
        rows.append(Row({"pair": label, "checkpoint": a.name, "metric": key, "a": r["a"], "b": r["b"],
                         "difference": r["difference"], "ci95_low": low, "ci95_high": high, "p": r["p"],
                         "zou_ci95_low": zou[0], "zou_ci95_high": zou[1], "steiger_p": r.get("steiger_p"),
                         "n_both": r.get("n_both"), "method": result["method"]["method"],
                         "verdict": _words(low, high)}))
    return rows


def _words(low, high) -> str:
    if low is None:
        return "undefined here (too few answers, or constant scores in many resamples)"
    return "no evidence of a difference" if low <= 0 <= high else ("a higher" if low > 0 else "a lower")


def _last_common(a: Path, b: Path) -> str | None:
    """The checkpoint two runs are compared at: final_model if both have it evaluated, else their last common epoch."""
    names_a, names_b = {e.name for e in evaluations(a)}, {e.name for e in evaluations(b)}
    common = names_a & names_b
    if FINAL_MODEL in common:
        return FINAL_MODEL
    epochs = sorted((int(epoch_of(n)), n) for n in common if epoch_of(n).isdigit())
    return epochs[-1][1] if epochs else None


def difference_rows(configs: list[Configuration], labels: dict[Path, str]) -> list[Row]:
    """Each pair of configurations, run against run with the same seed (every pair of runs where no seed is shared),
    at their final (or last common) checkpoint."""
    rows = []
    for first, second in combinations(configs, 2):
        seeds_b = {second.seed_of(r): r for r in second.runs}
        matched = [(a, seeds_b[first.seed_of(a)]) for a in first.runs if first.seed_of(a) in seeds_b]
        for a, b in matched or [(a, b) for a in first.runs for b in second.runs]:
            checkpoint = _last_common(a, b)
            if checkpoint is None:
                continue
            label = f"{first.label} − {second.label} ({labels[a]} − {labels[b]})"
            rows += compare_evaluations(a / EVAL_DIR / checkpoint, b / EVAL_DIR / checkpoint, label)
    return rows


def difference_table(rows: list[Row]) -> Table:
    """The differences, one line per pair and metric: `+0.013 [-0.008, 0.034]`, p, and for PCCs Zou's interval and
    Steiger's p."""
    columns = [value("pair"), value("checkpoint"), Column("metric", lambda r: HEADERS.get(r.get("metric"), "")),
               Column("a − b [95 % CI]", _difference, numeric=True),
               Column("p", lambda r: _p(r.get("p")), numeric=True),
               Column("Zou 95 % CI (PCC)", lambda r: _interval(r.get("zou_ci95_low"), r.get("zou_ci95_high")),
                      numeric=True),
               Column("Steiger p (PCC)", lambda r: _p(r.get("steiger_p")), numeric=True), value("verdict")]
    keys = ["pair", "checkpoint", "metric", "a", "b", "difference", "ci95_low", "ci95_high", "p", "zou_ci95_low",
            "zou_ci95_high", "steiger_p", "n_both", "method", "verdict"]
    return Table(columns, rows, keys)


DIFFERENCE_NOTE = ("a − b: the first run's figure minus the second's on the same test set; its 95 % interval and p "
                   "from a paired bootstrap over the test speakers (the same resampled speakers for both runs; "
                   "utterances where the split has fewer than 5 speakers: the CSV's method column says which); for "
                   "PCCs also Zou's (2007) interval and Steiger's (1980) test over the utterances both parsed "
                   "(docs/metrics.md, Uncertainty). Lower is better for WER and PER.")


def _difference(row: Row) -> str:
    d = row.get("difference")
    if d is None or math.isnan(d):
        return "n/a" if row.get("metric") else ""
    return f"{d:+.3f}" + (f" {_interval(row.get('ci95_low'), row.get('ci95_high'), signed=True)}"
                          if row.get("ci95_low") is not None else "")


def _interval(low, high, signed: bool = False) -> str:
    if low is None:
        return ""
    return f"[{low:+.3f}, {high:+.3f}]" if signed else f"[{fmt(low)}, {fmt(high)}]"


def _p(p) -> str:
    return "" if p is None else ("< 0.001" if p < 0.001 else f"{p:.3f}")


def verdicts(rows: list[Row], metric: str = "pcc_total") -> list[str]:
    """One sentence per pair: `a − b, PCC total: +0.013 [-0.008, 0.034], p = 0.22: no evidence of a difference`."""
    out = []
    for row in rows:
        if row.get("metric") == metric:
            p = _p(row.get("p")) or "n/a"
            out.append(f"{row.get('pair')}, {HEADERS[metric]} at {row.get('checkpoint')}: {_difference(row)}, "
                       f"p {p if p.startswith('<') else '= ' + p}: {row.get('verdict')}")
        elif not row.get("metric"):
            out.append(f"{row.get('pair')}: {row.get('verdict')}")
    return out
