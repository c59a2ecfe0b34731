"""A quiet console: a command prints its one table, warnings and errors; the detail goes to its log file;
APA_VERBOSE=1 or hydra.verbose bring it back, transformers' known longrope advice included."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
from hydra.core.hydra_config import HydraConfig

from apa.checkpoint.layout import ROPE_FACTOR_WARNING
from apa.console import VERBOSE_ENV, ConsoleFilter
from tests.conftest import CONF, FAST_EVAL, REPO

pytestmark = pytest.mark.slow  # end to end: `pytest -m "not slow"` leaves this module out

TABLE_HEADER = "| source | epoch | PCC acc |"  # the evaluation table's first line


def record(name: str, level: int) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, "detail", None, None)


@pytest.fixture
def hydra_verbose():
    """Set `hydra.verbose` as a running Hydra app has it; restored afterwards."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    def set_to(value: str) -> None:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            HydraConfig.instance().set_config(compose("evaluate", [f"hydra.verbose={value}"], return_hydra_config=True))

    yield set_to
    HydraConfig.instance().cfg = None
    GlobalHydra.instance().clear()


def test_the_console_shows_warnings_and_keeps_the_detail_for_the_log(monkeypatch):
    console = ConsoleFilter()
    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    assert not console.filter(record("apa.data.sources", logging.INFO))
    assert console.filter(record("apa.data.sources", logging.WARNING))
    assert console.filter(record("transformers.modeling_utils", logging.ERROR))
    for value, shown in (("1", True), ("true", True), ("0", False), ("", False)):
        monkeypatch.setenv(VERBOSE_ENV, value)
        assert console.filter(record("apa.data.sources", logging.INFO)) is shown, value


def test_hydra_verbose_brings_the_detail_back(monkeypatch, hydra_verbose):
    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    console = ConsoleFilter()
    hydra_verbose("true")
    assert console.filter(record("apa.data.sources", logging.INFO))
    hydra_verbose("[apa.data]")  # Hydra's list form: those loggers (and theirs below) only
    assert console.filter(record("apa.data.sources", logging.DEBUG))
    assert not console.filter(record("apa.evaluation.evaluate", logging.INFO))
    hydra_verbose("false")
    assert not console.filter(record("apa.data.sources", logging.INFO))


def _evaluate_base_model(out, verbose: bool) -> str:
    """evaluate.py on the untrained tiny model (2 utterances), as a user runs it; its console."""
    env = {k: v for k, v in os.environ.items() if k != VERBOSE_ENV} | ({VERBOSE_ENV: "1"} if verbose else {})
    done = subprocess.run([sys.executable, str(REPO / "evaluate.py"), "model=tiny", "data=sample", "data.limit=2",
                           "prompts=terse", *FAST_EVAL, f"hydra.run.dir={out}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def test_evaluate_prints_its_one_table_and_logs_the_detail(tmp_path):
    console = _evaluate_base_model(tmp_path / "quiet", verbose=False)
    assert console.count(TABLE_HEADER) == 1
    assert "n/a where no APA answer parsed: PCC in base_model" in console  # and why its n/a are n/a
    assert "[INFO]" not in console and "[HYDRA]" not in console
    assert ROPE_FACTOR_WARNING not in console  # transformers' known longrope advice, dropped at its logger
    log = (tmp_path / "quiet" / "evaluate.log").read_text()
    assert "untrained baseline:" in log and "test split: using the first 2" in log  # the detail, in the log file
    loud = _evaluate_base_model(tmp_path / "verbose", verbose=True)
    assert loud.count(TABLE_HEADER) == 1
    assert "[apa.evaluation.evaluate][INFO] - untrained baseline:" in loud
    assert ROPE_FACTOR_WARNING in loud
