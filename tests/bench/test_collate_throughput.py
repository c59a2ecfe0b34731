"""Data mode on the tiny model: collate throughput, cache cold and warm."""

from apa.bench.cli import main


def test_data_mode_measures_collate_throughput():
    result = main(["experiment=demo", "data.limit=2", "--mode", "data", "--workers", "0", "--batches", "2"])
    assert result["batch"] == 8 and result["feature_cache_mb"] > 0
    for state in ("cold", "warm"):
        assert result[state]["workers=0"]["samples_per_s"] > 0
