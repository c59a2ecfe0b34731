"""Evaluate a run folder's checkpoints (or the untrained base model) on a test split: predictions.jsonl and
metrics.json in <run>/eval/<checkpoint>/ (apa.evaluation.predictions), each with the fingerprint of what it was
generated from. Tables and the model card are the reporting layer's (apa.reporting.epochs), called by evaluate.py and
the sweep callback after this.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from apa.command_line import override_keys
from apa.config import EvalConfig, check_config
from apa.console import move_log_files
from apa.data.release import corpus_digest, same_dataset
from apa.evaluation.examples import evaluation_set, train_means, trained_on
from apa.evaluation.predictions import (
    EvaluationError,
    generate_predictions,
    generation_options,
    metrics_json,
    score_file,
    stop_on_signal,
    write_split_record,
)
from apa.evaluation.trackers import check_trackers, log_evaluation
from apa.metrics import format_metrics
from apa.run_folder import (
    EVAL_DIR,
    EVAL_SETTINGS,
    FINAL_MODEL,
    FINGERPRINT,
    PREDICTIONS,
    TRAIN_MEANS,
    TRAINING_RECORD,
    RunLock,
    checkpoint_step,
    epoch_checkpoints,
    manifest_problems,
    prediction_shards,
    read_fingerprint,
    read_record,
    resolved_config,
    write_json,
)

log = logging.getLogger(__name__)


class Results(dict):
    """checkpoint name -> metrics, with where they were written: `folder` (<run>/eval or <run>/eval-<data>-<digest>),
    `run_dir`, `checkpoint` (what was asked: final_model, all, checkpoint-epoch-<N>) and `own` (the run's own test
    data and prompts, which the model card shows)."""

    def __init__(self, metrics: dict, folder: Path, run_dir: Path | None = None, checkpoint: str = FINAL_MODEL,
                 own: bool = True):
        super().__init__(metrics)
        self.folder, self.run_dir, self.checkpoint, self.own = folder, run_dir, checkpoint, own


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
    for checkpoint in chosen:  # before any model loads: a damaged checkpoint is named, never loaded
        problems = checkpoint_problems(checkpoint)
        if problems:
            others = [p.name for p in available if p != checkpoint]
            raise EvaluationError(
                f"{checkpoint} is damaged ({'; '.join(problems[:3])}): delete it (`rm -r {checkpoint}`) or restore "
                f"it, and evaluate the others" + (f" (checkpoint={others[-1]}, ...)" if others else ""))
    return chosen


def checkpoint_problems(checkpoint: Path) -> list[str]:
    """What is wrong with a checkpoint's files: an epoch checkpoint against its manifest (as resume checks it);
    final_model, which has none, by its adapter files: present, the config readable, each weight file's header."""
    from safetensors import safe_open

    if checkpoint.name != FINAL_MODEL:
        return manifest_problems(checkpoint)
    problems = [f"{name} is missing" for name in ("adapter_config.json", "adapter_model.safetensors")
                if not (checkpoint / name).is_file()]
    try:
        if (checkpoint / "adapter_config.json").is_file():
            json.loads((checkpoint / "adapter_config.json").read_text())
    except (ValueError, UnicodeDecodeError):
        problems.append("adapter_config.json is not valid JSON")
    for weights in sorted(checkpoint.glob("*.safetensors")):
        try:
            with safe_open(str(weights), "pt") as f:
                f.keys()
        except Exception as e:  # safetensors raises its own error types for a truncated or foreign file
            problems.append(f"{weights.name} cannot be read ({str(e).splitlines()[0][:80]})")
    return problems


