"""Run folder names: what `ls outputs/runs` and a sweep folder show.

    python train.py run_name=baseline                    outputs/runs/baseline
    python train.py lora=fresh_r64 trainer.num_train_epochs=3
                                                         outputs/runs/<time>_fresh_r64_trainer.num_train_epochs=3
    python train.py -m run_name=lr lora=pretrained_r320,fresh_r64 trainer.learning_rate=1e-4,2e-5 data.limit=8
                                                         outputs/multirun/lr/fresh_r64_trainer.learning_rate=2e-5_3

A named run's folder is its name (so `run_name=baseline resume=true` finds it again); a named sweep's folder is its
name. Otherwise a run folder is its time stamp, its LoRA choice (typed or not) and the overrides typed, as Hydra's
own `hydra.job.override_dirname` writes them (conf/hydra/default.yaml sets the keys left out and the separators);
a sweep job's folder is its LoRA choice, the overrides that set it apart from the other jobs (apa.callbacks leaves
the shared ones out) and its job number. Here the overrides are made safe for a folder name and capped in length.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from apa.distributed import RUN_STAMP_ENV, run_stamp
from apa.errors import UserError

MAX_OVERRIDES = 80  # characters of the overrides part; a longer one is cut and ends in a digest of the whole
_UNSAFE = re.compile(r"[^\w.,=+@-]+", re.ASCII)  # a path separator, space, bracket, ...: one '_'
RUN_NAME = re.compile(r"[A-Za-z0-9][\w.+@-]*", re.ASCII)


def safe_overrides(overrides: str | None, limit: int = MAX_OVERRIDES) -> str:
    """`overrides` (Hydra's `k=v,k2=v2`) as part of a folder name: quotes and brackets dropped, other unsafe ones
    made '_', at most `limit` characters (a cut one ends in 8 hex digits of the whole: two long ones stay apart)."""
    text = _UNSAFE.sub("_", re.sub(r"['\"\[\]]", "", str(overrides or ""))).strip("_")
    if len(text) <= limit:
        return text
    return f"{text[:limit - 9].rstrip('_,')}_{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def run_folder_name(run_name: str | None, stamp: str, lora: str, overrides: str | None) -> str:
    """A single run's folder: its name, else `<time>_<lora>[_<overrides>]`."""
    if run_name:
        return str(run_name)
    return "_".join(part for part in (stamp, lora, safe_overrides(overrides)) if part)


_RESERVED: dict[str, str] = {}  # default run folders this process has made: Hydra may resolve hydra.run.dir again


def new_run_dir(base: str, run_name: str | None, stamp: str, lora: str, overrides: str | None) -> str:
    """`<base>/<run folder name>`. A default name (no run_name) is taken now, by making the folder (mkdir is atomic):
    a second run started in the same second with the same overrides gets `<name>-2`, and so on, instead of being
    refused at the first one's lock. A named run's folder is the name as it is (resume=true finds it again); so is
    the folder the ranks of one torchrun launch share (they agreed on the stamp, so on the name). A start that fails
    removes the folder again if nothing was written into it (train.py)."""
    path = f"{base}/{run_folder_name(run_name, stamp, lora, overrides)}"
    if run_name or os.environ.get(RUN_STAMP_ENV):
        return path
    if path not in _RESERVED:
        _RESERVED[path] = _make_first_free(path)
    return _RESERVED[path]


def _make_first_free(path: str) -> str:
    for n in range(1, 1000):
        candidate = path if n == 1 else f"{path}-{n}"
        try:
            Path(candidate).mkdir(parents=True)
        except FileExistsError:
            continue
        except OSError:  # cannot be made (read-only, a file in the way): the folder check says so in one line
            return path
        return candidate
    return path


def sweep_folder_name(run_name: str | None, stamp: str) -> str:
    """A sweep's folder: its name, else its time stamp."""
    return str(run_name) if run_name else stamp


def job_folder_name(lora: str, overrides: str | None, num: int | str) -> str:
    """A sweep job's folder: `<lora>[_<its own overrides>]_<job number>` (the number last, as every reader expects)."""
    return "_".join(part for part in (lora, safe_overrides(overrides), str(num)) if part)


# the resolvers conf/hydra/default.yaml names the folders with (registered in apa.config)
def eval_folder(run_dir, predictions, stamp) -> str:
    """evaluate.py's folder (its log): <run_dir>/eval; beside the predictions file it re-scores (where its
    metrics.json goes); or, for the base model, a fresh outputs/eval/<time>."""
    return f"{run_dir}/eval" if run_dir else str(Path(predictions).parent) if predictions else f"outputs/eval/{stamp}"


RESOLVERS = {
    "apa_run_dir": new_run_dir, "apa_sweep_name": sweep_folder_name, "apa_job_name": job_folder_name,
    "apa_run_stamp": run_stamp,  # rank 0's time under torchrun / accelerate launch (apa.distributed), else now
    "apa_table3_setting": lambda unfreeze: "unfreeze" if unfreeze else "lora_only",  # table3_lora_only_0, ...
    "apa_eval_dir": eval_folder,
}


def check_run_name(value: object) -> None:
    """A run name is one plain folder name (it is typed again in `run_dir=` and `hydra.run.dir=`)."""
    if value is not None and not RUN_NAME.fullmatch(str(value)):
        raise UserError(f"run_name={value} is not a plain folder name: use letters, digits and _ . + @ - (starting "
                        "with a letter or digit), e.g. run_name=fresh-r64_lr2e-5")
