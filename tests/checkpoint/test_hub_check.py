"""`apa check <hub id> --revision R` and model loading from a hub id, in a hub cache laid out as the hub client lays
it out (snapshots/<commit>/, refs/<revision>) with HF_HUB_OFFLINE=1; the metadata API (HfApi) is mocked, reading
the cached files' own safetensors headers and recording the revision asked for. Each runs in a fresh process, as a
user runs it, since the hub client reads its cache location and offline flag when imported."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from apa.checkpoint.layout import remote_config
from apa.checkpoint.loading import resolve_model_path
from tests.conftest import REPO, compose_config

pytestmark = pytest.mark.slow  # end to end: `pytest -m "not slow"` leaves this module out

REPO_ID = "microsoft/Phi-4-multimodal-instruct"
COMMIT = "0123456789abcdef0123456789abcdef01234567"

# HfApi's safetensors metadata calls answered from the cached files' headers; every call recorded on stderr.
MOCKED_HFAPI = """
import json, struct, sys, types
from pathlib import Path
import huggingface_hub
from huggingface_hub.errors import EntryNotFoundError

SNAPSHOT = Path(sys.argv[1])

def _header(file):
    with open(file, "rb") as f:
        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
    header.pop("__metadata__", None)
    return types.SimpleNamespace(tensors={k: types.SimpleNamespace(shape=v["shape"]) for k, v in header.items()})

class MockedHfApi(huggingface_hub.HfApi):  # the real client, but for the two metadata calls
    def parse_safetensors_file_metadata(self, repo_id, filename, revision=None, **kwargs):
        print(f"HfApi {repo_id} {filename} {revision}", file=sys.stderr)
        if not (SNAPSHOT / filename).is_file():
            raise EntryNotFoundError(filename)
        return _header(SNAPSHOT / filename)

    def get_safetensors_metadata(self, repo_id, revision=None, **kwargs):
        print(f"HfApi {repo_id} root weights {revision}", file=sys.stderr)
        return types.SimpleNamespace(files_metadata={f.name: _header(f) for f in SNAPSHOT.glob("*.safetensors")})

huggingface_hub.HfApi = MockedHfApi
"""


def hub_cache(root: Path, folder: Path, revision: str, repo_id: str = REPO_ID) -> Path:
    """A hub cache holding `folder` as `repo_id` at `revision` (what `hf download --revision` leaves behind)."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / COMMIT)
    (repo / "refs" / revision).parent.mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(COMMIT)
    return root


def run(code: str, cache: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    environ = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", **env}
    environ = {k: v for k, v in environ.items() if v != ""}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO, env=environ,
                          check=False)
    return done, time.perf_counter() - started


CHECK = "import sys; from apa.checkpoint.check import main; sys.exit(main(sys.argv[2:]))"


@pytest.fixture(scope="module")
def released_miniature():
    return Path(resolve_model_path(compose_config("experiment=demo", "model=tiny_released").model))


def test_check_on_a_hub_id_reports_no_false_problem_and_reads_the_adapter_at_the_revision(released_miniature,
                                                                                        tmp_path):
    cache = hub_cache(tmp_path / "hub", released_miniature, "refs/pr/70")
    snapshot = cache / f"models--{REPO_ID.replace('/', '--')}" / "snapshots" / COMMIT
    done, _ = run(MOCKED_HFAPI + CHECK, cache, str(snapshot), REPO_ID, "--revision", "refs/pr/70")
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "no problems found" in done.stdout and "PROBLEM" not in done.stdout
    assert f"HfApi {REPO_ID} speech-lora/adapter_model.safetensors refs/pr/70" in done.stderr
    assert f"HfApi {REPO_ID} root weights refs/pr/70" in done.stderr
    assert "16 LoRA tensors of rank 320" in done.stdout


@pytest.mark.parametrize("env", [{"HF_HUB_OFFLINE": "1"}, {"HF_HUB_OFFLINE": "", "HF_ENDPOINT": "http://127.0.0.1:9"}],
                         ids=["HF_HUB_OFFLINE", "unreachable"])
def test_check_on_an_uncached_hub_id_without_the_hub_fails_in_one_line_within_5_seconds(tmp_path, env):
    done, seconds = run(CHECK, tmp_path / "empty-cache", "-", REPO_ID, "--revision", "refs/pr/70", **env)
    error = done.stderr.strip()
    assert done.returncode == 2 and "\n" not in error, done.stderr
    assert error.startswith(f"error: checkpoint={REPO_ID} is not in the local hub cache ({tmp_path / 'empty-cache'})")
    assert "HF_HUB_OFFLINE" in error and seconds < 5


