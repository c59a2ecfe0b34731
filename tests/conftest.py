"""Shared fixtures: configs composed exactly as train.py composes them, on the tiny model and bundled sample."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from apa.config import register_configs
from apa.data import SAMPLE_ROOT

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"
# 4 utterances -> 8 examples, batch 2: 4 optimizer steps an epoch, 2 epochs; LoRA dropout on, so RNG state matters
RESUME_OVERRIDES = ("experiment=demo", "prompts=terse", "lora=fresh_r64", "data.limit=4", "trainer.num_train_epochs=2",
                    "trainer.per_device_train_batch_size=2", "trainer.report_to=[]", "trainer.logging_steps=1")
FAST_EVAL = ("batch_size=3", "max_new_tokens.apa=6", "max_new_tokens.mdd=6")  # short answers: decoding is slow here
# Hypothesis keeps its files (example database, constants cache) outside the checkout too
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(Path(tempfile.gettempdir()) / "apa-test-hypothesis"))
# Generated tiny checkpoints go where the project keeps them (~/.cache/apa, or $APA_CACHE_DIR): never into the checkout
register_configs()


def compose_config(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


@pytest.fixture(autouse=True)
def _hub_offline_state():
    """apa.offline.go_offline() switches the whole process to the local hub cache (as a command should once the hub
    is found unreachable); in the suite's one process, each test starts again from the session's setting."""
    before = os.environ.get("HF_HUB_OFFLINE")
    yield
    if before is None:
        os.environ.pop("HF_HUB_OFFLINE", None)
    else:
        os.environ["HF_HUB_OFFLINE"] = before
    for name in ("huggingface_hub.constants", "datasets.config"):
        if name in sys.modules:
            sys.modules[name].HF_HUB_OFFLINE = (before or "").lower() in ("1", "true", "yes", "on")


@pytest.fixture
def make_config():
    return compose_config


@pytest.fixture
def corpus(tmp_path):
    """A copy of the bundled sample (original layout) to damage."""
    from apa.data import SAMPLE_ROOT

    root = tmp_path / "so762"
    shutil.copytree(SAMPLE_ROOT, root)
    return root


def edit_scores(root: Path, edit) -> None:
    """Change a corpus copy's resource/scores.json in place: `edit(scores)` mutates the parsed dict."""
    import json

    path = root / "resource" / "scores.json"
    scores = json.loads(path.read_text())
    edit(scores)
    path.write_text(json.dumps(scores, ensure_ascii=False))


def compose_eval_config(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="evaluate", overrides=list(overrides))


def hub_rows(split: str) -> list[dict]:
    """The sample in the hub's schema: embedded audio bytes, the id only in the audio path, [] for no errors."""
    scores = json.loads((SAMPLE_ROOT / "resource" / "scores.json").read_text())
    speakers = dict(line.split() for line in (SAMPLE_ROOT / split / "utt2spk").read_text().splitlines())
    rows = []
    for line in (SAMPLE_ROOT / split / "wav.scp").read_text().splitlines():
        utt_id, rel = line.split()
        entry = scores[utt_id]
        words = [{**w, "phones-accuracy": [float(x) for x in w["phones-accuracy"]],
                  "mispronunciations": w.get("mispronunciations", [])} for w in entry["words"]]
        rows.append({"audio": {"bytes": (SAMPLE_ROOT / rel).read_bytes(), "path": Path(rel).name},
                     "text": entry["text"], "accuracy": entry["accuracy"], "completeness": float(entry["completeness"]),
                     "fluency": entry["fluency"], "prosodic": entry["prosodic"], "total": entry["total"],
                     "words": words, "speaker": speakers[utt_id], "gender": "m", "age": 6})
    return rows


