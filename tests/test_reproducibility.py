"""What changes numbers is pinned and recorded: the dataset's revision and label release (checked against the labels
read), and the library versions a run trained under (a resume under others is refused unless allowed; an evaluation
records both sets)."""

import json
import shutil
import subprocess
import sys

import pytest

from apa.data.records import Mispronunciation, Utterance, Word
from apa.data.release import (
    ORIGINAL_LABELS_COMMIT,
    ORIGINAL_MIN_MISPRONUNCIATIONS,
    LabelReleaseError,
    check_label_release,
    dataset_identity,
)
from apa.versions import library_versions, version_differences
from tests.conftest import REPO, compose_config, compose_eval_config

DEMO = ("experiment=demo", "prompts=terse", "data.limit=2", "trainer.num_train_epochs=1", "trainer.report_to=[]")


def _utterances(pronounced: list[str]) -> list[Utterance]:
    """One utterance per label, each a one-word utterance whose phone 0 (AH) was said as `pronounced`."""
    return [Utterance(f"u{i}", "s", "", "A", {}, (Word("A", ("AH0",), (Mispronunciation(0, "AH", p),)),))
            for i, p in enumerate(pronounced)]


def test_l2_phones_contradict_the_2024_statement():
    with pytest.raises(LabelReleaseError, match=r"data.labels=2024 but 1 of its 3 .*IR.*data.labels=original"):
        check_label_release(_utterances(["AA", "IR*", "EH"]), "2024", "train split")
    check_label_release(_utterances(["AA", "EH"]), "2024", "train split")  # no L2 phone: as stated


def test_a_full_split_without_l2_phones_contradicts_the_original_statement():
    many = _utterances(["AA"] * ORIGINAL_MIN_MISPRONUNCIATIONS)
    with pytest.raises(LabelReleaseError, match="none of its 500 .* these are the 2024 labels"):
        check_label_release(many, "original", "train split")
    check_label_release(many[:-1] + _utterances(["DR"]), "original", "train split")
    check_label_release(many[:40], "original", "train split")  # too few labels to tell: taken as stated


def test_the_default_data_is_pinned_to_the_original_labels():
    data = compose_config().data
    assert (data.source, data.revision, data.labels) == ("hub", ORIGINAL_LABELS_COMMIT, "original")
    assert dataset_identity(data) == {"name": "speechocean762", "source": "hub", "labels": "original",
                                      "hub_id": "mispeech/speechocean762", "revision": ORIGINAL_LABELS_COMMIT}


