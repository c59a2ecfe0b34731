"""Every results table pinned byte for byte: the comparison, epoch, Table 3 and model-card writers on fixed inputs
against golden/. comparison.csv, epochs.csv|md and table3.csv are the bytes the writers produced before they shared
apa.reporting.table. After an intended change: APA_UPDATE_GOLDEN=1 pytest tests/reporting/test_tables.py, and
review the diff of golden/."""

from __future__ import annotations

import ast
import json
import math
import os
from pathlib import Path

import pytest

from apa.metrics import compute_metrics, fmt
from apa.reporting.compare import write_tables
from apa.reporting.epochs import write_epoch_table
from apa.reporting.model_card import model_card
from apa.reporting.table import PAPER, Row, Table, config_value, metric_columns, undefined_note, value, why_undefined
from apa.reporting.table3 import write_table3
from apa.run_folder import FORMAT_VERSION, write_record

GOLDEN = Path(__file__).parent / "golden"
DATA = {"name": "sample", "source": "hub", "hub_id": "org/so762", "revision": "ab" * 20, "labels": "2024"}


def metrics(pcc: float | None, limit: int | None = 4, split: bool = True) -> dict:
    return {"pcc_accuracy": pcc, "pcc_fluency": 0.25, "pcc_prosodic": None, "pcc_total": -0.0493, "wer": 1.0,
            "per": 0.8125, "mdd_f1": None, "mdd_precision": 0.0, "mdd_recall": None, "parse_rate_apa": 0.5,
            "parse_rate_mdd": 1.0, "n_apa": 4, "n_mdd": 4, "n_apa_parsed": 2, "n_mdd_parsed": 4,
            "pcc_accuracy_p": 0.01, "pcc_fluency_p": 0.75, "pcc_total_p": 0.95, "n_utterances_scored": 4,
            "n_utterances_in_split": 4 if split else None, "n_phones_scored": 55,
            "n_phones_in_split": 55 if split else None, "split_limit": limit,
            "ci95": {"pcc_fluency": [-0.5, 0.8], "wer": [0.9, 1.0], "per": None},
            "ci_method": {"method": "speaker bootstrap, percentile interval", "unit": "speaker", "resamples": 2000,
                          "seed": 0, "level": 0.95, "speakers": 2, "utterances": 4}}


def comparison_rows() -> list[dict]:
    """As apa.reporting.runs.collect gives them: two checkpoints of a run, and a run not evaluated."""
    common = {"run": "fresh_r64_1", "lora": "fresh_r64", "trainable_params": 212992, "train_seconds": 1.18,
              "final_train_loss": 10.717803001403809, "random_weights": True}
    data = "sample (hub org/so762 @ abababab, 2024 labels)"
    return [
        {**common, "checkpoint": "checkpoint-epoch-2", "epoch": "2", "test_set": "d397da32c5", "data": data,
         **metrics(0.5)},
        {**common, "checkpoint": "final_model", "epoch": "final", "test_set": "d397da32c5", "data": data,
         **metrics(None, None, split=False)},
        {"run": "untrained_2", "lora": "pretrained_r320", "trainable_params": 1064960, "train_seconds": None,
         "final_train_loss": None, "random_weights": False, "checkpoint": "(not evaluated)", "epoch": ""},
    ]


def epoch_results() -> dict[str, dict]:
    """As the evaluation computes them: an undefined metric is NaN, some are absent."""
    return {"checkpoint-epoch-1": {k: math.nan if v is None else v for k, v in metrics(None).items()},
            "final_model": {"wer": 0.5, "per": 0.25, "n_utterances_scored": 3}}