class BackgroundRun:
    """A command run as a user runs it, in its own process, started with the session (see pytest_sessionstart)."""

    def __init__(self, cmd: list[str], cwd: Path, out_dir: Path):
        self.out_dir = out_dir
        self.log_path = out_dir.with_name(out_dir.name + ".log")  # beside it: a sweep folder must start empty
        self._log = self.log_path.open("w")
        # its own process group, so that stop() also ends what it started (torchrun's ranks, submitit's jobs)
        self.proc = subprocess.Popen(cmd, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self.killed = threading.Event()

    def _when_ready(self, ready: Path, act, timeout: float) -> None:
        """Call `act()` from a thread of this session once `ready` exists, unless the process ends (or `timeout`
        passes) first."""

        def watch():
            deadline = time.monotonic() + timeout
            while not ready.exists():
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    return
                time.sleep(0.02)
            act()

        threading.Thread(target=watch, daemon=True).start()

    def kill_once(self, ready: Path, delay: float, timeout: float = 600, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the process `delay` seconds after `ready` appears (SIGKILL: no handler of it can run)."""

        def kill():
            time.sleep(delay)
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
                self.killed.set()

        self._when_ready(ready, kill, timeout)

    def signal_ranks_once(self, ready: Path, sig: int, timeout: float = 600) -> None:
        """Send `sig` to the processes torchrun started (the ranks, not torchrun itself, which would relay a second
        one) as soon as `ready` appears."""
        import psutil

        def signal_ranks():
            for child in psutil.Process(self.proc.pid).children():
                child.send_signal(sig)
            self.killed.set()

        self._when_ready(ready, signal_ranks, timeout)

    def wait(self, expected_code: int = 0, timeout: float = 600) -> Path:
        """The run's folder, once its command has ended with `expected_code`."""
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            self.stop()
        assert code == expected_code, self.log_path.read_text()[-3000:]
        return self.out_dir

    def stop(self) -> None:
        if self._log.closed:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # the group is gone: every process of it has ended
            pass
        self.proc.wait()
        self._log.close()


def _demo_sweep(out_dir: Path) -> BackgroundRun:
    """What multirun.sh runs, as a user runs it: `train.py -m` over both LoRA configs (2 epochs, batch 4 x
    accumulation 2) with the evaluate_and_compare callback (every checkpoint evaluated, then the comparison).
    The jobs go through hydra-submitit-launcher's local launcher, the SLURM launcher's stand-in on one machine: each
    job is its own process, and both run at once."""
    return BackgroundRun([
        sys.executable, "train.py", "-m", "experiment=demo", "lora=pretrained_r320,fresh_r64", "prompts=terse",
        "data.limit=4", "trainer.num_train_epochs=2", "trainer.per_device_train_batch_size=4",
        "trainer.gradient_accumulation_steps=2", f"hydra.sweep.dir={out_dir}", "hydra/callbacks=evaluate_and_compare",
        "hydra.callbacks.evaluate_and_compare.overrides=[" + ",".join(f'"{o}"' for o in FAST_EVAL) + "]",
        "hydra/launcher=submitit_local",
    ], REPO, out_dir)


# 2 ranks x batch 2 over 8 examples: 2 optimizer steps an epoch, 2 epochs
TORCHRUN = (sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", str(REPO / "train.py"))
TWO_RANK_OVERRIDES = ("experiment=demo", "lora=fresh_r64", "prompts=terse", "data.limit=4",
                      "trainer.num_train_epochs=2", "trainer.per_device_train_batch_size=2", "trainer.report_to=[]")


def _torchrun_two_ranks(out_dir: Path) -> BackgroundRun:
    """torchrun with 2 CPU ranks (gloo) and no hydra.run.dir: each rank composes the default, timestamped
    outputs/runs/<time>_fresh_r64_<overrides> under the working directory, and they must agree on it."""
    return BackgroundRun([*TORCHRUN, *TWO_RANK_OVERRIDES], out_dir, out_dir)


def _deepspeed_zero2(out_dir: Path) -> BackgroundRun:
    """torchrun_two_ranks's run under DeepSpeed ZeRO-2 (+trainer/deepspeed=zero2), in <out_dir>/run."""
    return BackgroundRun([*TORCHRUN, *TWO_RANK_OVERRIDES, "+trainer/deepspeed=zero2",
                          f"hydra.run.dir={out_dir / 'run'}"], REPO, out_dir)


def _deepspeed_zero2_sigint(out_dir: Path) -> BackgroundRun:
    """The same ZeRO-2 run, its ranks sent SIGINT as its epoch-1 checkpoint appears: during step 3, the first of
    epoch 2's two steps (each takes ~0.3 s here; the ranks agree on the step to stop after)."""
    run = _deepspeed_zero2(out_dir)
    run.signal_ranks_once(out_dir / "run" / "checkpoint-epoch-1", signal.SIGINT)
    return run


def _sigkilled_in_epoch_2(out_dir: Path) -> BackgroundRun:
    """A real `kill -9` of train.py (no handler can run) half a second after its epoch-1 checkpoint appears
    (renamed into place complete), so during epoch 2: 4 steps of about a second each here."""
    run = BackgroundRun([sys.executable, "train.py", *RESUME_OVERRIDES, f"hydra.run.dir={out_dir / 'run'}"],
                        REPO, out_dir)
    run.kill_once(out_dir / "run" / "checkpoint-epoch-1", delay=0.5)
    return run


def _table3_sweep(out_dir: Path) -> BackgroundRun:
    """The README's CPU-sized Table 3 sweep: LoRA-only and Unfreeze for 4 epochs each, every epoch evaluated, the
    untrained baseline, table3.md (the paper's prompts replaced by the terse ones, answers kept short)."""
    return BackgroundRun([
        sys.executable, "train.py", "-m", "experiment=table3", "model=tiny", "data=sample", "trainer=cpu_demo",
        "trainer.num_train_epochs=4", "data.limit=4", "prompts=terse", f"hydra.sweep.dir={out_dir}",
        "hydra.callbacks.evaluate_and_compare.overrides=[" + ",".join(f'"{o}"' for o in FAST_EVAL) + "]",
    ], REPO, out_dir)


# name: (test files that use it, how to start it). Each costs ~25 s of single-threaded library imports in fresh
# processes. Started as the session starts, they run while collection and the in-process tests use the other core;
# the tests that use them run last and wait for them.
BACKGROUND = {
    "demo_sweep": (("e2e/test_cli.py", "evaluation/test_evaluation.py", "evaluation/test_eval_distributed.py",
                    "serve/test_predict.py", "reporting/test_report.py", "serve/test_app.py",
                    "publish/test_export.py", "publish/test_push.py", "evaluation/test_trackers.py"), _demo_sweep),
    "torchrun_two_ranks": (("e2e/test_distributed.py", "e2e/test_deepspeed.py"), _torchrun_two_ranks),
    "sigkilled_in_epoch_2": (("training/test_resume.py",), _sigkilled_in_epoch_2),
    "deepspeed_zero2": (("e2e/test_deepspeed.py",), _deepspeed_zero2),
    "deepspeed_zero2_sigint": (("e2e/test_deepspeed.py",), _deepspeed_zero2_sigint),
    "table3_sweep": (("reporting/test_table3.py",), _table3_sweep),
}
_RUNS: dict[str, BackgroundRun] = {}


def _start(name: str) -> None:
    if name not in _RUNS:
        _RUNS[name] = BACKGROUND[name][1](Path(tempfile.mkdtemp(prefix=f"apa-{name}-")))


def _checkout_files() -> set[str] | None:
    """Untracked and ignored paths in the checkout, less Python's and pytest's own caches (None outside a git
    checkout). The suite must leave this set as it found it: every file a test writes goes to a temporary folder."""
    try:
        listed = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all", "-z"],
                                cwd=REPO, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    paths = {entry[3:] for entry in listed.split("\0") if entry[:2] in ("??", "!!")}
    # a virtualenv inside the checkout (.ci/run's .venv) is the installed packages' (Gradio writes into its own)
    venvs = tuple(f"{d.name}/" for d in REPO.iterdir() if (d / "pyvenv.cfg").is_file())
    return {p for p in paths if "__pycache__/" not in p and not p.startswith((".pytest_cache/", *venvs))}


_CHECKOUT_BEFORE: set[str] | None = None


def pytest_sessionstart(session):
    """Note the checkout's untracked files; start the runs whose test files are among the paths asked for (before
    collection, which takes ~25 s)."""
    global _CHECKOUT_BEFORE
    config = session.config
    if config.option.collectonly:
        return
    _CHECKOUT_BEFORE = _checkout_files()
    if config.option.markexpr:  # `-m "not slow"` may deselect them all: start what is left after collection
        return
    asked = [(config.invocation_params.dir / arg.split("::")[0]).resolve() for arg in config.args]
    for name, (files, _) in BACKGROUND.items():
        if any(p == f or p in f.parents for p in asked for f in (REPO / "tests" / n for n in files)):
            _start(name)


def _background_needs(item) -> set[str]:
    return BACKGROUND.keys() & set(getattr(item, "fixturenames", ()))


def pytest_itemcollected(item):
    """A test that waits for a background run is end-to-end: marked `slow` (`pytest -m "not slow"` leaves it out)."""
    if _background_needs(item):
        item.add_marker(pytest.mark.slow)


@pytest.hookimpl(trylast=True)  # after -k / -m deselection, so that `items` is what will run
def pytest_collection_modifyitems(config, items):
    """Stop the runs no selected test uses, start any missed, and move the modules that wait for them to the end
    (whole modules, so that their module-scoped fixtures are built once)."""
    needed = set().union(*map(_background_needs, items))
    for name in list(_RUNS):
        if name not in needed:
            unused = _RUNS.pop(name)
            unused.stop()
            shutil.rmtree(unused.out_dir, ignore_errors=True)
            unused.log_path.unlink(missing_ok=True)
    if not config.option.collectonly:
        for name in sorted(needed):
            _start(name)
    waiting_modules = {item.path for item in items if _background_needs(item)}
    waiting = [item for item in items if item.path in waiting_modules]
    for item in waiting:
        items.remove(item)
    items.extend(waiting)


def pytest_sessionfinish(session, exitstatus):
    for run in _RUNS.values():
        run.stop()
        if exitstatus == 0:
            shutil.rmtree(run.out_dir, ignore_errors=True)
            run.log_path.unlink(missing_ok=True)
    after = _checkout_files() if _CHECKOUT_BEFORE is not None else None
    written = sorted(after - _CHECKOUT_BEFORE) if after is not None else []
    if written:  # a test wrote into the checkout: the session fails, naming what appeared
        shown = "\n  ".join(written[:20]) + (f"\n  … and {len(written) - 20} more" if len(written) > 20 else "")
        print(f"\nerror: the tests wrote {len(written)} file(s) into the checkout {REPO}; write to tmp_path "
              f"instead:\n  {shown}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def demo_sweep():
    return _RUNS["demo_sweep"].wait()


@pytest.fixture(scope="session")
def torchrun_two_ranks():
    return _RUNS["torchrun_two_ranks"].wait()


@pytest.fixture(scope="session")
def table3_sweep():
    return _RUNS["table3_sweep"].wait()


@pytest.fixture(scope="session")
def sigkilled_in_epoch_2():
    run = _RUNS["sigkilled_in_epoch_2"]
    out_dir = run.wait(expected_code=-signal.SIGKILL)
    assert run.killed.is_set(), "the run ended before it could be killed in epoch 2"
    return out_dir / "run"


@pytest.fixture(scope="session")
def deepspeed_zero2():
    return _RUNS["deepspeed_zero2"].wait() / "run"


@pytest.fixture(scope="session")
def deepspeed_zero2_sigint():
    run = _RUNS["deepspeed_zero2_sigint"]
    out_dir = run.wait(expected_code=1)  # torchrun's own status when a rank exits non-zero (130: stopped by SIGINT)
    assert run.killed.is_set(), "the run ended before its ranks could be sent SIGINT"
    return out_dir / "run"
