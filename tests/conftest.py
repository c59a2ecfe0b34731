"""Shared fixtures: configs composed exactly as train.py composes them, on the tiny model and bundled sample."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from apa.config import register_configs

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"
os.environ.setdefault("APA_CACHE_DIR", str(REPO / ".cache" / "apa"))
register_configs()


def compose_config(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


@pytest.fixture
def make_config():
    return compose_config
