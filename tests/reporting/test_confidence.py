"""Comparisons with their uncertainty, from run folders: the evaluation writes each metric's interval; compare and
table3 group runs that differ only in seed, pair configurations on the same test set, and say so in one sentence;
report.html shows it all."""

import json
import random
from pathlib import Path

import pytest

from apa.data.records import APA_ASPECTS
from apa.evaluation.predictions import score_file
from apa.reporting.compare import compare
from apa.reporting.table3 import write_table3
from apa.run_folder import PREDICTIONS, SPLIT_FILE, write_record

SPEAKERS = 12


def _answers(quality: float, seed: int) -> list[dict]:
    """Answers to one fixed test set (the same ids and references for every run), scores off by `quality`."""
    refs, rng = random.Random(0), random.Random(seed)
    out = []
    for s in range(SPEAKERS):
        for u in range(4):
            uid = f"{s:03d}{u:02d}"
            human = refs.randint(2, 10)
            off = rng.gauss(0, quality)
            out.append({"id": uid, "task": "apa", "raw": "", "reference": dict.fromkeys(APA_ASPECTS, human),
                        "prediction": {a: min(10, max(0, round(human + off))) for a in APA_ASPECTS}})
            out.append({"id": uid, "task": "mdd", "raw": "",
                        "reference": {"word_transcript": "A B", "phoneme_transcript": "K AH T",
                                      "canonical_phones": "K AE T"},
                        "prediction": {"word_transcript": "A B" if rng.random() < 0.7 else "A",
                                       "phoneme_transcript": "K AH T" if rng.random() < 0.5 else "K AE T"}})
    return out


def _run(root: Path, name: str, lora: str, seed: int, quality: float, unfreeze=(), epochs=("final_model",)) -> Path:
    run = root / name
    run.mkdir(parents=True)
    write_record(run, {
        "config": {"model": {"name": "tiny", "tiny": True, "unfreeze": list(unfreeze)},
                   "lora": {"name": lora, "r": 64 if lora == "fresh_r64" else 320},
                   "trainer": {"num_train_epochs": 2, "seed": seed}, "data": {"limit": None}, "seed": seed},
        "parameters": {"total": 10, "trainable": 5}, "data": {"dataset": None}, "loss_history": [[1, 2.0]],
    })
    for checkpoint in epochs:
        folder = run / "eval" / checkpoint
        folder.mkdir(parents=True)
        (folder / PREDICTIONS).write_text("".join(json.dumps(r) + "\n" for r in _answers(quality, seed)))
        (folder / SPLIT_FILE).write_text(json.dumps(
            {"utterances_in_split": SPEAKERS * 4, "speakers": {f"{s:03d}{u:02d}": f"spk{s}" for s in range(SPEAKERS)
                                                               for u in range(4)}}))
        score_file(folder / PREDICTIONS, dict.fromkeys(APA_ASPECTS, 6.0), {"resamples": 400, "seed": 0})
    return run


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    for seed in (1, 2):  # a good and a poor configuration, two seeds each
        _run(root, f"pretrained_r320_{seed}", "pretrained_r320", seed, quality=0.5)
        _run(root, f"fresh_r64_{seed}", "fresh_r64", seed, quality=3.0)
    return root


def test_evaluation_writes_each_metrics_interval_and_how(sweep):
    metrics = json.loads((sweep / "fresh_r64_1" / "eval" / "final_model" / "metrics.json").read_text())
    low, high = metrics["ci95"]["pcc_total"]
    assert low <= metrics["pcc_total"] <= high
    assert metrics["ci_method"]["unit"] == "speaker" and metrics["ci_method"]["speakers"] == SPEAKERS
    assert metrics["ci_method"]["resamples"] == 400


@pytest.mark.slow
def test_compare_groups_seeds_pairs_configurations_and_gives_a_verdict(sweep, tmp_path):
    printed = compare([sweep], tmp_path)
    text = (tmp_path / "comparison.md").read_text()
    assert "## Differences between configurations" in text and "## Across seeds" in text
    # each configuration named by what sets it apart; paired run against run with the same seed
    assert "lora=fresh_r64 − lora=pretrained_r320 (fresh_r64_1 − pretrained_r320_1)" in text
    assert "(fresh_r64_1 − pretrained_r320_2)" not in text
    seeds = (tmp_path / "comparison_seeds.csv").read_text().splitlines()
    assert seeds[0].startswith("configuration,checkpoint,epoch,seeds,n,pcc_accuracy_mean,pcc_accuracy_sd")
    assert sum(line.startswith("lora=") for line in seeds) == 2 and all(",\"1, 2\",2," in s for s in seeds[1:])
    differences = (tmp_path / "comparison_differences.csv").read_text()
    row = next(line for line in differences.splitlines() if ",pcc_total," in line and "_1 − " in line)
    assert row.endswith(",a lower")  # 3 vs 0.5 points of noise: the worse configuration, clearly
    # the console: one sentence per pair
    assert "PCC total at final_model: -0." in printed and "p < 0.001: a lower" in printed
    # every figure of ours with its interval
    assert any("[" in cell for cell in text.split("|") if cell.strip().startswith("0."))