def weights_digest(checkpoint: Path) -> str:
    """SHA-256 over the checkpoint's weight files (adapter and any unfrozen modules) and the adapter config."""
    digest = hashlib.sha256()
    for path in sorted(checkpoint.glob("*.safetensors")) + sorted(checkpoint.glob("adapter_config.json")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _digest(items) -> str:
    return hashlib.sha256(json.dumps(items, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def fingerprint(rows: list[dict], weights: str, cfg: DictConfig, model: dict, data_cfg: DictConfig,
                trained_versions: dict | None = None, global_step: int | None = None) -> dict:
    """What an evaluation folder's predictions were generated from. Resuming into the folder, or generating into it
    again, with any part different is refused: the file would mix two evaluations. `data` names the dataset (its
    revision and label release); `versions` are this evaluation's libraries, `training_versions` the run's;
    `global_step` the optimizer step the weights were saved at (the trackers' x-axis: apa.evaluation.trackers)."""
    from apa.data.release import dataset_identity
    from apa.versions import library_versions

    return {
        "data": dataset_identity(data_cfg),
        "versions": library_versions(),
        "training_versions": trained_versions,
        "global_step": global_step,
        "test_set": _digest(sorted([r["id"], r["task"], r["reference"]] for r in rows)),
        "prompts": _digest(sorted({r["task"]: r["user_content"] for r in rows}.items())),
        "weights": weights,
        "model": {k: model.get(k) for k in ("name", "path", "revision", "dtype", "attn_implementation")},
        # batch composition can change a greedy answer (the audio encoder does not mask padding: docs/benchmarks.md)
        "generation": {"max_new_tokens": OmegaConf.to_container(cfg.max_new_tokens), "batch_size": cfg.batch_size,
                       "max_batch_tokens": cfg.get("max_batch_tokens"), "decoding": "greedy"},
    }


def check_fingerprint(out_dir: Path, expected: dict) -> None:
    """Write `expected` into a fresh folder; refuse a folder whose predictions came from something else. Beside the
    fingerprint, `launches` records each launch that evaluated into the folder (its world size: how many ranks
    generated), which may differ between a launch and its resume without changing a prediction."""
    from apa.distributed import group_size

    path, predictions = out_dir / FINGERPRINT, out_dir / PREDICTIONS
    held = [p for p in (predictions, *prediction_shards(out_dir)) if p.exists() and p.stat().st_size]
    saved = read_fingerprint(out_dir) if held else None
    if held:
        if saved is None:
            raise EvaluationError(f"{held[0]} has no readable {FINGERPRINT} beside it, so what it was generated "
                                  f"from cannot be checked: delete {out_dir} to evaluate again")
        from apa.versions import version_differences

        # versions: only the libraries that change predictions (apa.versions.NUMERIC_LIBRARIES) must agree
        # the step is the weights' (compared by digest): not compared, so that folders from before it was recorded go on
        differ = sorted(k for k in (expected.keys() | saved.keys()) - {"versions", "training_versions", "launches",
                                                                        "global_step", "data"}
                        if expected.get(k) != saved.get(k))
        if not same_dataset(saved.get("data"), expected.get("data")):  # a moved copy is the same data (by content)
            differ.insert(0, "data")
        changed = version_differences(saved.get("versions"), expected["versions"])
        if changed:
            differ.append(f"library versions: {'; '.join(changed)}")
        if differ:
            raise EvaluationError(
                f"{out_dir} holds predictions of another evaluation (different {', '.join(differ)}): continuing "
                f"would mix the two. Delete {out_dir} to evaluate anew, or evaluate as that one was")
    out_dir.mkdir(parents=True, exist_ok=True)
    launches = [*((saved or {}).get("launches") or []), {"world_size": group_size()}]
    write_json(path, {**expected, "launches": launches})


def evaluate_one(model, processor, rows: list[dict], means: dict, cfg: DictConfig, out_dir: Path,
                 split: dict | None = None, fingerprint_of: dict | None = None) -> dict | None:
    """predictions.jsonl (resumable) and metrics.json for one model in `out_dir`; `split` (the test split's record)
    is written beside them as test_split.json; `fingerprint_of` (see `fingerprint`) is checked against a folder that
    already holds predictions and written beside them. Under a data-parallel launch every rank generates its share
    and rank 0 alone writes the files and returns the metrics (None on the others)."""
    from apa.distributed import group_rank, on_rank_zero

    def prepare() -> None:
        if fingerprint_of is not None:
            check_fingerprint(out_dir, fingerprint_of)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / TRAIN_MEANS, means)
        if split is not None:
            write_split_record(out_dir, split)

    on_rank_zero(prepare)
    generate_predictions(model, processor, rows, out_dir / PREDICTIONS, cfg.batch_size,
                         dict(cfg.max_new_tokens), cfg.data.feature_cache_mb, **generation_options(cfg))
    if group_rank() != 0:
        return None
    metrics = score_file(out_dir / PREDICTIONS, means, cfg.bootstrap)
    log.info("%s: %s", out_dir, format_metrics(metrics))
    return metrics


@contextmanager
def evaluation_lock(folder: Path, overrides: list[str], pinned: dict):
    """One evaluation per folder (RunLock), held by rank 0 for all ranks; a signal stops it (stop_on_signal)."""
    from apa.distributed import on_rank_zero

    lock = RunLock(folder, "evaluation")
    on_rank_zero(lock.acquire)
    try:
        with stop_on_signal(folder, overrides, pinned):
            yield
    finally:
        lock.release()  # a no-op on ranks that hold nothing


# model.* overrides a run's evaluation may take: how it runs, not what it is
RUNTIME_MODEL_KEYS = ("dtype", "attn_implementation", "cache_dir")


def evaluation_config(cfg: DictConfig, trained: DictConfig, overrides: list[str],
                      recorded_data: dict | None = None) -> tuple[DictConfig, str | None]:
    """The config a run is evaluated with: the run's own model, data and prompts, with this command's overrides
    applied on top as the README says, and the name of the folder its results go to.

    - `data=<name>` replaces the run's data; `data.<key>=` changes a key of the run's own data (`data.path=/copy`);
    - `prompts=<name>` / `prompts.<key>=` likewise for the prompts;
    - `model.dtype`, `model.attn_implementation`, `model.cache_dir` change how the model runs; any other model
      override is refused (a run is evaluated with the base it was trained on).
    Results on the run's own test data and prompts go to <run>/eval; with other data or prompts, to
    <run>/eval-<data name>-<digest>, so that they never mix with (or stand in for) the run's own."""
    keys = override_keys(overrides)
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

    def moved(now: dict, then: dict) -> bool:  # the run's own local corpus, found elsewhere with the same contents
        recorded = (recorded_data or {}).get("content")
        return (bool(recorded) and {**now, "path": None} == {**then, "path": None} and now.get("source") == "local"
                and corpus_digest(now.get("path")) == recorded)

    data_now, data_then = meaning(parts["data"]), meaning(trained["data"])
    own = (data_now == data_then or moved(data_now, data_then)) and meaning(parts["prompts"]) == meaning(
        trained["prompts"])
    if own:
        return merged, None
    tag = _digest([meaning(parts[g]) for g in ("data", "prompts")])[:8]
    return merged, f"eval-{parts['data'].get('name', 'data')}-{tag}"


def evaluate(cfg: DictConfig, overrides: list[str], fallback_dir: Path) -> Results:
    """Entry point behind evaluate.py (`overrides`: the command line's, as Hydra parsed them). Returns the metrics
    per checkpoint (Results: a dict, and where they are)."""
    check_config(cfg, EvalConfig)
    if not cfg.run_dir and cfg.checkpoint != FINAL_MODEL:  # else the base model would be scored in its place
        raise EvaluationError(f"checkpoint={cfg.checkpoint} needs run_dir=<the run folder that holds it>; without "
                              "run_dir, evaluate.py scores the untrained base model")
    if cfg.predictions:
        path = Path(cfg.predictions)
        metrics = score_file(path, bootstrap=cfg.bootstrap)
        print(metrics_json(metrics))
        return Results({path.parent.name: metrics}, path.parent, checkpoint=path.parent.name, own=False)
    from apa.checkpoint.hub import check_config_hub_access
    from apa.distributed import group_rank, join_process_group, on_rank_zero

    join_process_group()  # under torchrun / accelerate launch / a SLURM job of several tasks: data parallel
    if not cfg.run_dir:
        check_config_hub_access(cfg)
        out_dir = fallback_dir / "base_model"
        with evaluation_lock(fallback_dir, overrides, {"hydra.run.dir": fallback_dir}):
            from apa.checkpoint.adapters import load_baseline

            model, processor, path = load_baseline(cfg.model, cfg.baseline, cfg.seed)
            settings = {"model": path, "revision": cfg.model.get("revision"), **OmegaConf.to_container(cfg.baseline)}

            def record() -> None:
                out_dir.mkdir(parents=True, exist_ok=True)
                write_json(out_dir / EVAL_SETTINGS, settings)
                log.info("untrained baseline: %s", settings)

            on_rank_zero(record)
            rows, split = evaluation_set(cfg, processor.tokenizer.audio_token, cfg.baseline.control_tokens)
            weights = "untrained:" + _digest(settings)
            metrics = evaluate_one(model, processor, rows, train_means(cfg), cfg, out_dir, split,
                                   fingerprint(rows, weights, cfg, OmegaConf.to_container(cfg.model), cfg.data))
        if group_rank() != 0:
            return Results({}, fallback_dir, checkpoint="base_model", own=False)
        return Results({"base_model": metrics}, fallback_dir, checkpoint="base_model", own=False)
    run_dir = Path(cfg.run_dir)
    trained = run_config(run_dir)
    test_cfg, other = evaluation_config(cfg, trained, overrides, (read_record(run_dir) or {}).get("data", {}).get(
        "dataset"))
    eval_root = run_dir / (other or EVAL_DIR)
    if other:
        move_log_files(fallback_dir, eval_root)  # evaluate.py's log goes where the results go, not into eval/
        log.warning("evaluating %s on other data or prompts than its own: results go to %s, apart from its eval/",
                    run_dir, eval_root)
    holder = RunLock(run_dir, "training").holder_if_held()
    if holder:
        raise EvaluationError(f"{run_dir} is still being trained by {holder}: evaluate it when training has ended")
    check_trackers(OmegaConf.select(trained, "trainer.report_to"), str(run_dir),
                   "or set WANDB_MODE=disabled to evaluate without W&B", may_disable=True)
    check_config_hub_access(test_cfg)
    with evaluation_lock(eval_root, overrides, {"run_dir": run_dir, "checkpoint": cfg.checkpoint}):
        results = _evaluate_checkpoints(cfg, test_cfg, run_dir, eval_root)
    if group_rank() != 0:  # rank 0 holds the metrics and writes the tables
        return Results({}, eval_root, run_dir, cfg.checkpoint, own=not other)
    log_evaluation(run_dir, eval_root, list(results), own=not other)  # TensorBoard, W&B: trainer.report_to
    unparsed = any((m.get("parse_rate_apa") or 0) < 0.5 for m in results.values())
    if unparsed and (trained.model.get("tiny") or trained.model.get("random")):
        # expected, so not a warning; the table the command prints says the same (apa.reporting.epochs.run_notes)
        log.info("%s used a generated miniature with random weights: its answers rarely parse, so PCC and MDD "
                    "come out n/a (undefined). That is expected; `python train.py experiment=overfit` shows the "
                    "pipeline learn", run_dir)
    return Results(results, eval_root, run_dir, cfg.checkpoint, own=not other)


def _trained_versions(run_dir: Path) -> dict | None:
    """The library versions the run last trained under (its last resume's, if any); differences from this
    evaluation's are logged (and both sets go into fingerprint.json)."""
    from apa.versions import library_versions, version_differences

    record = read_record(run_dir) or {}
    versions = next((r["library_versions"] for r in reversed(record.get("resumes") or []) if r.get("library_versions")),
                    record.get("library_versions"))
    differences = version_differences(versions, library_versions())
    if differences:
        log.warning("%s was trained under other library versions than this evaluation runs under: %s (both are "
                    "recorded in fingerprint.json)", run_dir, "; ".join(differences))
    return versions


def _evaluate_checkpoints(cfg: DictConfig, test_cfg: DictConfig, run_dir: Path, eval_root: Path) -> dict:
    from apa.distributed import group_rank

    rows = means = split = None
    results = {}
    evaluated: dict[str, Path] = {}  # weights digest -> eval folder
    from apa.checkpoint.adapters import EvalModels

    models = EvalModels(test_cfg.model)  # the base model, loaded once
    model_info = OmegaConf.to_container(test_cfg.model)
    trained_versions = _trained_versions(run_dir)
    for checkpoint in checkpoints_to_evaluate(run_dir, cfg.checkpoint):
        out_dir = eval_root / checkpoint.name
        digest = weights_digest(checkpoint)
        step = checkpoint_step(run_dir, checkpoint.name)
        if digest in evaluated and group_rank() != 0:
            continue
        if digest in evaluated:
            # final_model usually holds the very weights of the last epoch checkpoint: greedy decoding would repeat
            # itself, so its predictions are copied (and re-scored) instead of generated again
            log.info("%s has the same weights as %s: reusing its predictions", checkpoint.name, evaluated[digest].name)
            check_fingerprint(out_dir, fingerprint(rows, digest, cfg, model_info, test_cfg.data, trained_versions,
                                                   step))
            shutil.copyfile(evaluated[digest] / PREDICTIONS, out_dir / PREDICTIONS)
            write_json(out_dir / TRAIN_MEANS, means)
            write_split_record(out_dir, split)
            results[checkpoint.name] = score_file(out_dir / PREDICTIONS, means, cfg.bootstrap)
            continue
        evaluated[digest] = out_dir
        model, processor = models.load(checkpoint)
        if rows is None:  # the same test set for every checkpoint: read and checked once
            rows, split = evaluation_set(test_cfg, processor.tokenizer.audio_token)
            means = train_means(test_cfg)
            split.update(trained_on(run_dir, test_cfg.data, split))  # warned of, recorded: not refused
        results[checkpoint.name] = evaluate_one(model, processor, rows, means, cfg, out_dir, split,
                                                fingerprint(rows, digest, cfg, model_info, test_cfg.data,
                                                            trained_versions, step))
    log.info("%s: %d checkpoint(s) generated with %d load(s) of the base model", run_dir, len(evaluated),
             models.base_loads)
    return results
