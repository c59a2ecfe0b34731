"""Evaluate a run folder (or the base model) on a test split: predictions.jsonl, then metrics.json.

predictions.jsonl (a contract): one object per line,
    {"id", "task": "apa"|"mdd", "reference": {...}, "prediction": {...}|null, "raw": "<generated text>"}
An MDD reference holds word_transcript, phoneme_transcript (what was said), canonical_phones and phone_truth (per
canonical phone what was said there, `<del>` for a deletion). test_split.json beside it: what the test split held
(utterances and canonical phones, skips by reason and id, data.limit, phone statistics).
Lines are appended batch by batch as soon as they exist; a rerun after a crash skips what is done and ends with
the same file as an uninterrupted run (batches are fixed in advance, so each is generated the same way).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import shutil
from dataclasses import asdict
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from apa.config import EvalConfig, check_config
from apa.data.records import APA_ASPECTS
from apa.data.speechocean import SkipReport, load_configured_split
from apa.data.stats import phone_stats
from apa.errors import UserError
from apa.metrics import compute_metrics
from apa.reporting.table3 import (
    COVERAGE_HEADERS,
    COVERAGE_KEYS,
    COVERAGE_NOTE,
    PAPER_TABLE3,
    TABLE_COLUMNS,
    TABLE_HEADERS,
    TABLE_NOTE,
    coverage,
    epoch_of,
    fmt,
)
from apa.run_folder import FINAL_MODEL, TRAINING_RECORD, RunLock, epoch_checkpoints, resolved_config, write_atomic
from apa.sft.prompts import PARSERS, apa_target, build_examples, mdd_target

log = logging.getLogger(__name__)

class EvaluationError(UserError, RuntimeError):
    """Evaluation cannot run as asked; the message names the fix."""


# ---------------------------------------------------------------------------------------------------------------
# Examples with references
# ---------------------------------------------------------------------------------------------------------------


SPLIT_FILE = "test_split.json"  # beside predictions.jsonl: the size of the split the predictions were made on


def mdd_reference(utt) -> dict[str, str]:
    """The MDD reference: the target, the canonical phones, and per canonical phone what was said there
    (`phone_truth`, token for token with `canonical_phones`: the phone, its substitute, `<unk>`, `X*` or `<del>`)."""
    return {**mdd_target(utt), "canonical_phones": " ".join(utt.canonical_phones),
            "phone_truth": " ".join(utt.phone_truth)}


def evaluation_set(cfg: DictConfig, audio_token: str, control_token: bool = True) -> tuple[list[dict], dict]:
    """(rows, split record): both tasks for every usable utterance of the test split, each with its reference; and
    what the split held (utterances, canonical phones, what was skipped and why, data.limit), for test_split.json."""
    report = SkipReport()
    utterances = load_configured_split(cfg.data, cfg.data.test_split, report=report)
    instructions = {"apa": cfg.prompts.apa, "mdd": cfg.prompts.mdd}
    rows = []
    for utt in utterances:
        references = {"apa": apa_target(utt), "mdd": mdd_reference(utt)}
        for ex in build_examples(utt, instructions, audio_token, control_token):
            rows.append({**asdict(ex), "reference": references[ex.task]})
    record = {"split": cfg.data.test_split, "source": cfg.data.source, "limit": cfg.data.limit, **report.as_dict(),
              "utterances_usable": len(utterances), "phones": phone_stats(utterances, cfg.data.test_split)}
    return rows, record


def evaluation_examples(cfg: DictConfig, audio_token: str, control_token: bool = True) -> list[dict]:
    """Both tasks for every usable utterance of the test split, each with its reference."""
    return evaluation_set(cfg, audio_token, control_token)[0]


def train_means(cfg: DictConfig) -> dict[str, float]:
    """Mean human score per aspect on the training split: what an unparsed answer is replaced by."""
    utterances = load_configured_split(cfg.data, cfg.data.train_split, decode=False)
    return {a: sum(u.scores[a] for u in utterances) / len(utterances) for a in APA_ASPECTS}


# ---------------------------------------------------------------------------------------------------------------
# Generation into predictions.jsonl, resumable
# ---------------------------------------------------------------------------------------------------------------


def _done_keys(path: Path) -> set[tuple[str, str]]:
    """Keys already written; a torn last line (a crash mid-write) is cut off so the file stays valid JSONL."""
    if not path.exists():
        return set()
    keys, good_bytes = set(), 0
    with path.open("rb") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                break
            if not line.endswith(b"\n"):
                break
            keys.add((rec["id"], rec["task"]))
            good_bytes += len(line)
    if good_bytes != path.stat().st_size:
        with path.open("r+b") as f:
            f.truncate(good_bytes)
    return keys


def prompt_lengths(rows: list[dict], batcher) -> list[int]:
    """Tokens of each row's generation prompt, audio included, without decoding audio: the prompt's text tokens as
    the collator builds them (`batcher.tokens`, tokenized once per distinct prompt) plus the clip's audio tokens from
    its header (apa.data.stats.audio_tokens, the processor's own rule)."""
    from apa.data.stats import audio_tokens, clip_seconds

    seconds = clip_seconds(row["audio_path"] for row in rows)
    out = []
    for row in rows:
        before, after = batcher.tokens.prompt(row["user_content"])
        out.append(len(before) + len(after) + audio_tokens(seconds[row["audio_path"]]))
    return out


def plan_batches(rows: list[dict], batch_size: int, lengths: list[int] | None = None,
                 max_batch_tokens: int | None = None, max_new_tokens: dict[str, int] | None = None
                 ) -> list[list[dict]]:
    """Fixed batches of one task each, so that padding stays small.

    Without `lengths`: in order of audio file size, `batch_size` rows each (the plan before token budgets). With
    `lengths` (prompt tokens per row, `prompt_lengths`): in order of length, each batch as long as it holds at most
    `batch_size` rows and `max_batch_tokens` tokens, counted as rows x (its longest prompt + the task's
    max_new_tokens), which bounds the KV cache; a single row over the budget forms a batch of its own. The plan
    depends on the rows and these numbers alone, so a resumed run forms the same batches."""
    batches = []
    for task in ("apa", "mdd"):
        index = [i for i, r in enumerate(rows) if r["task"] == task]
        if lengths is None:
            index.sort(key=lambda i: (os.path.getsize(rows[i]["audio_path"]), rows[i]["id"]))
            batches += [[rows[i] for i in index[k : k + batch_size]] for k in range(0, len(index), batch_size)]
            continue
        index.sort(key=lambda i: (lengths[i], rows[i]["id"]))
        new = (max_new_tokens or {}).get(task, 0)
        batch: list[int] = []
        for i in index:  # ascending: the row being added is the batch's longest
            if batch and (len(batch) >= batch_size
                          or (max_batch_tokens and (len(batch) + 1) * (lengths[i] + new) > max_batch_tokens)):
                batches.append([rows[j] for j in batch])
                batch = []
            batch.append(i)
        if batch:
            batches.append([rows[j] for j in batch])
    return batches


def generation_options(cfg) -> dict:
    """generate_predictions' keyword arguments from an evaluation config (EvalConfig)."""
    kwargs: dict = {"disable_compile": not cfg.get("compile", False)}
    if cfg.get("cache_implementation"):
        kwargs["cache_implementation"] = cfg.cache_implementation
    elif cfg.get("compile"):
        log.warning("compile=true has no effect without cache_implementation=static: transformers compiles the "
                    "decoding step only with a static cache")
    return {"max_batch_tokens": cfg.get("max_batch_tokens"), "generate_kwargs": kwargs}


def generate_predictions(model, processor, rows: list[dict], path: Path, batch_size: int,
                         max_new_tokens: dict[str, int], feature_cache_mb: float = 1024,
                         max_batch_tokens: int | None = None, generate_kwargs: dict | None = None) -> list[dict]:
    """predictions.jsonl for `rows`, batch by batch (plan_batches: at most `batch_size` rows and, if given,
    `max_batch_tokens` tokens each); lines already in the file are kept and their batches skipped."""
    from apa.sft.collate import SpeechSFTCollator
    from apa.sft.generation import generate_answers

    batcher = SpeechSFTCollator(processor, feature_cache_mb=feature_cache_mb)  # one cache for both tasks' batches
    path.parent.mkdir(parents=True, exist_ok=True)
    done = _done_keys(path)
    lengths = prompt_lengths(rows, batcher) if max_batch_tokens else None
    batches = plan_batches(rows, batch_size, lengths, max_batch_tokens, max_new_tokens)
    todo = [b for b in batches if any((r["id"], r["task"]) not in done for r in b)]
    if done:
        log.info("%s: %d predictions already there, %d batches to go", path, len(done), len(todo))
    with path.open("a") as out, tqdm(total=sum(len(b) for b in batches), initial=len(done),
                                     desc=f"generating {path.parent.name}", unit="ex") as bar:
        for batch in todo:
            task = batch[0]["task"]
            raws = generate_answers(model, processor, batch, max_new_tokens=max_new_tokens[task], batcher=batcher,
                                    **(generate_kwargs or {}))
            lines = []
            for row, raw in zip(batch, raws, strict=True):
                if (row["id"], task) in done:
                    continue
                record = {"id": row["id"], "task": task, "reference": row["reference"],
                          "prediction": PARSERS[task](raw), "raw": raw}
                lines.append(json.dumps(record, ensure_ascii=False) + "\n")
            out.write("".join(lines))  # one write per batch, then to disk: a crash loses at most this batch
            out.flush()
            os.fsync(out.fileno())
            bar.update(len(lines))
    return read_predictions(path)


def read_predictions(path: Path) -> list[dict]:
    """The records of a predictions file; a malformed line or a repeated (id, task) is an error naming file and line
    (a repeated answer would be counted twice)."""
    if not path.is_file():
        raise EvaluationError(f"{path} not found: give a predictions.jsonl written by evaluate.py")
    records, seen = [], {}
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                key = (rec["id"], rec["task"])
                rec["reference"], rec["prediction"]  # noqa: B018  (present, even if null)
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise EvaluationError(f"{path}:{n}: not a prediction record ({err}): each line must be a JSON object "
                                      "with id, task, reference, prediction") from None
            if key in seen:
                raise EvaluationError(f"{path}:{n}: {key[1]} answer for {key[0]} repeats line {seen[key]}; a "
                                      "prediction may appear once (were two evaluations written into one file?)")
            seen[key] = n
            records.append(rec)
    return records


def score_file(path: Path, means: dict[str, float] | None = None) -> dict:
    """metrics.json beside a predictions file (training means from train_means.json beside it, if present; the
    split's size from test_split.json beside it, if present, else null)."""
    predictions = read_predictions(path)
    means_file = path.parent / "train_means.json"
    if means is None and means_file.exists():
        means = json.loads(means_file.read_text())
    if means is None:
        apa = [r["reference"] for r in predictions if r["task"] == "apa"]
        means = {a: sum(r[a] for r in apa) / len(apa) for a in APA_ASPECTS} if apa else {}
        log.warning("no train_means.json beside %s: imputing unparsed APA answers with the test-set mean", path)
    split_file = path.parent / SPLIT_FILE
    split = json.loads(split_file.read_text()) if split_file.exists() else None
    if split is None:
        log.warning("no %s beside %s: how many utterances and phones the test split held is unknown (null in "
                    "metrics.json)", SPLIT_FILE, path)
    metrics = compute_metrics(predictions, means, split)
    (path.parent / "metrics.json").write_text(metrics_json(metrics))
    return metrics


def metrics_json(metrics: dict) -> str:
    """JSON text of `metrics`; an undefined value (NaN, infinity) becomes null, never a bare NaN (which is not JSON)."""
    defined = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in metrics.items()}
    return json.dumps(defined, indent=2, allow_nan=False)