@pytest.mark.slow
def test_report_html_shows_the_differences_and_the_seeds(sweep, tmp_path):
    from apa.reporting.report import write_report

    page = write_report([sweep], tmp_path, audio="none").read_text()
    assert "Differences and seeds" in page and "Across seeds" in page and "Zou 95 % CI (PCC)" in page
    assert "± " in page


def test_table3_pairs_unfreeze_with_lora_only_epoch_by_epoch_and_checks_the_paper(tmp_path):
    epochs = ("checkpoint-epoch-1", "checkpoint-epoch-2")
    runs = [_run(tmp_path, "lora_only", "pretrained_r320", 7, 1.0, epochs=epochs),
            _run(tmp_path, "unfreeze", "pretrained_r320", 7, 1.0, unfreeze=["audio_encoder"], epochs=epochs)]
    printed = write_table3(runs, None, tmp_path)
    text = (tmp_path / "table3.md").read_text()
    assert "## Unfreeze − LoRA-only, epoch by epoch" in text
    assert "Unfreeze − LoRA-only, epoch 2 (seed 7)" in text and "Unfreeze − LoRA-only, epoch 1 (seed 7)" in text
    # the same answers in both: no difference, said so
    assert "no evidence of a difference" in printed
    assert (tmp_path / "table3_differences.csv").is_file()
    # the paper's figures checked against our intervals, per row
    line = next(row for row in text.splitlines() if row.startswith("| LoRA-only | 1 | lora_only † ≠ |"))
    assert "/9" in line


@pytest.mark.slow
def test_runs_of_one_name_from_two_sweeps_stay_apart_and_a_run_given_twice_counts_once(tmp_path):
    import csv

    for sweep in ("a", "b"):
        _run(tmp_path / sweep, "pretrained_r320_1", "pretrained_r320", 1, quality=1.0)
    out = tmp_path / "out"
    compare([tmp_path / "a", tmp_path / "b", tmp_path / "a" / "pretrained_r320_1"], out)
    with (out / "comparison.csv").open() as f:
        ours = [r["run"] for r in csv.DictReader(f) if not r["run"].startswith("paper")]
    assert ours == ["a/pretrained_r320_1", "b/pretrained_r320_1"]
    assert sorted(p.name for p in out.glob("scatter_*.png")) == ["scatter_a__pretrained_r320_1.png",
                                                                   "scatter_b__pretrained_r320_1.png"]


@pytest.mark.slow
def test_runs_of_one_config_and_one_seed_are_one_run_twice_not_two_seeds(tmp_path):
    """`multirun.sh lora=fresh_r64,fresh_r64` trained one job twice (seed 42 both times), and "Across seeds" showed
    the pair as a two-seed mean ± sd (`seeds 42, 42`, `± 0.000`). A repeat counts once there (and in the
    differences), and comparison.md, the console and report.html name it."""
    from apa.reporting.report import write_report

    sweep = tmp_path / "sweep"
    for name, seed in (("fresh_r64_0", 42), ("fresh_r64_1", 42), ("fresh_r64_2", 7)):
        _run(sweep, name, "fresh_r64", seed, quality=1.0)
    note = "**Same config, same seed: not replicates.** fresh_r64_1 repeats fresh_r64_0 (seed 42)."
    printed = compare([sweep], tmp_path / "three")
    assert note in printed and note in (tmp_path / "three" / "comparison.md").read_text()
    seeds = (tmp_path / "three" / "comparison_seeds.csv").read_text().splitlines()
    assert len(seeds) == 2 and seeds[1].startswith('fresh_r64_0,final_model,final,"42, 7",2,'), seeds
    # the repeated pair alone: no seed aggregate at all, only the note
    (sweep / "fresh_r64_2" / "training_config.json").unlink()
    printed = compare([sweep / "fresh_r64_0", sweep / "fresh_r64_1"], tmp_path / "two")
    assert "## Across seeds" not in printed and "± " not in printed and f"## Repeated runs\n\n{note}" in printed
    assert not (tmp_path / "two" / "comparison_seeds.csv").exists()
    page = write_report([sweep / "fresh_r64_0", sweep / "fresh_r64_1"], tmp_path / "two", audio="none").read_text()
    section = page[page.index('<section id="confidence">'):page.index('<section id="curves">')]
    assert "<h3>Repeated runs</h3>" in section and "One configuration with one run" not in section
    assert "<strong>Same config, same seed: not replicates.</strong> fresh_r64_1 repeats fresh_r64_0" in section
