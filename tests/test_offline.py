"""Without the hub (HF_HUB_OFFLINE=1, or an endpoint that refuses connections): every hub path fails in one line that
names `hf download`, or, with everything cached, reads the cache only (apa.offline). Each runs in a fresh process,
as a user runs it: the hub clients read the offline flag when imported. (train.py: tests/test_run_folder.py;
`apa check`: tests/checkpoint/test_hub_check.py; sweeps: tests/test_sweeps.py.)"""

import os
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # end to end: `pytest -m "not slow"` leaves this module out

WITHOUT_HUB = [{"HF_HUB_OFFLINE": "1"}, {"HF_HUB_OFFLINE": "", "HF_ENDPOINT": "http://127.0.0.1:9"}]
IDS = ["HF_HUB_OFFLINE", "unreachable"]
REVISION = "f95618ea1353303f34cf186b9c310fa2c1eb02c8"  # conf/data/speechocean762.yaml

READ_HUB = f"""
from apa.data.hf_sources import read_hub
from apa.data.labels import SkipReport
try:
    read_hub("mispeech/speechocean762", "{REVISION}", "test", SkipReport("test"))
except Exception as err:
    print(type(err).__name__, err)
"""

CACHED = """
import os, sys
from pathlib import Path
import huggingface_hub.constants as hub
from apa.checkpoint.hub import check_hub_access
snapshot = Path(hub.HF_HUB_CACHE) / "models--microsoft--Phi-4-multimodal-instruct" / "snapshots" / "c0ffee"
snapshot.mkdir(parents=True)
(snapshot / "config.json").write_text("{}")
check_hub_access([("microsoft/Phi-4-multimodal-instruct", "model", "model.path", "refs/pr/70")])
print(hub.HF_HUB_OFFLINE, os.environ["HF_HUB_OFFLINE"])
"""


def run(code: str, tmp_path, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    environ = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_DATASETS_CACHE": str(tmp_path / "datasets"),
               **env}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False,
                          env={k: v for k, v in environ.items() if v != ""})
    return done, time.perf_counter() - started


@pytest.mark.parametrize("env", WITHOUT_HUB, ids=IDS)
def test_the_hub_dataset_without_the_hub_is_refused_in_one_line_naming_hf_download(tmp_path, env):
    """Before: half a minute of the client's retries with the endpoint refusing, then 'check the id and the
    commit'. Now the process reads the (empty) cache at once and says why and what to do."""
    done, seconds = run(READ_HUB, tmp_path, **env)
    print(f"refused in {seconds:.1f} s")  # measured, not asserted
    line = done.stdout.strip()
    assert line.startswith(f"DataError data.hub_id=mispeech/speechocean762 at data.revision={REVISION} is not in "
                           "the local cache and the hub cannot be reached ("), done.stdout + done.stderr[-2000:]
    assert f"`hf download mispeech/speechocean762 --repo-type dataset --revision {REVISION} --local-dir <dir>`" in line


def test_a_cached_model_with_the_hub_unreachable_is_read_from_the_cache_only(tmp_path):
    done, _ = run(CACHED, tmp_path, HF_HUB_OFFLINE="", HF_ENDPOINT="http://127.0.0.1:9")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "1"]  # every later hub call: the cache, no request, no retry
    assert "the hub cannot be reached (127.0.0.1:9: Connection refused)" in done.stderr