# ---------------------------------------------------------------------------------------------------------------
# Models to evaluate
# ---------------------------------------------------------------------------------------------------------------


def run_config(run_dir: Path) -> DictConfig:
    """The run's own resolved config (training_config.json), as it trained."""
    cfg = resolved_config(run_dir)
    if cfg is None:
        raise EvaluationError(f"{run_dir} has no {TRAINING_RECORD}: run_dir must be a folder written by train.py")
    return cfg


def checkpoints_to_evaluate(run_dir: Path, which: str) -> list[Path]:
    available = epoch_checkpoints(run_dir) + ([run_dir / FINAL_MODEL] if (run_dir / FINAL_MODEL).exists() else [])
    if which == "all":
        chosen = available
    else:
        chosen = [p for p in available if p.name == which]
    if not chosen:
        raise EvaluationError(f"no {which!r} in {run_dir} (found: {', '.join(p.name for p in available) or 'none'}); "
                              "use checkpoint=all, final_model or checkpoint-epoch-<N>")
    return chosen


def weights_digest(checkpoint: Path) -> str:
    """SHA-256 over the checkpoint's weight files (adapter and any unfrozen modules) and the adapter config."""
    digest = hashlib.sha256()
    for path in sorted(checkpoint.glob("*.safetensors")) + sorted(checkpoint.glob("adapter_config.json")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def load_for_eval(model_cfg, adapter_dir: Path, seed: int):
    """Base model + a trained adapter with its tokenizer/processor, on the GPU when there is one, in eval mode."""
    import torch
    from peft import PeftModel

    from apa.checkpoint.layout import load_processor
    from apa.checkpoint.loading import load_base

    model, _, _ = load_base(model_cfg)
    processor = load_processor(str(adapter_dir))
    model = PeftModel.from_pretrained(model, str(adapter_dir))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device).eval(), processor


