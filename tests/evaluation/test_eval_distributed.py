"""Data-parallel evaluation: `torchrun evaluate.py run_dir=... checkpoint=all` on 2 CPU ranks (gloo) writes the very
files one process writes; a rank SIGKILLed mid-way loses no finished batch, and the same command, or one with another
world size, resumes to the same files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from apa.evaluation.predictions import deal_batches
from tests.conftest import FAST_EVAL, REPO

pytestmark = pytest.mark.slow  # end to end: `pytest -m "not slow"` leaves this module out

CHECKPOINTS = ("checkpoint-epoch-1", "checkpoint-epoch-2", "final_model")


@pytest.fixture(scope="module")
def single_process(demo_sweep):
    """The demo sweep's fresh_r64 run, evaluated by one process (the sweep callback, with FAST_EVAL)."""
    (run,) = demo_sweep.glob("fresh_r64_*")
    return run


def _copy(run: Path, to: Path) -> Path:
    """The run without its evaluations."""
    return Path(shutil.copytree(run, to / run.name, ignore=shutil.ignore_patterns("eval")))


def _evaluate(run: Path, ranks: int | None, log: Path) -> subprocess.Popen:
    """evaluate.py with every checkpoint, under torchrun with `ranks` ranks (None: a plain single process); its log
    lines on the console too (APA_VERBOSE=1: the tests read which rank generated what)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    cmd = [*(launcher if ranks else [sys.executable]), str(REPO / "evaluate.py"), f"run_dir={run}", "checkpoint=all",
           *FAST_EVAL]
    return subprocess.Popen(cmd, cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "APA_VERBOSE": "1"})


def _finish(proc: subprocess.Popen, log: Path, code: int = 0) -> str:
    assert proc.wait(timeout=600) == code, log.read_text()[-3000:]
    return log.read_text()


def _rank_pid(launcher: subprocess.Popen, rank: int) -> int:
    """The PID of torchrun's worker with RANK=`rank` (a child of the launcher process)."""
    for pid in Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split():
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in env:
            return int(pid)
    raise AssertionError(f"no rank {rank} among the children of {launcher.pid}")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # merged and removed since it was listed
        return 0


def _kill_after_first_batch(run: Path, rank: int, log: Path) -> bytes:
    """Start 2 ranks; as soon as a shard of checkpoint-epoch-1 holds a finished batch, SIGKILL rank `rank` (the
    launcher then stops the other). Returns what the shards held just after the kill."""
    proc = _evaluate(run, 2, log)
    folder = run / "eval" / "checkpoint-epoch-1"
    deadline = time.monotonic() + 600
    while not any(_size(p) for p in folder.glob("predictions.rank-*.jsonl")):
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.01)
    os.kill(_rank_pid(proc, rank), signal.SIGKILL)
    held = b"".join(p.read_bytes() for p in sorted(folder.glob("predictions.rank-*.jsonl")))
    assert proc.wait(timeout=600) != 0, "the evaluation ended before a rank could be killed"
    assert not (run / "eval" / "checkpoint-epoch-2" / "predictions.jsonl").exists()
    return held


def _assert_same_files(run: Path, reference: Path) -> None:
    for checkpoint in CHECKPOINTS:
        for name in ("predictions.jsonl", "metrics.json", "test_split.json", "train_means.json"):
            got, want = run / "eval" / checkpoint / name, reference / "eval" / checkpoint / name
            assert got.read_bytes() == want.read_bytes(), f"{checkpoint}/{name} differs"
        assert not list((run / "eval" / checkpoint).glob("predictions.rank-*")), "a shard was left behind"
        assert not list((run / "eval" / checkpoint).glob(".*.tmp"))