@pytest.mark.parametrize(("override", "message"), [
    ("data.revision=null", "data.revision is not set: mispeech/speechocean762's main branch changed"),
    ("data.labels=null", "data.labels=None: state which SpeechOcean762 label release"),
])
def test_an_unpinned_or_unstated_dataset_is_refused_in_one_line(tmp_path, override, message):
    done = subprocess.run([sys.executable, "train.py", override, f"hydra.run.dir={tmp_path / 'run'}"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    line = done.stderr.strip()
    assert done.returncode == 2 and len(line.splitlines()) == 1, done.stderr[-2000:]
    assert line.startswith("error: " + message)
    if override == "data.revision=null":  # names both releases and how to choose one
        assert f"data.revision={ORIGINAL_LABELS_COMMIT} data.labels=original" in line and "data.labels=2024" in line
    assert not (tmp_path / "run").exists()


def test_a_wrong_label_statement_fails_before_any_model_loads(tmp_path):
    done = subprocess.run([sys.executable, "train.py", *DEMO, "data.labels=2025", f"hydra.run.dir={tmp_path}/r"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "data.labels='2025' must be original" in done.stderr


@pytest.fixture(scope="module")
def hub_run(tmp_path_factory):
    """A demo run reading the bundled sample through the hub reader (its parquet copy), pinned to a commit."""
    from datasets import Audio, Dataset

    from tests.conftest import hub_rows

    root = tmp_path_factory.mktemp("hubrun")
    for split in ("train", "test"):
        (root / "hub" / "data").mkdir(parents=True, exist_ok=True)
        Dataset.from_list(hub_rows(split)).cast_column("audio", Audio(decode=False)).to_parquet(
            str(root / "hub" / "data" / f"{split}-00000-of-00001.parquet"))
    run = root / "run"
    done = subprocess.run([sys.executable, "train.py", *DEMO, "data.source=hub", f"data.hub_id={root / 'hub'}",
                           f"data.revision={'ab' * 20}", f"hydra.run.dir={run}"], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return run


def test_the_revision_and_label_release_are_in_the_run_record_and_card(hub_run):
    record = json.loads((hub_run / "training_config.json").read_text())
    assert record["data"]["dataset"] == {"name": "sample", "source": "hub", "labels": "2024",
                                         "hub_id": str(hub_run.parent / "hub"), "revision": "ab" * 20}
    assert f"@ {'ab' * 5}, 2024 labels" in (hub_run / "README.md").read_text()
    assert set(record["library_versions"]) >= {"torch", "transformers", "tokenizers", "peft", "trl", "accelerate",
                                               "datasets"}


def test_evaluations_record_data_and_both_version_sets_and_compare_splits_label_releases(hub_run, tmp_path):
    from apa.evaluation.evaluate import evaluate
    from apa.reporting.compare import write_tables
    from apa.reporting.runs import collect
    from apa.reporting.table3 import write_table3

    run = tmp_path / "run"
    shutil.copytree(hub_run, run)
    evaluate(compose_eval_config(f"run_dir={run}", "batch_size=4", "max_new_tokens.apa=4", "max_new_tokens.mdd=4"),
             [], run / "eval")
    fingerprint = json.loads((run / "eval" / "final_model" / "fingerprint.json").read_text())
    assert fingerprint["data"]["revision"] == "ab" * 20 and fingerprint["data"]["labels"] == "2024"
    assert fingerprint["versions"] == library_versions()
    assert fingerprint["training_versions"] == json.loads((run / "training_config.json").read_text())[
        "library_versions"]
    # the same test utterances stated as the other label release: another test set in the comparison
    other = tmp_path / "other"
    shutil.copytree(run, other)
    fp_path = other / "eval" / "final_model" / "fingerprint.json"
    fp_path.write_text(json.dumps({**fingerprint, "data": {**fingerprint["data"], "labels": "original"}}))
    (tmp_path / "cmp").mkdir()
    table = write_tables(collect(run) + collect(other), tmp_path / "cmp")
    assert "scored on 2 different test sets" in table and "2024 labels" in table and "original labels" in table
    write_table3([run], None, tmp_path / "t3")
    assert f"Data: sample (hub {hub_run.parent}/hub @ abababab" in (tmp_path / "t3" / "table3.md").read_text()


def test_version_differences_name_each_library():
    saved = {**library_versions(), "transformers": "4.0.0"}
    saved.pop("tokenizers")
    assert version_differences(saved, library_versions()) == [
        f"transformers 4.0.0 -> {library_versions()['transformers']}",
        f"tokenizers unrecorded -> {library_versions()['tokenizers']}"]


def test_a_resume_under_other_library_versions_is_refused_unless_allowed(hub_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(hub_run, run)
    shutil.rmtree(run / "final_model")
    record = json.loads((run / "training_config.json").read_text())
    record["library_versions"]["transformers"] = "4.0.0"
    (run / "training_config.json").write_text(json.dumps(record))
    refused = subprocess.run([sys.executable, "train.py", "resume=true", f"hydra.run.dir={run}"], cwd=REPO,
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert f"transformers 4.0.0 -> {library_versions()['transformers']}" in refused.stderr
    assert "allow_other_versions=true" in refused.stderr and not (run / "final_model").exists()
    done = subprocess.run([sys.executable, "train.py", "resume=true", "allow_other_versions=true",
                           f"hydra.run.dir={run}"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resume under other library versions" in (run / "train.log").read_text()
    resumed = json.loads((run / "training_config.json").read_text())["resumes"][-1]
    assert resumed["library_versions"] == library_versions() and (run / "final_model").is_dir()


def test_the_lock_check_names_a_package_at_another_version(tmp_path):
    """scripts/check_lock.py, which CI runs after installing through requirements/lock-linux-py311.txt."""
    from importlib.metadata import distributions

    lock = (REPO / "requirements" / "lock-linux-py311.txt").read_text()
    assert lock.startswith("# This file was autogenerated by uv via the following command:\n#    uv pip compile ")
    assert "\ntorch==2.13.0\n" in lock and "\ntransformers==" in lock
    pins = {d.metadata["Name"]: d.version for d in distributions()}
    exact = tmp_path / "exact.txt"
    exact.write_text("".join(f"{name}=={v}\n" for name, v in pins.items()))
    check = [sys.executable, "scripts/check_lock.py"]
    assert subprocess.run([*check, str(exact)], cwd=REPO, capture_output=True, text=True).returncode == 0
    changed = tmp_path / "changed.txt"
    changed.write_text(exact.read_text().replace(f"peft=={pins['peft']}", "peft==0.0.1"))
    done = subprocess.run([*check, str(changed)], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 1 and done.stdout.strip() == f"error: peft: {pins['peft']} installed, 0.0.1 locked"