class EvalModels:
    """The models of one run's checkpoints, in turn, on the GPU when there is one, in eval mode.

    The base model is loaded once. For the next checkpoint the adapter is taken off (PEFT `unload`: every LoRA layer,
    every `modules_to_save` copy (model.unfreeze) and the control-token rows go back to the untouched base modules;
    nothing is merged) and the next checkpoint's adapter is put on with the same `PeftModel.from_pretrained` a fresh
    load uses, so each checkpoint gets exactly the model a fresh load gives (tested logit for logit, with
    model.unfreeze too). Should a module of PEFT's survive the unload, or with `reload_base=true`, the base model is
    loaded again instead."""

    def __init__(self, model_cfg, seed: int, reload_base: bool = False):
        self.model_cfg = model_cfg
        self.seed = seed
        self.reload_base = reload_base
        self.model = None
        self.base_loads = 0

    def load(self, adapter_dir: Path):
        import torch
        from peft import PeftModel

        from apa.checkpoint.layout import load_processor

        base = None if self.reload_base or self.model is None else _unloaded(self.model)
        self.model = None
        if base is None:
            _free_memory()
            return self._fresh(adapter_dir)
        _free_memory()
        processor = load_processor(str(adapter_dir))
        self.model = PeftModel.from_pretrained(base, str(adapter_dir))
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = self.model.to(device).eval()
        return self.model, processor

    def _fresh(self, adapter_dir: Path):
        self.model, processor = load_for_eval(self.model_cfg, adapter_dir, self.seed)
        self.base_loads += 1
        return self.model, processor


