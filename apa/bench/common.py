"""What every benchmark mode shares: the composed train config, the full corpus's sizes its projections scale to,
peak memory, and how figures are printed."""

from __future__ import annotations

import resource

import torch

from apa.constants import CONF_DIR

FULL_CORPUS_EXAMPLES_PER_EPOCH = 2 * 2500  # SpeechOcean762 train: 2500 utterances x (APA + MDD)
FULL_TEST_ANSWERS_PER_TASK = 2500  # SpeechOcean762 test: 2500 utterances, one APA and one MDD answer each


def compose(overrides: list[str]):
    """The train config as train.py composes it, with `overrides`."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from apa.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=overrides)


def peak_memory_gb() -> float:
    """CUDA's max allocated since its last reset, else the process's peak RSS (Linux reports it in KiB)."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def fmt(value) -> str:
    """A figure as the printers show it: 4 significant digits, n/a for a missing one."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
