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


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


# how long a rank waits for the others at a barrier: a rank that is done waits there for the slowest one's last
# batches and for rank 0's merge and scoring (a lost rank is noticed by the launcher, which stops the others)
GROUP_TIMEOUT = timedelta(hours=2)


def join_process_group() -> bool:
    """Under a multi-process launch (WORLD_SIZE > 1), join the launcher's torch.distributed group, as training's
    Trainer does: NCCL with this rank's GPU (LOCAL_RANK) when there are GPUs, else gloo. True when there are several
    ranks; a group that is already up (the sweep callback after training) is used as it is."""
    if world_size() <= 1:
        return False
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return dist.get_world_size() > 1
    if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
        raise UserError(f"WORLD_SIZE={world_size()} without MASTER_ADDR / MASTER_PORT: the processes cannot find each "
                        "other; launch with torchrun, accelerate launch or a SLURM job of several tasks")
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())
        dist.init_process_group("nccl", timeout=GROUP_TIMEOUT, device_id=torch.device("cuda", local_rank()))
    else:
        dist.init_process_group("gloo", timeout=GROUP_TIMEOUT)
    return True


def group_size() -> int:
    """Ranks of the joined torch.distributed group (1 when none was joined)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def group_rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def broadcast(obj):
    """Rank 0's `obj` on every rank (picklable; as it is without a group)."""
    if group_size() == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if group_size() > 1:
        import torch.distributed as dist

        dist.barrier()


def on_rank_zero(fn):
    """fn() on rank 0 alone (what writes or locks a shared folder); its result there, None elsewhere. If it fails,
    every rank fails: rank 0 with its own error, the others with its message (a UserError, so one line each),
    instead of waiting at the next barrier."""
    if group_size() == 1:
        return fn()
    result, failure, message = None, None, None
    if group_rank() == 0:
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 - re-raised below, after the others are told
            from apa.errors import as_user_error

            failure = exc
            known = as_user_error(exc)
            message = str(known) if known is not None else f"rank 0 failed ({type(exc).__name__}): see its traceback"
    message = broadcast(message)
    if failure is not None:
        raise failure
    if message is not None:
        raise UserError(message)
    return result


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
