"""The run folder's README.md: this project's model card, written from the run's own records.

Replaces the generic card TRL writes (which names no base model and shows a text-generation pipeline the adapter
cannot serve). Written when training ends and again after each evaluation of the run, so its metrics are the
latest ones on disk. Light (no torch): it reads training_config.json and eval/*/metrics.json only.
"""

from __future__ import annotations

import json
from pathlib import Path

from apa.data.release import describe as describe_data
from apa.reporting.table3 import TABLE_COLUMNS, TABLE_HEADERS, epoch_of, fmt, scored
from apa.run_folder import TRAINING_RECORD, write_atomic

CARD = "README.md"


def _metrics_rows(run_dir: Path) -> list[str]:
    rows = []
    for path in sorted((run_dir / "eval").glob("*/metrics.json")):
        m = json.loads(path.read_text())
        rows.append(f"| {path.parent.name} | {epoch_of(path.parent.name)} | "
                    + " | ".join(fmt(m.get(c)) for c in TABLE_COLUMNS)
                    + f" | {fmt(m.get('parse_rate_apa'))} / {fmt(m.get('parse_rate_mdd'))}"
                    + f" | {scored(m, 'utterances')} |")
    return rows


def model_card(run_dir: Path) -> str:
    record = json.loads((run_dir / TRAINING_RECORD).read_text())
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
                        else f"{trainer.get('num_train_epochs')} epochs")
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
    rows = _metrics_rows(run_dir)
    if rows:
        head = ["checkpoint", "epoch", *TABLE_HEADERS, "parse rate APA / MDD", "utterances scored"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *rows, "",
                  "Definitions: docs/metrics.md of the project. n/a: undefined (e.g. no parsed answer).", ""]
    else:
        lines += [f"Not evaluated yet: `python evaluate.py run_dir={run_dir} checkpoint=all`", ""]
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
