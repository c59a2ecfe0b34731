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

pytestmark = pytest.mark.slow  # end to end: `pytest -m "not slow"` leaves this module out

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
def hub_files(tmp_path_factory):
    """The bundled sample in the hub's schema, as parquet files (what mispeech/speechocean762 holds)."""
    from datasets import Audio, Dataset

    from tests.conftest import hub_rows

    root = tmp_path_factory.mktemp("hubfiles") / "hub"
    (root / "data").mkdir(parents=True)
    for split in ("train", "test"):
        Dataset.from_list(hub_rows(split)).cast_column("audio", Audio(decode=False)).to_parquet(
            str(root / "data" / f"{split}-00000-of-00001.parquet"))
    return root


@pytest.fixture(scope="module")
def hub_run(hub_files):
    """A demo run reading the hub's parquet files from a local folder (which has no revision), through train.py."""
    run = hub_files.parent / "run"
    done = subprocess.run([sys.executable, "train.py", *DEMO, "data.source=hub", f"data.hub_id={hub_files}",
                           f"hydra.run.dir={run}"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return run


def test_a_hub_read_records_the_commit_it_read(hub_files, tmp_path, monkeypatch):
    """data.source=hub with the hub id: the pinned commit is what is asked for and what the record, the model card
    and the evaluation say. (No hub here: `datasets.load_dataset` serves the same parquet files.)"""
    import datasets

    from apa.reporting.model_card import write_model_card
    from apa.run_folder import read_record
    from apa.training.recipe import train

    asked = []

    def load_dataset(hub_id, split, revision):
        asked.append((hub_id, split, revision))
        return datasets.Dataset.from_parquet(str(hub_files / "data" / f"{split}-00000-of-00001.parquet"))

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    run = tmp_path / "run"
    train(compose_config(*DEMO, "data.source=hub"), run)
    assert asked and {(h, r) for h, _, r in asked} == {("mispeech/speechocean762", ORIGINAL_LABELS_COMMIT)}
    record = read_record(run)
    assert record["data"]["dataset"] == {"name": "sample", "source": "hub", "labels": "2024",
                                         "hub_id": "mispeech/speechocean762", "revision": ORIGINAL_LABELS_COMMIT}
    write_model_card(run)
    card = (run / "README.md").read_text()
    assert f"hub mispeech/speechocean762 @ {ORIGINAL_LABELS_COMMIT[:10]}, 2024 labels" in card
    assert set(record["library_versions"]) >= {"torch", "transformers", "tokenizers", "peft", "trl", "accelerate",
                                               "datasets"}


def test_a_branch_is_resolved_to_its_commit_and_an_unknown_one_is_one_line(monkeypatch):
    import huggingface_hub

    from apa.data import release

    class Info:
        sha = "c" * 40

    def dataset_info(self, hub_id, revision):
        if revision != "main":
            raise huggingface_hub.errors.RevisionNotFoundError(f"{revision} not found")
        return Info()

    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", dataset_info)
    release._hub_commit.cache_clear()
    data = compose_config("data.revision=main").data
    assert dataset_identity(data)["revision"] == "c" * 40
    with pytest.raises(LabelReleaseError, match="data.revision=v9 of mispeech/speechocean762 cannot be resolved"):
        dataset_identity(compose_config("data.revision=v9").data)


def test_a_local_folder_of_hub_files_records_its_path_and_no_revision(hub_run):
    record = json.loads((hub_run / "training_config.json").read_text())
    assert record["data"]["dataset"] == {"name": "sample", "source": "hub", "labels": "2024",
                                         "hub_id": str(hub_run.parent / "hub"), "revision": None}
    assert f"hub files in {hub_run.parent / 'hub'}, 2024 labels" in (hub_run / "README.md").read_text()


def test_a_corpus_contradicting_its_label_statement_is_refused(corpus):
    """The whole reader, on the sample with one L2 phone added to its labels, stated as the 2024 release."""
    from apa.data.sources import load_configured_split
    from tests.conftest import edit_scores

    def add_l2(scores):
        word = scores["000010011"]["words"][0]  # WE: W IY0
        word["mispronunciations"] = [{"canonical-phone": "W", "index": 0, "pronounced-phone": "DR"}]

    edit_scores(corpus, add_l2)
    data = compose_config("experiment=demo", f"data.path={corpus}").data
    assert data.labels == "2024"
    with pytest.raises(LabelReleaseError, match="data.labels=2024 but 1 of its 2 mispronunciation labels are L2"):
        load_configured_split(data, "train")


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
    assert fingerprint["data"]["hub_id"] == str(hub_run.parent / "hub") and fingerprint["data"]["labels"] == "2024"
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
    table3 = (tmp_path / "t3" / "table3.md").read_text()
    assert f"Data: sample (hub files in {hub_run.parent}/hub, 2024 labels)" in table3


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


def test_a_resume_whose_data_resolves_to_another_commit_is_refused(hub_files, tmp_path, monkeypatch):
    """data.revision=main moved between the start and the resume (extend=true here): not the same data."""
    import datasets
    import huggingface_hub

    from apa.data import release
    from apa.run_folder import RunFolderError
    from apa.training.recipe import train

    head = {"sha": "a" * 40}

    class Info:
        def __init__(self):
            self.sha = head["sha"]

    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", lambda self, hub_id, revision: Info())
    monkeypatch.setattr(datasets, "load_dataset", lambda hub_id, split, revision: datasets.Dataset.from_parquet(
        str(hub_files / "data" / f"{split}-00000-of-00001.parquet")))
    release._hub_commit.cache_clear()
    run = tmp_path / "run"
    train(compose_config(*DEMO, "data.source=hub", "data.revision=main"), run)
    head["sha"] = "b" * 40  # the branch moved
    release._hub_commit.cache_clear()
    with pytest.raises(RunFolderError, match="resolves to .* @ bbbbbbbbbb.*the run trained on .* @ aaaaaaaaaa"):
        train(compose_config(*DEMO, "data.source=hub", "data.revision=main", "resume=true", "extend=true",
                             "trainer.num_train_epochs=2"), run)
    release._hub_commit.cache_clear()
