"""Data-parallel launches (torchrun, accelerate launch, SLURM via submitit): one run folder for all ranks.

Each rank is its own Python process running train.py, so each would compose its own Hydra config and, with the
default `outputs/runs/<time>_<lora>`, could pick its own timestamped folder. Rank 0 picks the time stamp and shares it
through the launcher's key-value store before Hydra composes; ranks other than 0 let Hydra write nothing (no
`.hydra/`, no log file), and the training code writes files on rank 0 only.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta

from apa.errors import UserError

RUN_STAMP_ENV = "APA_RUN_STAMP"
STAMP_FORMAT = "%Y-%m-%d_%H-%M-%S"


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def run_stamp() -> str:
    """The time stamp of a new run folder: the shared one under a multi-process launch, else now."""
    return os.environ.get(RUN_STAMP_ENV) or time.strftime(STAMP_FORMAT)


def share_run_stamp() -> None:
    """Under torchrun / accelerate launch, agree on rank 0's time stamp through the elastic agent's TCP store."""
    if world_size() <= 1 or os.environ.get(RUN_STAMP_ENV):
        return
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        raise UserError(
            f"{world_size()} processes were started without torchrun's rendezvous store, so they cannot agree on a "
            "run folder: pass hydra.run.dir=<folder> (the same for every process), or launch with torchrun / "
            "accelerate launch."
        )
    from torch.distributed import TCPStore

    store = TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                     timeout=timedelta(minutes=10))
    key = f"apa/run_stamp/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    if rank() == 0:
        store.set(key, time.strftime(STAMP_FORMAT))
    os.environ[RUN_STAMP_ENV] = store.get(key).decode()  # blocks until rank 0 has set it


def launch_overrides(argv: list[str]) -> list[str]:
    """Extra Hydra overrides for this process: ranks other than 0 write no Hydra files and log warnings only."""
    if world_size() <= 1:
        return []
    if not any(a.startswith("hydra.run.dir=") for a in argv):
        share_run_stamp()
    if rank() == 0:
        return []
    return ["hydra.output_subdir=null", "hydra/job_logging=stdout", "hydra.job_logging.root.level=WARNING"]


def export_submitit_environment() -> None:
    """Inside a SLURM job started by hydra-submitit-launcher with several tasks: set RANK, LOCAL_RANK, WORLD_SIZE,
    MASTER_ADDR and MASTER_PORT for torch.distributed, as torchrun would (one task per GPU)."""
    if "SUBMITIT_FOLDER" not in os.environ or "RANK" in os.environ:
        return
    from submitit import JobEnvironment
    from submitit.helpers import TorchDistributedEnvironment

    if JobEnvironment().num_tasks <= 1:
        return

    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