def run_folders(root: Path) -> list[Path]:
    """A LoRA-only and an Unfreeze run, epochs 1, 2 and 10 and final_model evaluated, and the untrained baseline."""
    runs = []
    for name, unfreeze in (("t3_lora_only_0", []), ("t3_unfreeze_1", ["audio_encoder"])):
        run = root / name
        run.mkdir(parents=True)
        write_record(run, {
            "config": {"model": {"name": "tiny", "tiny": True, "path": "tiny-phi4", "dtype": "float32",
                                 "attn_implementation": "eager", "unfreeze": unfreeze},
                       "lora": {"name": "fresh_r64", "r": 64, "alpha": 128, "dropout": 0.05,
                                "target_modules": "all-linear"},
                       "trainer": {"num_train_epochs": 10.0, "per_device_train_batch_size": 2,  # as records hold it
                                   "gradient_accumulation_steps": 1, "learning_rate": 0.001, "optim": "adamw_torch",
                                   "lr_scheduler_type": "linear"},
                       "data": {"train_split": "train", "limit": 4}, "prompts": {"name": "terse"}, "seed": 0},
            "parameters": {"total": 1000000, "trainable": 212992},
            "data": {"dataset": DATA, "train_utterances": 4, "train_examples": 8},
            "global_steps": 20, "train_seconds": 12.5, "final_train_loss": 3.25, "started": "2026-01-01T00:00:00",
            "finished": "2026-01-01T00:01:00", "git_commit": "0123456789abcdef", "loss_history": [[1, 4.0], [2, 3.25]],
        })
        for checkpoint, pcc in (("checkpoint-epoch-1", 0.125), ("checkpoint-epoch-2", None),
                                ("checkpoint-epoch-10", 0.75), ("final_model", 0.75)):
            (run / "eval" / checkpoint).mkdir(parents=True)
            (run / "eval" / checkpoint / "metrics.json").write_text(json.dumps(metrics(pcc)))
        runs.append(run)
    (root / "baseline" / "base_model").mkdir(parents=True)
    (root / "baseline" / "base_model" / "metrics.json").write_text(json.dumps(metrics(None, split=False)))
    return runs


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tables")
    write_tables(comparison_rows(), out)
    write_epoch_table(epoch_results(), out)
    runs = run_folders(out / "runs")
    write_table3(runs, out / "runs" / "baseline", out)
    (out / "card.md").write_text(model_card(runs[0]).replace(str(out), "<out>"))
    return out


@pytest.mark.parametrize("name", ["comparison.csv", "comparison.md", "epochs.csv", "epochs.md", "table3.csv",
                                  "table3.md", "card.md"])
def test_every_table_is_written_as_pinned(written, name):
    produced = (written / name).read_bytes()
    if os.environ.get("APA_UPDATE_GOLDEN"):
        (GOLDEN / name).write_bytes(produced)
    assert produced == (GOLDEN / name).read_bytes(), f"{name} differs from tests/reporting/golden/{name}"


def test_one_row_renders_alike_in_markdown_and_html_and_raw_in_csv():
    table = Table([value("run"), *metric_columns(("wer", "mdd_f1"))],
                  [Row({"run": "a<b", "wer": 0.5, "mdd_f1": None}), Row({"wer": 0.15}, PAPER)], ["run", "wer"])
    assert table.markdown() == "| run | WER | MDD F1 (standard TA/FR/FA/TR hierarchy) |\n|---|---|---|\n" \
                               "| a<b | 0.500 | n/a |\n| | 0.150 | n/a |\n"
    assert table.csv() == "run,wer\r\na<b,0.5\r\n,0.15\r\n"
    page = table.html("results")
    assert '<tr><td>a&lt;b</td><td class="num">0.500</td><td class="na">n/a</td></tr>' in page
    assert '<tr class="paper"><td></td><td class="num">0.150</td>' in page
    assert len(table.notes) == 1 and table.notes[0].startswith("Our rows: MDD P/R/F1")


