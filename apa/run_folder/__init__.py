"""The only reader and writer of run folders (docs/architecture.md, "Run folder contract"): names and records
(`layout`), the folder check before a start (`check`), checkpoint manifests (`manifest`), the lock (`lock`)."""

from apa.run_folder.check import RESUME_KEYS, check_run_dir, config_differences, write_hydra_record
from apa.run_folder.layout import (
    EPOCH_CHECKPOINT,
    EVAL_DIR,
    EVAL_SETTINGS,
    FINAL_MODEL,
    FINGERPRINT,
    FORMAT_VERSION,
    LOCK,
    MANIFEST,
    METRICS,
    PREDICTION_SHARD,
    PREDICTIONS,
    SPLIT_FILE,
    STEP_CHECKPOINT,
    TENSORBOARD_DIR,
    TRAIN_MEANS,
    TRAINER_STATE,
    TRAINING_RECORD,
    RunFolderError,
    checkpoint_order,
    checkpoint_step,
    epoch_checkpoints,
    epoch_of,
    evaluations,
    find_runs,
    loss_history,
    prediction_shards,
    read_file,
    read_fingerprint,
    read_metrics,
    read_record,
    read_yaml,
    remove_evaluation,
    resolved_config,
    resumable_checkpoints,
    saved_record,
    validation_loss_history,
    write_atomic,
    write_json,
    write_record,
)
from apa.run_folder.lock import RunLock
from apa.run_folder.manifest import manifest_problems, newest_intact_checkpoint, write_manifest

__all__ = [
    "EPOCH_CHECKPOINT", "EVAL_DIR", "EVAL_SETTINGS", "FINAL_MODEL", "FINGERPRINT", "FORMAT_VERSION", "LOCK",
    "MANIFEST", "METRICS", "PREDICTION_SHARD", "PREDICTIONS", "RESUME_KEYS", "SPLIT_FILE", "STEP_CHECKPOINT",
    "TENSORBOARD_DIR", "checkpoint_step",
    "TRAIN_MEANS", "TRAINER_STATE", "TRAINING_RECORD", "RunFolderError", "RunLock", "check_run_dir",
    "checkpoint_order", "config_differences", "epoch_checkpoints", "epoch_of", "evaluations", "find_runs",
    "loss_history", "manifest_problems", "newest_intact_checkpoint", "prediction_shards", "read_file",
    "read_fingerprint", "read_metrics", "read_record", "read_yaml", "remove_evaluation", "resolved_config",
    "resumable_checkpoints", "saved_record", "validation_loss_history", "write_atomic", "write_hydra_record",
    "write_json", "write_manifest", "write_record",
]
