"""Which engine runs a training's optimizer steps, for the run record, and the engine settings refused before a start.
Light (no torch): apa.training.start checks it before anything is written."""

from __future__ import annotations

import importlib.util
from importlib.metadata import version

from omegaconf import DictConfig

from apa.config import trainer_kwargs
from apa.errors import UserError


def training_engine(cfg: DictConfig) -> dict:
    """What runs the optimizer steps, for the run record: {"name": "deepspeed", "zero_stage": N, "version"} under
    trainer.deepspeed, else {"name": "torch"} (one process, or DDP under torchrun / accelerate launch; the record's
    data.world_size says which)."""
    ds = trainer_kwargs(cfg.trainer).get("deepspeed")
    if not ds:
        return {"name": "torch"}
    if importlib.util.find_spec("deepspeed") is None:
        raise UserError("trainer.deepspeed is set (+trainer/deepspeed=zero2 or zero3) but DeepSpeed is not "
                        "installed: `pip install deepspeed`, or drop the option to train with plain DDP")
    if not isinstance(ds, dict):
        raise UserError(f"trainer.deepspeed={ds!r}: give the config itself (+trainer/deepspeed=zero2 or zero3), "
                        "not a path, so that the run record holds it")
    stage = (ds.get("zero_optimization") or {}).get("stage", 0)
    if stage == 3:
        raise UserError(
            "trainer.deepspeed: ZeRO stage 3 cannot train this model yet. TRL's fused LM-head loss gathers the "
            "head's weight as a ZeRO parameter, but the head is tied to the embeddings and wrapped by PEFT for "
            "the control tokens, so its weight is a computed tensor (AttributeError: 'Tensor' object has no "
            "attribute 'ds_status'). Use +trainer/deepspeed=zero2 (README: DDP, ZeRO-2 or ZeRO-3)")
    return {"name": "deepspeed", "zero_stage": stage, "version": version("deepspeed")}