def _unloaded(model):
    """The base model under `model` with every PEFT module removed, or None (logged) if any remains."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper

    base = model.unload()
    left = [name for name, module in base.named_modules()
            if isinstance(module, (BaseTunerLayer, AuxiliaryTrainingWrapper))]
    if left:
        log.warning("the adapter did not come off cleanly (%s); loading the base model again", left[0])
        return None
    return base


def _free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def load_baseline(model_cfg, baseline, seed: int):
    """The untrained model as the paper's "no training" row ran it: with the checkpoint's own speech LoRA (loaded and
    checked like lora=pretrained_r320's) unless baseline.speech_lora=false, control tokens only if asked for."""
    import torch
    from peft import PeftConfig

    from apa.checkpoint.loading import adapter_folder, add_control_tokens, load_base, load_speech_adapter

    model, processor, path = load_base(model_cfg)
    if baseline.control_tokens:
        add_control_tokens(model, processor, seed)
    if baseline.speech_lora:
        adapter_dir = adapter_folder(path, "speech-lora", model_cfg.get("revision"))
        model = load_speech_adapter(model, PeftConfig.from_pretrained(adapter_dir), adapter_dir)
    else:
        log.warning("baseline.speech_lora=false: the native model without its speech adapter does not use audio "
                    "meaningfully (transformers' own integration test expects a refusal to listen)")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device).eval(), processor, path