def test_check_on_a_cached_hub_id_without_the_hub_reads_the_cache_then_names_what_is_missing(released_miniature,
                                                                                            tmp_path):
    """The real hub client (no mock), the endpoint refusing connections: the headers come from the cached files at
    the revision (before: 20 s of retries, then a traceback); a file missing from the cache is one line."""
    cache = hub_cache(tmp_path / "hub", released_miniature, "refs/pr/70")
    unreachable = {"HF_HUB_OFFLINE": "", "HF_ENDPOINT": "http://127.0.0.1:9"}
    done, seconds = run(CHECK, cache, "-", REPO_ID, "--revision", "refs/pr/70", **unreachable)
    print(f"checked from the cache in {seconds:.1f} s")
    assert done.returncode == 0 and "no problems found" in done.stdout, done.stdout[-2000:] + done.stderr[-3000:]
    assert "16 LoRA tensors of rank 320" in done.stdout
    (cache / f"models--{REPO_ID.replace('/', '--')}" / "snapshots" / COMMIT / "speech-lora" /
     "adapter_model.safetensors").unlink()
    done, _ = run(CHECK, cache, "-", REPO_ID, "--revision", "refs/pr/70", **unreachable)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr[-3000:]
    assert done.stderr.startswith("error: speech-lora/adapter_model.safetensors of microsoft/Phi-4-multimodal-instruct "
                                  "at revision refs/pr/70 is not in the local hub cache")
    assert f"`hf download {REPO_ID} --revision refs/pr/70 --local-dir <dir>`" in done.stderr


def test_loading_refuses_a_remote_code_config_at_the_hub_revision(released_miniature, tmp_path):
    """model.revision=main, where the hub's config is the remote-code one: refused before transformers would ask
    to trust remote code."""
    folder = Path(shutil.copytree(released_miniature, tmp_path / "remote"))
    (folder / "config.json").write_text(json.dumps(remote_config()))
    cache = hub_cache(tmp_path / "hub", folder, "main")
    code = ("from apa.checkpoint.loading import ModelLoadError, check_checkpoint\n"
            f"try:\n    check_checkpoint({REPO_ID!r}, 'main')\nexcept ModelLoadError as err:\n    print(err)\n")
    done, _ = run(code, cache)
    assert done.stdout.startswith(f"{REPO_ID} at revision main is not a native Phi-4-multimodal checkpoint "
                                  "(found speech_lora, auto_map: the trust_remote_code format)"), done.stderr[-2000:]


AUTO_PEFT = """
import json, sys, torch
from peft import AutoPeftModelForCausalLM
from apa.checkpoint.loading import add_control_tokens, attach_lora, load_base
from tests.conftest import compose_config

cfg = compose_config("model=phi4mm", "model.dtype=float32", "lora=fresh_r64")  # the hub id at refs/pr/70
model, processor, path = load_base(cfg.model)
ids = add_control_tokens(model, processor, 0)
trained = attach_lora(model, cfg.lora, path, ids, 0, [], cfg.model.revision).eval()
trained.save_pretrained(sys.argv[1])
reloaded = AutoPeftModelForCausalLM.from_pretrained(sys.argv[1]).eval()
inputs = torch.tensor([[1, 2, 3, ids[0]]])
with torch.no_grad():
    same = torch.equal(trained(input_ids=inputs).logits, reloaded(input_ids=inputs).logits)
saved = json.load(open(sys.argv[1] + "/adapter_config.json"))
print(json.dumps({"base": saved["base_model_name_or_path"], "revision": saved["revision"], "same_logits": same}))
"""


def test_auto_peft_model_loads_final_model_on_the_runs_base_revision(released_miniature, tmp_path):
    """The cache holds the base only at refs/pr/70, as after `hf download --revision refs/pr/70`: an adapter config
    without the revision would send AutoPeftModelForCausalLM to `main`, which is not there."""
    cache = hub_cache(tmp_path / "hub", released_miniature, "refs/pr/70")
    done, _ = run(AUTO_PEFT, cache, str(tmp_path / "final_model"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"base": REPO_ID, "revision": "refs/pr/70",
                                                                "same_logits": True}
