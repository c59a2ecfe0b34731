"""Data mode on the tiny model: collate throughput, cache cold and warm."""

import pytest

from apa.bench.cli import main

pytestmark = pytest.mark.slow  # end to end: `pytest -m "not slow"` leaves this module out


def test_data_mode_measures_collate_throughput():
    result = main(["experiment=demo", "data.limit=2", "--mode", "data", "--workers", "0", "--batches", "2"])
    assert result["batch"] == 8 and result["feature_cache_mb"] > 0
    for state in ("cold", "warm"):
        assert result[state]["workers=0"]["samples_per_s"] > 0