def test_reporting_reads_run_folders_only_through_run_folder_and_imports_no_heavy_layer():
    """apa.reporting may import apa.run_folder, apa.metrics, apa.uncertainty, apa.data, apa.errors, apa.constants
    (where conf/ lies: table3 reads the paper's setting there), itself and apa.checkpoint.hub (what a hub id is:
    light, no torch); compare and table3 never each other."""
    allowed = ("apa.run_folder", "apa.metrics", "apa.uncertainty", "apa.data", "apa.errors", "apa.constants",
               "apa.reporting", "apa.checkpoint.hub")
    package = Path(__file__).parents[2] / "apa" / "reporting"
    for module in package.glob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
        ours = {name for name in imported if name == "apa" or name.startswith("apa.")}
        assert all(name.startswith(allowed) for name in ours), (module.name, sorted(ours))
        other = {"compare.py": "apa.reporting.table3", "table3.py": "apa.reporting.compare"}.get(module.name)
        assert other not in imported, f"{module.name} imports {other}"
        for name in ("training_config.json", "metrics.json", "predictions.jsonl", "fingerprint.json"):
            assert f'"{name}"' not in module.read_text(), f"{module.name} spells {name}: use apa.run_folder"


def test_the_loss_curve_is_the_run_records_loss_history(tmp_path):
    """Synthetic runs carry what real records do (format version, loss history); curves draw the latter."""
    from apa.reporting.curves import loss_series
    from tests.synthetic_runs import make_sweep

    run = make_sweep(tmp_path / "sweep", runs=("fresh_r64_0",), epochs=2, n_utterances=2) / "fresh_r64_0"
    record = json.loads((run / "training_config.json").read_text())
    assert record["format_version"] == FORMAT_VERSION
    steps, losses = loss_series([run], {run: "r"})["r"]["train"]
    assert [[s, v] for s, v in zip(steps, losses, strict=True)] == record["loss_history"] and len(steps) == 8



def test_n_a_says_why_from_the_evaluation_s_own_counts():
    """experiment=overfit's case: every answer parsed and right, but its utterances have no mispronunciation, so
    MDD precision and recall are 0/0; and a random model's: nothing parsed."""
    records = []
    for i, (words, phones, score) in enumerate((("WE", "W IY", 6), ("CALL", "K AO L", 8), ("IT", "IH T", 9))):
        scores = {"accuracy": score, "fluency": score, "prosodic": score, "total": score}
        reference = {"word_transcript": words, "phoneme_transcript": phones, "canonical_phones": phones}
        records += [{"id": str(i), "task": "apa", "reference": scores, "prediction": scores},
                    {"id": str(i), "task": "mdd", "reference": reference,
                     "prediction": {"word_transcript": words, "phoneme_transcript": phones}}]
    learned = compute_metrics(records, dict.fromkeys(("accuracy", "fluency", "prosodic", "total"), 7.0))
    assert learned["pcc_total"] == 1.0 and learned["mdd_f1"] != learned["mdd_f1"]  # NaN
    assert why_undefined(learned) == [("MDD P, MDD F1", "the model rejected no phone (TR + FR = 0)"),
                                      ("MDD R", "the references annotate no mispronounced phone (TR + FA = 0)")]
    unparsed = compute_metrics([{**r, "prediction": None} for r in records], {"accuracy": 7.0, "fluency": 7.0,
                                                                            "prosodic": 7.0, "total": 7.0})
    assert why_undefined(unparsed)[0] == ("PCC acc, PCC flu, PCC pros, PCC total", "no APA answer parsed")
    note = undefined_note([Row({**learned, "checkpoint": "final_model"})], lambda row: row.get("checkpoint"))
    assert note == ("n/a where the model rejected no phone (TR + FR = 0): MDD P, MDD F1 in final_model. n/a where "
                    "the references annotate no mispronounced phone (TR + FA = 0): MDD R in final_model.")


def test_integers_print_as_integers():
    assert fmt(120) == "120" and fmt(0.5) == "0.500" and fmt(1.0) == "1.000"  # a count; metrics keep 3 decimals
    # config values as meant: the trainer's schema stores num_train_epochs=2 as 2.0
    assert [config_value(v) for v in (2.0, 2, 0.001, 1e-07, 0.95, True, [1, 2], "linear")] == \
        ["2", "2", "0.001", "1e-07", "0.95", "True", "[1, 2]", "linear"]


def test_the_model_card_says_its_epochs_as_an_integer(written):
    assert "- Recipe: 10 epochs, batch 2" in (written / "card.md").read_text()
