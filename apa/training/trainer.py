"""The Trainer subclass train.py runs: epoch-named atomic checkpoints and an epoch-seeded training order.

Imports TRL (slow), so apa.training.recipe imports it only when it builds a trainer.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import torch
from transformers.trainer_callback import ProgressCallback
from trl import SFTTrainer

from apa.run_folder import EPOCH_CHECKPOINT, STEP_CHECKPOINT, write_manifest
from apa.training.sampling import StepSortedSampler

log = logging.getLogger(__name__)


class LoggedProgress(ProgressCallback):
    """The trainer's progress bar, with its loss lines (`{'loss': ..., 'epoch': ...}` every logging_steps) sent to
    the run's log file instead of written under the bar: detail, not a result (apa.console; APA_VERBOSE=1 shows
    them)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            shown = {k: f"{v:.4g}" if isinstance(v, float) else v for k, v in logs.items() if k != "total_flos"}
            log.info("step %d: %s", state.global_step, shown)


class PronunciationTrainer(SFTTrainer):
    """SFTTrainer whose checkpoints are named by epoch (or by step, when stopped mid-epoch) and appear atomically.

    Hugging Face writes `checkpoint-<step>/` piece by piece; only once it is complete is it renamed to
    `checkpoint-epoch-<N>/` or `checkpoint-step-<N>/`, so a crash mid-save never leaves a folder that resume
    would trust. Its loss lines go to the log (LoggedProgress).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.callback_handler.pop_callback(ProgressCallback) is not None:  # absent with disable_tqdm
            self.add_callback(LoggedProgress)

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.train_sampling_strategy != "group_by_length" or dataset is None:
            return super()._get_train_sampler(train_dataset)
        # Not the stock LengthGroupedSampler: it sorts whole optimizer steps by length, which here puts nearly every
        # step on one task (APA prompts are longer), it seeds from the global RNG, and it asks the processor for
        # model_input_names (which an audio-only processor lacks). Ours (apa.training.sampling) draws each optimizer
        # step at
        # random and sorts only inside it, in an order fixed by (data_seed, epoch); `length` comes from apa.sft.lengths.
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        # one unit = one micro-step on all ranks (train_batch_size is per device, x n_gpu under DataParallel)
        unit = self.args.train_batch_size * self.args.world_size
        self._step_sampler = StepSortedSampler(dataset[self.args.length_column_name], unit=unit,
                                               step=unit * self.args.gradient_accumulation_steps, seed=seed)
        return self._step_sampler

    def _run_epoch(self, model, epoch, *args, **kwargs):
        # The Trainer sets the epoch through the dataloader, but a run resumed mid-epoch under DDP iterates
        # skip_first_batches(BatchSamplerShard(...)), which hides our sampler from it: it would replay epoch 0's order.
        sampler = getattr(self, "_step_sampler", None)
        if sampler is not None:
            sampler.set_epoch(epoch)
        return super()._run_epoch(model, epoch, *args, **kwargs)

    def _get_dataloader(self, *args, **kwargs):
        # A DataLoader without a generator draws its workers' base seed from the global torch RNG each time an
        # iterator is made: every epoch without persistent workers, once per run with them. A resumed run makes a
        # fresh iterator where the uninterrupted one reused its persistent workers, so the global stream (dropout's)
        # shifted by one draw and the adapters differed (1e-3 after 4 steps). The loader's own generator keeps the
        # global stream for the model alone, under any worker setting (tests/test_resume.py).
        loader = super()._get_dataloader(*args, **kwargs)
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        generator = torch.Generator().manual_seed(seed)
        # accelerate's DataLoaderShard iterates a DataLoader it wraps (base_dataloader) and copies its own
        # `generator` attribute into the loader skip_first_batches makes for a mid-epoch resume: set both
        inner = getattr(loader, "base_dataloader", None)
        if inner is not None:
            inner.generator = generator
        loader.generator = generator
        return loader

    def _get_eval_sampler(self, eval_dataset):
        # evaluation order changes nothing; the stock grouped sampler would ask the processor for model_input_names
        return torch.utils.data.SequentialSampler(eval_dataset)

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        # every rank writes its own RNG state into checkpoint-<step>/: rename only once all have
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            self._rename_checkpoint()
        self.accelerator.wait_for_everyone()

    def _rename_checkpoint(self):
        epoch = self.state.epoch or 0
        at_epoch_end = abs(epoch - round(epoch)) < 1e-6
        run_dir = Path(self.args.output_dir)
        written = run_dir / f"checkpoint-{self.state.global_step}"
        target = run_dir / (EPOCH_CHECKPOINT.format(round(epoch)) if at_epoch_end
                            else STEP_CHECKPOINT.format(self.state.global_step))
        write_manifest(written)  # sizes and digests, so that a damaged checkpoint is found before a resume
        if target.exists():  # a resumed run re-saving an epoch it had already finished
            shutil.rmtree(target)
        os.replace(written, target)
