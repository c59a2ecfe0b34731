"""experiment=table3: both Table 3 settings for 4 epochs, every epoch evaluated, the untrained baseline, and one
table laid out as the paper's, its values beside ours."""

import csv
import json

from omegaconf import OmegaConf

from apa.reporting.table import LORA_ONLY, NO_TRAINING, PAPER_TABLE3, PAPER_UNFREEZE, UNFREEZE, paper_rows
from apa.reporting.table3 import differences_from_paper, write_table3
from tests.synthetic_runs import make_sweep


def test_the_paper_values_are_stored_as_printed():
    assert PAPER_TABLE3[0][2] == -0.0493  # epoch-0 prosodic, as the paper prints it
    assert PAPER_TABLE3[3][:4] == (0.656, 0.727, 0.711, 0.675) and PAPER_UNFREEZE[4][6] == 0.667
    # Unfreeze: every epoch, with P and R (arXiv 2509.02915v1, Table 3)
    assert PAPER_UNFREEZE[1] == (0.535, 0.559, 0.564, 0.55, 0.159, 0.199, 0.575, 0.579, 0.57)
    assert PAPER_UNFREEZE[4][7:] == (0.671, 0.663) and PAPER_UNFREEZE[2][6:] == (0.651, 0.651, 0.651)


def test_all_nine_paper_rows_carry_f1_precision_and_recall():
    rows = paper_rows()
    assert [(r.get("setting"), r.get("epoch")) for r in rows] == [
        (NO_TRAINING, 0), *((LORA_ONLY, e) for e in (1, 2, 3, 4)), *((UNFREEZE, e) for e in (1, 2, 3, 4))]
    for row in rows:
        assert all(isinstance(row.get(k), float) for k in ("mdd_f1", "mdd_precision", "mdd_recall")), row


def _record(make_config, *overrides: str, world_size: int = 1) -> dict:
    """A run record's config as train.py composes and records it."""
    return {"config": OmegaConf.to_container(make_config(*overrides), resolve=True), "data": {"world_size": world_size}}


def test_what_a_run_changed_from_the_paper_s_setting_is_read_from_its_record(make_config):
    assert differences_from_paper(_record(make_config, "experiment=table3_lora_only")) == []
    # the same 64 examples per optimizer step, other batching: still the paper's setting
    assert differences_from_paper(_record(make_config, "experiment=table3_unfreeze", "trainer=fast_b64x1")) == []
    assert differences_from_paper(_record(make_config, "experiment=table3", "trainer=b32x2", world_size=2)) == [
        "128 examples per optimizer step (paper: 64)"]
    assert differences_from_paper(_record(make_config, "experiment=demo")) == [
        "model=tiny: random weights", "prompts=concise (paper: prompts=paper)", "data=sample (paper: speechocean762)",
        "data.labels=2024 (paper: original)", "data.limit=4 (paper: the whole split)",
        "trainer.num_train_epochs=2 (paper: 4)", "trainer.learning_rate=0.001 (paper: 2e-05)",
        "8 examples per optimizer step (paper: 64)"]
    assert differences_from_paper(_record(make_config, "experiment=table3", "model.unfreeze=[audio_encoder]",
                                          "prompts.mdd=Transcribe.", "trainer.max_steps=5")) == [
        "prompts=paper edited (not the paper's text)", "trainer.max_steps=5 (paper: whole epochs)",
        'model.unfreeze=["audio_encoder"] (paper\'s Unfreeze: ["audio_encoder", "audio_projector"])']
    # scored on its own training split, or trained without the speakers held out for validation
    assert differences_from_paper(_record(make_config, "experiment=table3", "data.test_split=train",
                                          "data.validation_fraction=0.1")) == [
        "data.test_split=train (paper: test)",
        "data.validation_fraction=0.1 (paper: trains on the whole train split)"]


def test_table3_marks_a_demo_run_and_says_how_it_differs_from_the_paper(tmp_path, capsys):
    """`apa table3 <demo run>` placed a random-weights run trained on other prompts, data and trainer numbers as
    "LoRA-only" rows beside the paper's, unmarked. Its rows are marked as compare marks them († random weights) and
    ≠ (not the paper's setting), and table3.md, table3.csv and the console say what differs."""
    from apa.reporting.table3 import main

    run = make_sweep(tmp_path / "sweep", runs=("fresh_r64_0",), epochs=2, tiny=True, unparsed=1.0) / "fresh_r64_0"
    main([str(run)])
    table = (run / "table3.md").read_text()
    lines = [line for line in table.splitlines() if line.startswith("| LoRA-only | 1 |")]
    assert lines[0].startswith("| LoRA-only | 1 | fresh_r64_0 † ≠ |") and "| paper |" in lines[1], lines
    differs = ("fresh_r64_0: model=tiny: random weights; data=sample (paper: speechocean762); data.labels=2024 "
               "(paper: original); trainer.num_train_epochs=2 (paper: 4); trainer.learning_rate=0.001 (paper: 2e-05).")
    setting = "**Runs marked ≠ did not train in the paper's setting**, so their rows stand beside the paper's"
    for text in (table, capsys.readouterr().out):
        assert "**Runs marked † started from a generated miniature with random weights**" in text
        assert setting in text and differs in text
    with (run / "table3.csv").open() as f:
        ours = [r for r in csv.DictReader(f) if r["source"] == "fresh_r64_0"]
    assert len(ours) == 2 and all(r["random_weights"] == "True" for r in ours)
    assert ours[0]["differs_from_paper"] == differs.removeprefix("fresh_r64_0: ").removesuffix(".")