def _tensorboard(run: Path) -> dict[str, list[tuple[int, float]]]:
    """The evaluation's series in the run's TensorBoard log (apa.evaluation.trackers), as TensorBoard reads them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    reader = EventAccumulator(str(run / "logs"), size_guidance={"scalars": 0})
    reader.Reload()
    return {tag: [(e.step, e.value) for e in reader.Scalars(tag)] for tag in reader.Tags()["scalars"]
            if tag.startswith("test")}


def _launches(run: Path, checkpoint: str = "checkpoint-epoch-1") -> list[int]:
    fingerprint = json.loads((run / "eval" / checkpoint / "fingerprint.json").read_text())
    return [launch["world_size"] for launch in fingerprint["launches"]]


def test_batches_are_dealt_whole_balanced_by_tokens_and_the_same_on_every_rank():
    costs = [10, 40, 30, 20, 50]
    shares = deal_batches(costs, [0, 1, 2, 3, 4], 2)
    # costliest first to the least loaded rank: 50 -> r0, 40 -> r1, 30 -> r1 (40 < 50), 20 -> r0, 10 -> r0 (70 = 70)
    assert shares == [[0, 3, 4], [1, 2]]
    assert deal_batches(costs, [1, 3], 3) == [[1], [3], []]  # only what is left to do; a rank may get nothing
    assert sorted(i for share in deal_batches(costs, list(range(5)), 4) for i in share) == list(range(5))


def test_two_gloo_ranks_write_the_files_one_process_writes(single_process, tmp_path):
    run = _copy(single_process, tmp_path)
    log = _finish(_evaluate(run, 2, tmp_path / "two_ranks.log"), tmp_path / "two_ranks.log")
    _assert_same_files(run, single_process)
    assert "rank 0 of 2 generates" in log and log.count("| this run (final_model) |") == 1  # rank 0 reports
    assert _launches(run) == [2]
    # the fingerprint ignores the world size: the single process's and the two ranks' agree but for `launches`
    ours, theirs = (json.loads((r / "eval" / "final_model" / "fingerprint.json").read_text())
                    for r in (run, single_process))
    assert {k: v for k, v in ours.items() if k != "launches"} == {k: v for k, v in theirs.items() if k != "launches"}
    # rank 0 alone rewrote the run's TensorBoard file of the evaluation: one file, the single process's points
    assert len(list((run / "logs").glob("events.out.tfevents.*.test"))) == 1
    assert _tensorboard(run) == _tensorboard(single_process) != {}


@pytest.fixture(scope="module")
def killed(single_process, tmp_path_factory):
    """The run evaluated by 2 ranks until rank 0 (the one that holds the lock and merges) was SIGKILLed right after
    a first batch was on disk; and what the shards held then. Each test resumes a copy of it."""
    out = tmp_path_factory.mktemp("killed")
    run = _copy(single_process, out)
    return run, _kill_after_first_batch(run, 0, out / "killed.log")


def _resumable_copy(killed, tmp_path: Path) -> Path:
    return Path(shutil.copytree(killed[0], tmp_path / killed[0].name))


def test_a_sigkilled_rank_loses_no_finished_batch_and_the_same_command_resumes(killed, single_process, tmp_path):
    run = _resumable_copy(killed, tmp_path)
    log = _finish(_evaluate(run, 2, tmp_path / "resumed.log"), tmp_path / "resumed.log")
    assert "predictions already there" in log  # the finished batches were kept, not generated again
    merged = (run / "eval" / "checkpoint-epoch-1" / "predictions.jsonl").read_bytes().splitlines(keepends=True)
    held = [line for line in killed[1].splitlines(keepends=True) if line.endswith(b"\n")]
    assert held and all(line in merged for line in held)
    _assert_same_files(run, single_process)
    assert _launches(run) == [2, 2]


def test_a_two_rank_evaluation_killed_mid_way_resumes_in_one_process(killed, single_process, tmp_path):
    run = _resumable_copy(killed, tmp_path)
    log = _finish(_evaluate(run, None, tmp_path / "resumed.log"), tmp_path / "resumed.log")
    assert "predictions already there" in log
    _assert_same_files(run, single_process)
    assert _launches(run) == [2, 1]
