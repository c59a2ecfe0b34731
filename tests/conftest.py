"""Shared fixtures: configs composed exactly as train.py composes them, on the tiny model and bundled sample."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from apa.config import register_configs

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"
FAST_EVAL = ("batch_size=3", "max_new_tokens.apa=6", "max_new_tokens.mdd=6")  # short answers: decoding is slow here
os.environ.setdefault("APA_CACHE_DIR", str(REPO / ".cache" / "apa"))
register_configs()


def compose_config(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


@pytest.fixture
def make_config():
    return compose_config


def compose_eval_config(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="evaluate", overrides=list(overrides))


@pytest.fixture(scope="session")
def demo_sweep(tmp_path_factory):
    """What multirun.sh runs, as a user runs it (subprocess): `train.py -m` over both LoRA configs (2 epochs, batch
    4 x accumulation 2) with the evaluate_and_compare callback (every checkpoint evaluated, then the comparison).
    The jobs go through hydra-submitit-launcher's local launcher, the SLURM launcher's stand-in on one machine: each
    job is its own process, and both run at once."""
    sweep = tmp_path_factory.mktemp("sweep")
    cmd = [
        sys.executable, "train.py", "-m", "experiment=demo", "lora=pretrained_r320,paper_r64", "prompts=terse",
        "data.limit=4", "trainer.num_train_epochs=2", "trainer.per_device_train_batch_size=4",
        "trainer.gradient_accumulation_steps=2", f"hydra.sweep.dir={sweep}", "hydra/callbacks=evaluate_and_compare",
        "hydra.callbacks.evaluate_and_compare.overrides=[" + ",".join(f'"{o}"' for o in FAST_EVAL) + "]",
        "hydra/launcher=submitit_local",
    ]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return sweep
