"""The run folder's README.md: this project's model card, written from the run's own records.

Replaces the generic card TRL writes (which names no base model and shows a text-generation pipeline the adapter
cannot serve). Written when training ends and again after each evaluation of the run, so its metrics are the
latest ones on disk. Light (no torch): it reads the run record and its evaluations' metrics only.
"""

from __future__ import annotations

from pathlib import Path

from apa.data.release import describe as describe_data
from apa.errors import override_arg
from apa.metrics import fmt
from apa.reporting.table import (
    Column,
    Row,
    Table,
    config_value,
    coverage_columns,
    metric_columns,
    undefined_note,
    value,
)
from apa.run_folder import epoch_of, evaluations, read_metrics, read_record, write_atomic

CARD = "README.md"


def _parse_rates(row: Row) -> str:
    return f"{fmt(row.get('parse_rate_apa'))} / {fmt(row.get('parse_rate_mdd'))}"


def evaluation_table(run_dir: Path) -> Table:
    """One row per evaluated checkpoint of the run: Table 3's metrics, parse rates, utterances scored."""
    rows = [Row({**read_metrics(e), "checkpoint": e.name, "epoch": epoch_of(e.name)}) for e in evaluations(run_dir)]
    columns = [value("checkpoint"), value("epoch"), *metric_columns(), Column("parse rate APA / MDD", _parse_rates),
               coverage_columns()[0]]
    return Table(columns, rows)


def model_card(run_dir: Path) -> str:
    record = read_record(run_dir)
    cfg = record["config"]
    model, lora, trainer, data = cfg["model"], cfg["lora"], cfg["trainer"], cfg["data"]
    base = model.get("path") or record.get("model_path")
    tiny = bool(model.get("tiny")) or bool(model.get("random"))
    lines = [
        f"# {run_dir.name}: Phi-4-multimodal LoRA for pronunciation assessment",
        "",
        "A LoRA adapter for Phi-4-multimodal-instruct that answers two prompts about a learner's recording of a known "
        "sentence: APA scores (accuracy, fluency, prosodic, total; 0-10) and MDD transcripts (words, and the phones "
        "actually said). Trained with this project's `train.py` (arXiv 2509.02915, Table 3).",
        "",
    ]
    if tiny:
        lines += ["**This run used a generated miniature with random weights** (`model=tiny` or `phi4mm_random`): it "
                  "checks the pipeline; its scores mean nothing.", ""]
    lines += [
        "## What was trained",
        "",
        f"- Base model: `{base}`" + (f" at revision `{model['revision']}`" if model.get("revision") else "")
        + f" (dtype {model.get('dtype')}, attention {model.get('attn_implementation')})",
        f"- LoRA `{lora['name']}`: r={lora['r']}, alpha={lora['alpha']}, dropout={lora['dropout']}, "
        + (f"continuing the checkpoint's `{lora['init_from']}/`" if lora.get("init_from") else "a fresh adapter")
        + f"; targets `{lora.get('target_modules')}`",
        f"- Also trained: {', '.join(model.get('unfreeze') or []) or 'nothing else (LoRA-only)'}; control-token rows "
        + ("trained" if lora.get("train_control_tokens") else "frozen (seeded)"),
        f"- Parameters: {record['parameters']['trainable']:,} trainable of {record['parameters']['total']:,}",
        f"- Data: {describe_data(record['data'].get('dataset'))}, split `{data.get('train_split')}`: "
        f"{record['data'].get('train_utterances')} utterances, {record['data'].get('train_examples')} examples"
        + (f" (data.limit={data['limit']})" if data.get("limit") else ""),
        f"- Prompts: `{cfg['prompts']['name']}`",
        "- Recipe: " + (f"{trainer['max_steps']} optimizer steps" if (trainer.get("max_steps") or -1) > 0
                        else f"{config_value(trainer.get('num_train_epochs'))} epochs")
        + f", batch {trainer.get('per_device_train_batch_size')} x "
        f"accumulation {trainer.get('gradient_accumulation_steps')} x {record['data'].get('world_size', 1)} "
        f"process(es), lr {trainer.get('learning_rate')}, {trainer.get('optim')}, "
        f"{trainer.get('lr_scheduler_type')} schedule, seed {cfg.get('seed')}",
        f"- Trained {record.get('global_steps', '?')} optimizer steps in {fmt(record.get('train_seconds'))} s; "
        f"final training loss {fmt(record.get('final_train_loss'))}; started {record.get('started')}, "
        f"finished {record.get('finished', 'not yet')}; commit {record.get('git_commit')}",
        "",
        "## Evaluation",
        "",
    ]
    table = evaluation_table(run_dir)
    if table.rows:
        why = undefined_note(table.rows, lambda row: row.get("checkpoint"))
        lines += [table.markdown().rstrip("\n"), "",
                  "Definitions: docs/metrics.md of the project." + (f" {why}" if why else ""), ""]
    else:
        lines += [f"Not evaluated yet: `python evaluate.py {override_arg('run_dir', run_dir)} checkpoint=all`", ""]
    lines += [
        "## How to use",
        "",
        "```python",
        "from peft import PeftModel",
        "from transformers import Phi4MultimodalForCausalLM",
        "",
        f"base = Phi4MultimodalForCausalLM.from_pretrained({base!r}"
        + (f", revision={model['revision']!r}" if model.get("revision") else "") + ")",
        f"model = PeftModel.from_pretrained(base, {str(run_dir / 'final_model')!r})",
        "```",
        "",
        f"or, with this project: `apa predict --adapter {run_dir / 'final_model'} --audio learner.wav "
        "--text \"...\"`, `apa app --adapter " + str(run_dir / "final_model") + "`.",
        "",
    ]
    return "\n".join(lines)


def write_model_card(run_dir: Path) -> Path:
    path = run_dir / CARD
    write_atomic(path, model_card(run_dir))
    return path