def write_split_record(out_dir: Path, split: dict) -> None:
    (out_dir / SPLIT_FILE).write_text(json.dumps(split, indent=2) + "\n")


FINGERPRINT = "fingerprint.json"


def _digest(items) -> str:
    return hashlib.sha256(json.dumps(items, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def fingerprint(rows: list[dict], weights: str, cfg: DictConfig, model: dict, data_cfg: DictConfig,
                trained_versions: dict | None = None) -> dict:
    """What an evaluation folder's predictions were generated from. Resuming into the folder, or generating into it
    again, with any part different is refused: the file would mix two evaluations. `data` names the dataset (its
    revision and label release); `versions` are this evaluation's libraries, `training_versions` the run's."""
    from apa.data.release import dataset_identity
    from apa.versions import library_versions

    return {
        "data": dataset_identity(data_cfg),
        "versions": library_versions(),
        "training_versions": trained_versions,
        "test_set": _digest(sorted([r["id"], r["task"], r["reference"]] for r in rows)),
        "prompts": _digest(sorted({r["task"]: r["user_content"] for r in rows}.items())),
        "weights": weights,
        "model": {k: model.get(k) for k in ("name", "path", "revision", "dtype", "attn_implementation")},
        # batch composition can change a greedy answer (the audio encoder does not mask padding: docs/benchmarks.md)
        "generation": {"max_new_tokens": OmegaConf.to_container(cfg.max_new_tokens), "batch_size": cfg.batch_size,
                       "max_batch_tokens": cfg.get("max_batch_tokens"), "decoding": "greedy"},
    }


def check_fingerprint(out_dir: Path, expected: dict) -> None:
    """Write `expected` into a fresh folder; refuse a folder whose predictions came from something else."""
    path, predictions = out_dir / FINGERPRINT, out_dir / "predictions.jsonl"
    if predictions.exists() and predictions.stat().st_size:
        if not path.exists():
            raise EvaluationError(f"{predictions} has no {FINGERPRINT} beside it (an older version wrote it), so what "
                                  f"it was generated from cannot be checked: delete {out_dir} to evaluate again")
        saved = json.loads(path.read_text())
        differ = sorted(k for k in expected.keys() | saved.keys() if expected.get(k) != saved.get(k))
        if "versions" in differ:
            from apa.versions import RECORDED_LIBRARIES, version_differences

            changed = version_differences(saved.get("versions"), expected["versions"], RECORDED_LIBRARIES)
            differ[differ.index("versions")] = f"library versions: {'; '.join(changed)}"
        if differ:
            raise EvaluationError(
                f"{out_dir} holds predictions of another evaluation (different {', '.join(differ)}): continuing "
                f"would mix the two. Delete {out_dir} to evaluate anew, or evaluate as that one was")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(expected, indent=2) + "\n")


def evaluate_one(model, processor, rows: list[dict], means: dict[str, float], cfg: DictConfig, out_dir: Path,
                 split: dict | None = None, fingerprint_of: dict | None = None) -> dict:
    """predictions.jsonl (resumable) and metrics.json for one model in `out_dir`; `split` (the test split's record)
    is written beside them as test_split.json; `fingerprint_of` (see `fingerprint`) is checked against a folder that
    already holds predictions and written beside them."""
    if fingerprint_of is not None:
        check_fingerprint(out_dir, fingerprint_of)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "train_means.json").write_text(json.dumps(means, indent=2))
    if split is not None:
        write_split_record(out_dir, split)
    generate_predictions(model, processor, rows, out_dir / "predictions.jsonl", cfg.batch_size,
                         dict(cfg.max_new_tokens), cfg.data.feature_cache_mb, **generation_options(cfg))
    metrics = score_file(out_dir / "predictions.jsonl", means)
    log.info("%s: %s", out_dir, format_metrics(metrics))
    return metrics


