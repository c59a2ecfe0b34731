"""The training recipe: composed config in, complete run folder out.

Run folder (a contract other tools read; see docs/architecture.md):
    .hydra/  training_config.json  parameters.txt  checkpoint-epoch-<N>/  final_model/  logs/  train.log
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import TrainerCallback

from apa.checkpoint.loading import add_control_tokens, attach_lora, format_parameter_table, load_base, parameter_report
from apa.config import trainer_kwargs
from apa.constants import REPO_ROOT
from apa.data.labels import SkipReport
from apa.data.release import dataset_identity, describe, same_dataset
from apa.data.sources import load_configured_split
from apa.data.splits import shared_ids, split_by_speaker
from apa.data.stats import phone_stats
from apa.errors import Interrupted, StopSignals, UserError, override_arg
from apa.evaluation.trackers import finish_wandb_run
from apa.run_folder import (
    FINAL_MODEL,
    MODEL_CARD,
    TENSORBOARD_DIR,
    TRAINING_RECORD,
    RunFolderError,
    RunLock,
    remove_evaluation,
    resumable_checkpoints,
    saved_record,
    write_atomic,
    write_hydra_record,
    write_record,
)
from apa.sft.collate import SpeechSFTCollator
from apa.sft.lengths import example_lengths, summarize
from apa.sft.prompts import build_examples
from apa.training.engine import training_engine
from apa.versions import library_versions

log = logging.getLogger(__name__)

def _git_commit() -> str | None:
    repo = REPO_ROOT
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def sft_arguments(cfg: DictConfig, run_dir: Path):
    from trl import SFTConfig

    training_engine(cfg)
    kwargs = trainer_kwargs(cfg.trainer)
    if kwargs.get("bf16") and not (torch.cuda.is_available() and torch.cuda.is_bf16_supported()):
        log.warning("trainer.bf16=true but this machine has no bf16 GPU: training in float32 instead")
        kwargs["bf16"] = False
    if cfg.data.validation_fraction > 0:
        kwargs.setdefault("eval_strategy", "epoch")  # an eval loss per epoch, beside the epoch checkpoint
    # Not optional for a speech model with a custom collator: TRL would otherwise drop the audio columns or try to
    # tokenize the rows itself.
    kwargs.update(
        output_dir=str(run_dir),
        remove_unused_columns=False,
        dataset_kwargs={**(kwargs.get("dataset_kwargs") or {}), "skip_prepare_dataset": True},
    )
    return SFTConfig(**kwargs)


class StopOnSignal(TrainerCallback):
    """SIGTERM (SLURM preemption) or SIGINT (Ctrl-C) once training has begun: finish the current step, save a
    checkpoint, stop; a second signal while waiting stops at once (apa.errors.StopSignals, which train.py installs
    before the start, when a signal stops at once: nothing is trained yet)."""

    def __init__(self, signals: StopSignals | None = None):
        self.signals = signals or StopSignals()

    @property
    def received(self) -> int | None:
        return self.signals.received

    def on_train_begin(self, args, state, control, **kwargs):
        if self.received is not None:  # a signal during the start that a library swallowed: stop before any step
            raise KeyboardInterrupt
        self.signals.install().defer("saving a checkpoint after this step")

    def on_step_end(self, args, state, control, **kwargs):
        if args.world_size > 1 and torch.distributed.is_initialized():
            # Ranks stop after the same step, whichever got the signal (a signal reaches the ranks at different
            # moments; a rank that stopped alone would leave the others waiting in the next collective, and a
            # sharded checkpoint needs them all): the largest signal number any rank holds.
            flag = torch.tensor([self.received or 0], device=args.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            self.signals.received = int(flag.item()) or None
        if self.received is not None:
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        self.restore()

    def restore(self) -> None:
        """Put the previous handlers back (also called when training ends by an exception)."""
        self.signals.restore()


def example_rows(utterances, prompts_cfg, audio_token: str) -> list[dict]:
    """Two supervised rows (APA, MDD) per utterance, as the trainer and the collator take them."""
    instructions = {"apa": prompts_cfg.apa, "mdd": prompts_cfg.mdd}
    return [asdict(ex) for utt in utterances for ex in build_examples(utt, instructions, audio_token)]


def check_disjoint_splits(data_cfg: DictConfig, train: list) -> None:
    """An utterance of the training split that is also in the test split would be trained on, then scored as unseen:
    refused, naming a few. A test split that IS the training split (experiment=overfit) is meant, and allowed."""
    if data_cfg.test_split == data_cfg.train_split:
        return
    try:
        test = load_configured_split(data_cfg, data_cfg.test_split, decode=False, report=SkipReport())
    except UserError as e:  # the evaluation will say what is wrong with the test split; training need not stop
        log.warning("the test split could not be read to check that no training utterance is in it: %s", e)
        return
    shared = shared_ids(train, test)
    if shared:
        raise UserError(
            f"{len(shared)} utterances are in both the training split ({data_cfg.train_split!r}) and the test split "
            f"({data_cfg.test_split!r}): {', '.join(shared[:5])}{' ...' if len(shared) > 5 else ''}. They would be "
            "trained on, then scored as unseen: fix the corpus's splits (or set data.test_split to the training "
            "split on purpose, as experiment=overfit does)")


def build_datasets(cfg: DictConfig, processor, max_length: int | None) -> tuple[Any, Any, dict]:
    """(train, validation or None, data record): two examples per utterance, each with its token `length` (for
    length-grouped batching); statistics logged, examples longer than max_length named."""
    from datasets import Dataset

    report = SkipReport()
    utterances = load_configured_split(cfg.data, cfg.data.train_split, report=report)
    check_disjoint_splits(cfg.data, utterances)
    validation: list = []
    if cfg.data.validation_fraction > 0:
        utterances, validation = split_by_speaker(utterances, cfg.data.validation_fraction, cfg.seed)
    record: dict = {"dataset": dataset_identity(cfg.data),
                    "train_utterances": len(utterances), "validation_utterances": len(validation),
                    "train_split": {"split": cfg.data.train_split, "limit": cfg.data.limit, **report.as_dict()}}
    datasets = []
    for name, part in (("train", utterances), ("validation", validation)):
        if not part:
            datasets.append(None)
            continue
        record[f"{name}_phones"] = phone_stats(part, name)
        rows = example_rows(part, cfg.prompts, processor.tokenizer.audio_token)
        lengths = example_lengths(rows, processor)
        record[f"{name}_examples"] = len(rows)
        record[f"{name}_stats"] = summarize(lengths, max_length, name, [f"{r['id']}/{r['task']}" for r in rows])
        datasets.append(Dataset.from_list([{**r, "length": n["total"]} for r, n in zip(rows, lengths, strict=True)]))
    return datasets[0], datasets[1], record


def build_trainer(cfg: DictConfig, run_dir: Path, resume_from: Path | None = None,
                  signals: StopSignals | None = None):
    """Everything up to the first step: model, adapter, data, trainer. Returns (trainer, resume_from, record).
    The config and folder checks are `start`'s (under its lock); this only builds. `signals`: train.py's, installed
    for the start (StopOnSignal defers them once training begins)."""
    from transformers import set_seed

    from apa.training.trainer import PronunciationTrainer  # imports TRL

    run_dir.mkdir(parents=True, exist_ok=True)
    engine = training_engine(cfg)
    args = sft_arguments(cfg, run_dir)  # sets up torch.distributed under torchrun / accelerate launch
    main_process = args.process_index == 0  # only rank 0 writes files
    set_seed(cfg.seed)

    model, processor, model_path = load_base(cfg.model)
    control_ids = add_control_tokens(model, processor, cfg.seed)
    train_set, validation_set, data_record = build_datasets(cfg, processor, args.max_length)
    model = attach_lora(model, cfg.lora, model_path, control_ids, cfg.seed, cfg.model.unfreeze,
                        cfg.model.get("revision"), cfg.model.trainable_dtype)

    params = parameter_report(model)
    table = format_parameter_table(params)
    log.info("Parameters (lora=%s):\n%s", cfg.lora.name, table)
    if main_process:
        write_atomic(run_dir / "parameters.txt", table + "\n")

    record = {
        "run_name": run_dir.name,  # the folder's name when it trained (config.run_name: the one asked for, or null)
        "config": OmegaConf.to_container(cfg, resolve=True),
        "model_path": model_path,
        "control_token_ids": control_ids,
        "parameters": params,
        "engine": engine,
        "data": data_record,
        "library_versions": library_versions(),
        "git_commit": _git_commit(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }

    # TensorBoard's callback reads its folder from the environment when the trainer is built.
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / TENSORBOARD_DIR)
    trainer = PronunciationTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=validation_set,
        data_collator=SpeechSFTCollator(processor, args.max_length, cfg.data.feature_cache_mb),
        processing_class=processor,
        callbacks=[StopOnSignal(signals)],
    )
    # Under data parallelism each rank's dataloader holds its own share of the batches.
    record["data"].update(world_size=args.world_size, batches_per_rank_per_epoch=len(trainer.get_train_dataloader()))
    previous = saved_record(run_dir) if resume_from is not None or cfg.resume else None
    if previous is not None and not same_dataset(previous["data"].get("dataset"), record["data"]["dataset"]):
        raise RunFolderError(  # a branch revision moved, or another copy under the same path: not the same data
            f"resume=true: the data resolves to {describe(record['data']['dataset'])}, but the run trained on "
            f"{describe(previous['data'].get('dataset'))}. Resume on the data it trained on (hub: pin data.revision to "
            "the run's commit; a local copy: restore its label files)")
    if previous is not None:  # a resume keeps the run's record of its start and adds one entry per resume
        resumed = {"at": record["started"], "from": resume_from.name if resume_from else None,
                   "library_versions": record["library_versions"], "git_commit": record["git_commit"],
                   "config": record["config"] if cfg.get("extend") else None}
        record = {**previous, "resumes": [*previous.get("resumes", []), resumed], "config": record["config"],
                  "data": record["data"]}
    if main_process:
        write_record(run_dir, record)
    return trainer, resume_from, record


def fit(trainer, resume_from: Path | None, record: dict) -> Path:
    """Train, then write final_model/ atomically and complete training_config.json."""
    run_dir = Path(trainer.args.output_dir)
    started = time.perf_counter()
    stopper = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, StopOnSignal))
    try:
        result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except KeyboardInterrupt:
        if stopper.received is None or stopper.signals.later is None:  # a plain interrupt, or one before the first step
            raise
        saved = resumable_checkpoints(run_dir)
        raise Interrupted(
            f"stopped at once by a second {signal.Signals(stopper.received).name}: the step in progress was not "
            f"saved; the checkpoints written before are intact (newest: {saved[-1].name if saved else 'none'}). "
            f"Continue with `resume=true {override_arg('hydra.run.dir', run_dir)}`") from None
    finally:
        stopper.restore()
    wandb_run = finish_wandb_run(trainer.args.report_to)  # which W&B run (if any): evaluation resumes it
    if stopper.received is not None:
        saved = resumable_checkpoints(run_dir)
        log.warning("Stopped by %s after step %d; checkpoint: %s. Continue with the same overrides plus "
                    "`resume=true %s`", signal.Signals(stopper.received).name,
                    trainer.state.global_step, saved[-1] if saved else "none", override_arg("hydra.run.dir", run_dir))
        raise SystemExit(128 + stopper.received)
    final_dir = run_dir / FINAL_MODEL
    tmp = run_dir / f".{FINAL_MODEL}.tmp"
    if trainer.args.should_save:
        shutil.rmtree(tmp, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(tmp))  # every rank calls it (sharded optimizers need them all); rank 0 writes
    trainer.accelerator.wait_for_everyone()
    if trainer.args.should_save:
        # PEFT's blank model card: the project's card takes its place (apa.reporting.model_card, once training ends)
        (tmp / MODEL_CARD).unlink(missing_ok=True)
        if final_dir.exists():  # extend=true: the run's earlier final model gives way to the new one
            old = run_dir / f".{FINAL_MODEL}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final_dir, old)
            os.replace(tmp, final_dir)
            shutil.rmtree(old)
            if remove_evaluation(run_dir, FINAL_MODEL):  # no table or card may show it as the new final model's
                log.warning("extend: removed the evaluation of the previous final model (%s/eval/%s)", run_dir,
                            FINAL_MODEL)
        else:
            os.replace(tmp, final_dir)
        history = [[e["step"], e["loss"]] for e in trainer.state.log_history if "loss" in e]
        losses = [loss for _, loss in history]
        record.update(
            finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            train_seconds=round(time.perf_counter() - started, 2),
            global_steps=trainer.state.global_step,
            train_metrics=result.metrics,
            final_train_loss=losses[-1] if losses else None,
            loss_history=history,  # (optimizer step, loss): the one source of every loss curve
            **({"wandb_run": wandb_run} if wandb_run else {}),
        )
        write_record(run_dir, record)
        log.info("Finished: adapter, tokenizer and processor in %s", final_dir)
    return final_dir


def train(cfg: DictConfig, run_dir: Path, hydra_files: dict[str, str] | None = None,
          started: tuple[RunLock | None, Path | None] | None = None, signals: StopSignals | None = None) -> Path:
    """Fine-tune per `cfg`, writing everything into `run_dir`; return the final_model folder.

    `started`: what `start(cfg, run_dir)` returned, when the caller (train.py) ran it; otherwise it runs here. Only
    after it are Hydra's record (`hydra_files`, from train.py) and training_config.json written. `signals`: see
    build_trainer."""
    from apa.distributed import rank
    from apa.training.start import start

    lock, resume_from = started if started is not None else start(cfg, run_dir)
    try:
        if hydra_files and rank() == 0 and not (run_dir / TRAINING_RECORD).exists():
            write_hydra_record(run_dir, hydra_files)
        return fit(*build_trainer(cfg, run_dir, resume_from, signals))
    finally:
        if lock is not None:
            lock.release()
