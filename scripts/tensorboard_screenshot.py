"""Retake docs/img/tensorboard_eval.png: TensorBoard's scalars page with a run's evaluation curves (test/...) beside its
training loss, in headless Chromium.

    python scripts/tensorboard_screenshot.py                   # train experiment=overfit with a checkpoint every 20
                                                               # steps (in a temporary folder), evaluate every
                                                               # checkpoint, then shoot (~10 min on 2 busy CPU cores)
    python scripts/tensorboard_screenshot.py --run <run>       # an evaluated run folder of your own
    python scripts/tensorboard_screenshot.py --out shot.png    # elsewhere than docs/img/tensorboard_eval.png

It starts `tensorboard --logdir <run> --port <a free port> --bind_all`, waits until the run's test/ tags are loaded,
opens the scalars page filtered to the loss and the headline evaluation metrics (smoothing off: each point is one
evaluated checkpoint; outliers not ignored: every point in view) and saves the page. Needs Debian's chromium
(/usr/bin/chromium) and playwright (dev extra).
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TAGS = r"train/loss|test/(pcc_total|wer|per|parse_rate_apa|parse_rate_mdd)$"


def train_and_evaluate(run: Path) -> None:
    """The overfit recipe (it learns: PCC, WER and PER move) with 6 epoch checkpoints, every one evaluated."""
    subprocess.run([sys.executable, "train.py", "experiment=overfit", "trainer.save_strategy=steps",
                    "trainer.save_steps=20", f"hydra.run.dir={run}"], cwd=REPO, check=True)
    subprocess.run([sys.executable, "evaluate.py", f"run_dir={run}", "checkpoint=all"], cwd=REPO, check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_tags(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/data/plugin/scalars/tags", timeout=5) as response:
                tags = json.load(response)
            if any("test/wer" in run_tags for run_tags in tags.values()):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"error: TensorBoard at {url} did not load test/wer within {timeout:.0f} s")
        time.sleep(1)


def shoot(run: Path, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    port = free_port()
    board = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(run), "--port", str(port),
                              "--bind_all"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_tags(url)
        state = urllib.parse.urlencode({"tagFilter": TAGS, "_smoothingWeight": 0}, quote_via=urllib.parse.quote)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium")
            page = browser.new_page(viewport={"width": 1440, "height": 790})  # the matching tags' six charts
            page.goto(f"{url}/#scalars&{state}")
            page.get_by_text("test/wer", exact=True).first.wait_for(timeout=60_000)
            page.get_by_text("Ignore outliers in chart scaling").click()  # show the first loss and every point
            page.wait_for_load_state("networkidle")
            time.sleep(2)  # the charts' last redraw
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out))
            browser.close()
    finally:
        board.terminate()
        board.wait()
    print(f"{out}: {out.stat().st_size // 1024} KiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="an evaluated run folder (default: train and evaluate one)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "tensorboard_eval.png")
    args = parser.parse_args()
    if args.run is not None:
        shoot(args.run, args.out)
        return
    with tempfile.TemporaryDirectory(prefix="apa-tensorboard-") as tmp:
        run = Path(tmp) / "overfit"
        train_and_evaluate(run)
        shoot(run, args.out)


if __name__ == "__main__":
    main()