def format_metrics(m: dict) -> str:
    keys = ("pcc_accuracy", "pcc_fluency", "pcc_prosodic", "pcc_total", "wer", "per", "mdd_f1",
            "parse_rate_apa", "parse_rate_mdd")
    utterances, phones = coverage(m)
    return " ".join(f"{k}={fmt(m.get(k))}" for k in keys) + f" utterances={utterances} phones={phones}"


def write_epoch_table(run_dir: Path, results: dict[str, dict], eval_dir: Path | None = None) -> None:
    """<eval folder>/epochs.csv and epochs.md: one row per checkpoint, Table 3's paper rows beside."""
    eval_dir = eval_dir or run_dir / "eval"
    header = ["checkpoint", "epoch", *TABLE_COLUMNS, *COVERAGE_KEYS]
    rows = [[name, epoch_of(name), *(results[name].get(c, math.nan) for c in TABLE_COLUMNS),
             *(results[name].get(c) for c in COVERAGE_KEYS)] for name in results]
    with (eval_dir / "epochs.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    head = ("source", "epoch", *TABLE_HEADERS, *COVERAGE_HEADERS)
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    lines += [f"| this run ({name}) | {epoch_of(name)} | "
              + " | ".join([*(fmt(results[name].get(c)) for c in TABLE_COLUMNS), *coverage(results[name])]) + " |"
              for name in results]
    lines += [f"| paper, LoRA-only | {epoch} | " + " | ".join(fmt(v) for v in values) + " |" + " |" * len(
        COVERAGE_HEADERS) for epoch, values in PAPER_TABLE3.items()]
    (eval_dir / "epochs.md").write_text("\n".join(lines) + "\n\n" + TABLE_NOTE + " " + COVERAGE_NOTE + "\n")


# model.* overrides a run's evaluation may take: how it runs, not what it is
RUNTIME_MODEL_KEYS = ("dtype", "attn_implementation", "cache_dir")


def test_config(cfg: DictConfig, trained: DictConfig, overrides: list[str]) -> tuple[DictConfig, str | None]:
    """The config a run is evaluated with: the run's own model, data and prompts, with this command's overrides
    applied on top as the README says, and the name of the folder its results go to.

    - `data=<name>` replaces the run's data; `data.<key>=` changes a key of the run's own data (`data.path=/copy`);
    - `prompts=<name>` / `prompts.<key>=` likewise for the prompts;
    - `model.dtype`, `model.attn_implementation`, `model.cache_dir` change how the model runs; any other model
      override is refused (a run is evaluated with the base it was trained on).
    Results on the run's own test data and prompts go to <run>/eval; with other data or prompts, to
    <run>/eval-<data name>-<digest>, so that they never mix with (or stand in for) the run's own."""
    keys = [o.split("=")[0].lstrip("+~") for o in overrides]
    model_keys = [k for k in keys if k == "model" or k.startswith("model.") or k.startswith("model/")]
    foreign = [k for k in model_keys if k.split(".", 1)[-1] not in RUNTIME_MODEL_KEYS or "." not in k]
    if foreign:
        allowed = ", ".join(f"model.{k}" for k in RUNTIME_MODEL_KEYS)
        raise EvaluationError(f"{', '.join(foreign)}: a run is evaluated with the base model it was trained on "
                              f"({trained.model.get('path') or trained.model.name}); only {allowed} may change. "
                              "Evaluate another model with its own run, or without run_dir")
    model = OmegaConf.merge(trained.model, {k: cfg.model[k] for k in RUNTIME_MODEL_KEYS
                                            if f"model.{k}" in keys and k in cfg.model})
    parts = {}
    for group in ("data", "prompts"):
        whole = group in keys or any(k.startswith(f"{group}/") for k in keys)
        changed = [k.split(".", 1)[1] for k in keys if k.startswith(f"{group}.")]
        node = cfg[group] if whole else OmegaConf.merge(trained[group], {})
        for key in changed if not whole else []:
            OmegaConf.update(node, key, OmegaConf.select(cfg, f"{group}.{key}"), force_add=True)
        parts[group] = node
    merged = OmegaConf.merge(cfg, {"model": model, "data": parts["data"], "prompts": parts["prompts"]})
    def meaning(node) -> dict:  # what changes the test set or the prompts (the feature cache size does not)
        return {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k != "feature_cache_mb"}

    own = all(meaning(parts[g]) == meaning(trained[g]) for g in ("data", "prompts"))
    if own:
        return merged, None
    tag = _digest([meaning(parts[g]) for g in ("data", "prompts")])[:8]
    return merged, f"eval-{parts['data'].get('name', 'data')}-{tag}"


def evaluate(cfg: DictConfig, overrides: list[str] | bool, fallback_dir: Path) -> dict:
    """Entry point behind evaluate.py (`overrides`: the command line's; True/False: legacy "data was given")."""
    if isinstance(overrides, bool):
        overrides = ["data"] if overrides else []
    check_config(cfg, EvalConfig)
    if cfg.predictions:
        metrics = score_file(Path(cfg.predictions))
        print(metrics_json(metrics))
        return metrics
    from apa.checkpoint.hub import check_config_hub_access

    if not cfg.run_dir:
        check_config_hub_access(cfg)
        out_dir = fallback_dir / "base_model"
        with RunLock(fallback_dir, "evaluation"):
            model, processor, path = load_baseline(cfg.model, cfg.baseline, cfg.seed)
            out_dir.mkdir(parents=True, exist_ok=True)
            settings = {"model": path, "revision": cfg.model.get("revision"), **OmegaConf.to_container(cfg.baseline)}
            (out_dir / "eval_settings.json").write_text(json.dumps(settings, indent=2) + "\n")
            log.info("untrained baseline: %s", settings)
            rows, split = evaluation_set(cfg, processor.tokenizer.audio_token, cfg.baseline.control_tokens)
            weights = "untrained:" + _digest(settings)
            metrics = evaluate_one(model, processor, rows, train_means(cfg), cfg, out_dir, split,
                                   fingerprint(rows, weights, cfg, OmegaConf.to_container(cfg.model), cfg.data))
        print(format_metrics(metrics))
        return metrics
    run_dir = Path(cfg.run_dir)
    trained = run_config(run_dir)
    test_cfg, other = test_config(cfg, trained, overrides)
    eval_root = run_dir / (other or "eval")
    if other:
        log.warning("evaluating %s on other data or prompts than its own: results go to %s, apart from its eval/",
                    run_dir, eval_root)
    holder = RunLock(run_dir, "training").holder_if_held()
    if holder:
        raise EvaluationError(f"{run_dir} is still being trained by {holder}: evaluate it when training has ended")
    check_config_hub_access(test_cfg)
    with RunLock(eval_root, "evaluation"):
        results = _evaluate_checkpoints(cfg, test_cfg, run_dir, eval_root)
    unparsed = any((m.get("parse_rate_apa") or 0) < 0.5 for m in results.values())
    if unparsed and (trained.model.get("tiny") or trained.model.get("random")):
        log.warning("%s used a generated miniature with random weights: its answers rarely parse, so PCC and MDD "
                    "come out n/a (undefined). That is expected; `python train.py experiment=overfit` shows the "
                    "pipeline learn", run_dir)
    if cfg.checkpoint == "all":
        write_epoch_table(run_dir, results, eval_root)
        print((eval_root / "epochs.md").read_text())
    if (run_dir / TRAINING_RECORD).exists() and not other:
        from apa.reporting.model_card import write_model_card

        write_model_card(run_dir)  # the card shows the metrics now on disk
    return results


def _trained_versions(run_dir: Path) -> dict | None:
    """The library versions the run last trained under (its last resume's, if any); differences from this
    evaluation's are logged (and both sets go into fingerprint.json)."""
    from apa.run_folder import saved_record
    from apa.versions import library_versions, version_differences

    record = saved_record(run_dir) or {}
    versions = next((r["library_versions"] for r in reversed(record.get("resumes") or []) if r.get("library_versions")),
                    record.get("library_versions"))
    differences = version_differences(versions, library_versions())
    if differences:
        log.warning("%s was trained under other library versions than this evaluation runs under: %s (both are "
                    "recorded in fingerprint.json)", run_dir, "; ".join(differences))
    return versions


def _evaluate_checkpoints(cfg: DictConfig, test_cfg: DictConfig, run_dir: Path, eval_root: Path) -> dict:
    rows = means = split = None
    results = {}
    evaluated: dict[str, Path] = {}  # weights digest -> eval folder
    models = EvalModels(test_cfg.model, cfg.seed, cfg.get("reload_base", False))  # the base model, loaded once
    model_info = OmegaConf.to_container(test_cfg.model)
    trained_versions = _trained_versions(run_dir)
    for checkpoint in checkpoints_to_evaluate(run_dir, cfg.checkpoint):
        out_dir = eval_root / checkpoint.name
        digest = weights_digest(checkpoint)
        if digest in evaluated:
            # final_model usually holds the very weights of the last epoch checkpoint: greedy decoding would repeat
            # itself, so its predictions are copied (and re-scored) instead of generated again
            log.info("%s has the same weights as %s: reusing its predictions", checkpoint.name, evaluated[digest].name)
            check_fingerprint(out_dir, fingerprint(rows, digest, cfg, model_info, test_cfg.data, trained_versions))
            shutil.copyfile(evaluated[digest] / "predictions.jsonl", out_dir / "predictions.jsonl")
            (out_dir / "train_means.json").write_text(json.dumps(means, indent=2))
            write_split_record(out_dir, split)
            results[checkpoint.name] = score_file(out_dir / "predictions.jsonl", means)
            continue
        evaluated[digest] = out_dir
        model, processor = models.load(checkpoint)
        if rows is None:  # the same test set for every checkpoint: read and checked once
            rows, split = evaluation_set(test_cfg, processor.tokenizer.audio_token)
            means = train_means(test_cfg)
        results[checkpoint.name] = evaluate_one(model, processor, rows, means, cfg, out_dir, split,
                                                fingerprint(rows, digest, cfg, model_info, test_cfg.data,
                                                            trained_versions))
    log.info("%s: %d checkpoint(s) generated with %d load(s) of the base model", run_dir, len(evaluated),
             models.base_loads)
    return results
