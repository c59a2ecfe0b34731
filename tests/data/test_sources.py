"""The three SpeechOcean762 sources (original layout, hub parquet, save_to_disk) give the same records."""


import pytest
from datasets import Audio, Dataset, DatasetDict

from apa.data import SAMPLE_ROOT
from apa.data.audio import decode_audio
from apa.data.labels import DataError
from apa.data.sources import load_split
from tests.conftest import hub_rows


@pytest.fixture(scope="module")
def hf_copies(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    splits = {s: Dataset.from_list(hub_rows(s)).cast_column("audio", Audio(decode=False)) for s in ("train", "test")}
    for split, ds in splits.items():
        (root / "hub" / "data").mkdir(parents=True, exist_ok=True)
        ds.to_parquet(str(root / "hub" / "data" / f"{split}-00000-of-00001.parquet"))
    DatasetDict(splits).save_to_disk(str(root / "disk"))
    return root


def _comparable(utterances):
    return [(u.id, u.speaker, u.text, u.scores, u.words, u.annotated_phones) for u in utterances]


@pytest.mark.slow
@pytest.mark.parametrize("split", ["train", "test"])
def test_all_sources_give_identical_records_and_audio(hf_copies, split):
    local = load_split("local", str(SAMPLE_ROOT), split, max_bad_fraction=0)
    hub = load_split("hub", None, split, max_bad_fraction=0, hub_id=str(hf_copies / "hub"))
    disk = load_split("disk", str(hf_copies / "disk"), split, max_bad_fraction=0)
    assert len(local) == 20
    assert _comparable(hub) == _comparable(local) == _comparable(disk)
    for a, b, c in zip(local[:3], hub[:3], disk[:3], strict=True):
        assert (decode_audio(a.audio_path) == decode_audio(b.audio_path)).all()
        assert (decode_audio(a.audio_path) == decode_audio(c.audio_path)).all()


def test_unknown_source_and_missing_split_name_the_fix(hf_copies):
    with pytest.raises(DataError, match="local.*hub.*disk"):
        load_split("ftp", None, "train", max_bad_fraction=0)
    with pytest.raises(DataError, match="data.train_split"):
        load_split("disk", str(hf_copies / "disk"), "validation", max_bad_fraction=0)