def test_the_sweep_trains_both_settings_for_four_epochs_and_writes_table3(table3_sweep):
    runs = {p.name: json.loads((p / "training_config.json").read_text())
            for p in table3_sweep.glob("table3_*/") if (p / "training_config.json").exists()}
    assert set(runs) == {"table3_lora_only_0", "table3_unfreeze_1"}
    assert runs["table3_lora_only_0"]["config"]["model"]["unfreeze"] == []
    assert runs["table3_unfreeze_1"]["config"]["model"]["unfreeze"] == ["audio_encoder", "audio_projector"]
    for name, record in runs.items():
        assert record["config"]["trainer"]["num_train_epochs"] == 4
        evaluated = sorted(p.parent.name for p in (table3_sweep / name / "eval").glob("checkpoint-epoch-*/metrics.json")
                           )
        assert evaluated == [f"checkpoint-epoch-{e}" for e in (1, 2, 3, 4)]
    assert (table3_sweep / "baseline" / "base_model" / "metrics.json").exists()
    with (table3_sweep / "table3.csv").open() as f:
        rows = list(csv.DictReader(f))
    ours = [(r["setting"], int(r["epoch"])) for r in rows if r["source"] != "paper"]
    settings = [(s, e) for s in ("LoRA-only", "Unfreeze") for e in (1, 2, 3, 4)]
    assert sorted(ours) == sorted([("no training", 0), *settings])
    paper = {(r["setting"], int(r["epoch"])): r for r in rows if r["source"] == "paper"}
    assert float(paper[("no training", 0)]["pcc_prosodic"]) == -0.0493
    assert float(paper[("LoRA-only", 3)]["mdd_f1"]) == 0.724 and ("Unfreeze", 4) in paper
    table = (table3_sweep / "table3.md").read_text()
    assert "MDD F1 (standard TA/FR/FA/TR hierarchy)" in table and "utterances evaluated" in table
    # each of our rows sits directly above the paper's row for the same setting and epoch
    lines = [line for line in table.splitlines() if line.startswith("| LoRA-only | 3 |")]
    assert len(lines) == 2 and "paper" in lines[1] and "table3_lora_only_0" in lines[0]
    for epoch in (1, 2, 3, 4):  # and so for every Unfreeze epoch, the paper's with P and R
        lines = [line for line in table.splitlines() if line.startswith(f"| Unfreeze | {epoch} |")]
        assert len(lines) == 2 and "table3_unfreeze_1" in lines[0] and "| paper |" in lines[1], lines
        assert f"| {PAPER_UNFREEZE[epoch][7]:.3f} | {PAPER_UNFREEZE[epoch][8]:.3f} |" in lines[1], lines[1]


def test_table3_without_a_baseline_says_so(table3_sweep, tmp_path):
    write_table3([table3_sweep / "table3_lora_only_0"], tmp_path / "nowhere", tmp_path)
    text = (tmp_path / "table3.md").read_text()
    assert "No untrained baseline was found" in text and "Unfreeze | 4 | paper" in text
    assert "| no training | 0 | this project" not in text


def test_table3_finds_the_runs_of_a_sweep_whose_jobs_ran_elsewhere(table3_sweep, tmp_path, capsys):
    """Under a launcher that runs jobs in other processes (submitit, joblib) the sweep's callback saw no job: it
    finds the runs in the sweep folder, takes the base model from their records, and writes table3.md."""
    import shutil

    from apa.callbacks import EvaluateAndCompare

    sweep = tmp_path / "sweep"
    shutil.copytree(table3_sweep, sweep)
    (sweep / "table3.md").unlink()
    callback = EvaluateAndCompare(table3=True, compare=False, report=False)
    callback._table3(sweep)
    assert not callback.failures and len(callback.runs) == 2
    assert "unfreeze" not in callback.base_model["model"]  # the untrained base: no setting's modules
    table = (sweep / "table3.md").read_text()
    assert "| Unfreeze | 4 | table3_unfreeze_1 † ≠ |" in table and "| no training | 0 | this project" in table


def test_the_sweep_prints_one_table_at_its_end_and_logs_the_rest(table3_sweep):
    """The console of the README's CPU Table 3 command (the fixture ran it as a user does): table3.md's table once,
    no run's own table, no comparison table; no log lines (none tagged [HYDRA]) and not transformers' known longrope
    advice; the detail in the runs' train.log and the sweep's multirun.log."""
    from apa.callbacks import SWEEP_LOG
    from apa.checkpoint.layout import ROPE_FACTOR_WARNING

    console = table3_sweep.with_name(table3_sweep.name + ".log").read_text()
    assert console.count("| setting | epoch | source |") == 1, console[-3000:]  # table3.md's table
    assert "| source | epoch |" not in console and "| run | lora |" not in console  # no epochs.md, no comparison
    lines = console.rstrip().splitlines()
    table_at = next(i for i, line in enumerate(lines) if line.startswith("| setting | epoch | source |"))
    summary_at = next(i for i, line in enumerate(lines) if line.startswith("Sweep "))
    assert table_at < summary_at  # the table, then the sweep's summary, whose last line is the report to open
    assert lines[-1] == (f"Next: open {table3_sweep}/report.html in a browser (apa report {table3_sweep} writes it "
                         "again)")
    assert "[HYDRA]" not in console and "][INFO] - " not in console and ROPE_FACTOR_WARNING not in console
    for run in ("table3_lora_only_0", "table3_unfreeze_1"):
        log = (table3_sweep / run / "train.log").read_text()
        assert "Parameters (lora=pretrained_r320)" in log and "step 4: {'loss'" in log
        assert "checkpoint-epoch-4: pcc_accuracy=" in log  # each evaluation's figures, in the job's log
    assert "base_model: pcc_accuracy=" in (table3_sweep / SWEEP_LOG).read_text()  # the baseline, after the jobs
