"""Corpus files are never read silently wrong (issue 12, item 4): a decode error names its file and line, a byte
order mark is accepted, an APA score that is not an integer 0-10 is refused for its utterance (never rounded), a
save_to_disk Dataset without splits is not both train and test, and rebuilt audio is never served stale."""

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
from datasets import Audio, Dataset, DatasetDict

from apa.data import SAMPLE_ROOT
from apa.data.audio import decode_audio
from apa.data.labels import DataError, SkipReport
from apa.data.sources import load_split
from tests.conftest import hub_rows

BOM = b"\xef\xbb\xbf"


def _records(utterances):
    return [(u.id, u.speaker, u.text, u.scores, u.words) for u in utterances]


def _first_train_id(root) -> str:
    return (root / "train" / "wav.scp").read_text().split()[0]


# ---------------------------------------------------------------------------------------------------------------
# Decode errors name the file and line; a BOM is accepted
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["wav.scp", "utt2spk"])
def test_a_kaldi_file_that_is_not_utf8_stops_naming_file_line_and_byte_offset(corpus, name):
    path = corpus / "train" / name
    lines = path.read_bytes().split(b"\n")
    lines[2] = lines[2] + b" caf\xe9"  # Latin-1 e-acute on line 3
    path.write_bytes(b"\n".join(lines))
    offset = len(lines[0]) + len(lines[1]) + 2 + len(lines[2]) - 1
    with pytest.raises(DataError, match=rf"{name}:3: not valid UTF-8 at byte offset {offset} .*0xe9"):
        load_split("local", str(corpus), "train", max_bad_fraction=1)


def test_the_kaldi_text_file_is_not_read_so_its_encoding_cannot_matter(corpus):
    # the transcript comes from scores.json; train/text is not read at all
    (corpus / "train" / "text").write_bytes(b"\xff\xfe not UTF-8 \xe9\n")
    assert len(load_split("local", str(corpus), "train", max_bad_fraction=0)) == 20


def test_scores_json_that_is_not_utf8_stops_naming_file_line_and_byte_offset(corpus):
    path = corpus / "resource" / "scores.json"
    data = json.dumps(json.loads(path.read_text()), indent=1).encode()
    data = data.replace(b"WE CALL IT BEAR", b"WE CALL IT BE\xc4R")  # a Latin-1 A-umlaut
    path.write_bytes(data)
    offset = data.index(b"\xc4")
    line = data[:offset].count(b"\n") + 1
    with pytest.raises(DataError, match=rf"scores.json:{line}: not valid UTF-8 at byte offset {offset} .*0xc4"):
        load_split("local", str(corpus), "train", max_bad_fraction=1)


def test_scores_json_that_is_not_json_stops_naming_file_line_and_column(corpus):
    path = corpus / "resource" / "scores.json"
    text = json.dumps(json.loads(path.read_text()), indent=1).replace('"accuracy": ', '"accuracy": @', 1)
    path.write_text(text)
    at = text.index("@")
    line, column = text[:at].count("\n") + 1, at - text.rfind("\n", 0, at)
    with pytest.raises(DataError, match=rf"scores.json:{line}:{column}: not valid JSON \(Expecting value"):
        load_split("local", str(corpus), "train", max_bad_fraction=1)


def test_scores_json_must_be_an_object_with_each_utterance_once(corpus):
    path = corpus / "resource" / "scores.json"
    path.write_text("[]")
    with pytest.raises(DataError, match="holds a JSON list, not an object"):
        load_split("local", str(corpus), "train", max_bad_fraction=1)
    scores = json.loads((SAMPLE_ROOT / "resource" / "scores.json").read_text())
    victim = _first_train_id(corpus)
    changed = {**scores[victim], "accuracy": 1}
    text = json.dumps(scores)
    path.write_text(text[:-1] + f', "{victim}": {json.dumps(changed)}}}')  # the id again, at the end
    with pytest.raises(DataError, match=rf"utterance id\(s\) given more than once: {victim}"):
        load_split("local", str(corpus), "train", max_bad_fraction=1)


def test_a_byte_order_mark_and_crlf_line_ends_are_accepted(corpus):
    for rel in ("train/wav.scp", "train/utt2spk", "resource/scores.json"):
        path = corpus / rel
        path.write_bytes(BOM + path.read_bytes().replace(b"\n", b"\r\n"))
    assert _records(load_split("local", str(corpus), "train", max_bad_fraction=0)) == _records(
        load_split("local", str(SAMPLE_ROOT), "train", max_bad_fraction=0))


# ---------------------------------------------------------------------------------------------------------------
# Scores: integers 0-10, nothing rounded or coerced
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [(6.5, "score accuracy=6.5 is not an integer 0-10"), (True, "score accuracy=True is not an integer 0-10"),
     ("7", "score accuracy='7' is not an integer 0-10"), (None, "score accuracy=None is not an integer 0-10"),
     (float("nan"), "score accuracy=nan is not an integer 0-10"), (-1, "score accuracy=-1 outside 0-10"),
     (11, "score accuracy=11 outside 0-10"), (10.5, "score accuracy=10.5 is not an integer 0-10")],
    ids=["fraction", "bool", "string", "null", "NaN", "negative", "eleven", "fraction above 10"],
)
def test_a_score_that_is_not_an_integer_0_to_10_skips_its_utterance_naming_id_and_field(corpus, caplog, value,
                                                                                         reason):
    path = corpus / "resource" / "scores.json"
    scores = json.loads(path.read_text())
    victim = _first_train_id(corpus)
    scores[victim]["accuracy"] = value
    path.write_text(json.dumps(scores))  # NaN is written as JSON's NaN, which json.loads reads back
    caplog.set_level("INFO")
    report = SkipReport()
    utts = load_split("local", str(corpus), "train", max_bad_fraction=0.1, report=report)
    assert len(utts) == 19 and victim not in {u.id for u in utts}
    assert report.reasons == {"bad labels": 1}
    assert report.examples["bad labels"] == f"{victim}: {reason}"
    assert f"skipping {victim}: bad labels {reason}" in caplog.text


def test_integral_float_scores_are_read_as_integers(corpus):
    path = corpus / "resource" / "scores.json"
    scores = json.loads(path.read_text())
    victim = _first_train_id(corpus)
    scores[victim].update(accuracy=7.0, total=0.0)
    path.write_text(json.dumps(scores))
    utt = next(u for u in load_split("local", str(corpus), "train", max_bad_fraction=0) if u.id == victim)
    assert utt.scores["accuracy"] == 7 and utt.scores["total"] == 0
    assert all(type(v) is int for v in utt.scores.values())


def test_a_fractional_score_in_the_test_split_stops_the_run(corpus):
    path = corpus / "resource" / "scores.json"
    scores = json.loads(path.read_text())
    victim = (corpus / "test" / "wav.scp").read_text().split()[0]
    scores[victim]["fluency"] = 7.5
    path.write_text(json.dumps(scores))
    with pytest.raises(DataError, match=rf"bad labels \(e.g. {victim}: score fluency=7.5 is not an integer 0-10\)"):
        load_split("local", str(corpus), "test", max_bad_fraction=0, tolerance_option="data.max_bad_fraction_test")


def _set(path):
    """An edit of the first word's first mispronunciation (one is made if the word has none), or of the entry."""
    def edit(entry, value):
        if path == "text":
            entry[path] = value
            return
        word = entry["words"][0]
        if path == "word text":
            word["text"] = value
            return
        if not word.get("mispronunciations"):
            word["mispronunciations"] = [{"index": 0, "canonical-phone": word["phones"][0], "pronounced-phone": "AH"}]
        word["mispronunciations"][0][path] = value
    return edit


@pytest.mark.parametrize(
    ("edit", "value", "reason"),
    [(_set("pronounced-phone"), None, "unknown phone symbol None"),
     (_set("pronounced-phone"), 5, "unknown phone symbol 5"),
     (_set("index"), float("inf"), "mispronunciation index inf in word"),
     (_set("index"), 0.5, "mispronunciation index 0.5 in word"),
     (_set("index"), True, "mispronunciation index True in word"),
     (_set("index"), "0", "mispronunciation index '0' in word"),
     (_set("canonical-phone"), 5, "canonical-phone 5 in word"),
     (_set("word text"), 5, "word 0: text 5 is not a string"),
     (_set("text"), 5, "text 5 is not a string"),
     (lambda entry, value: entry.update(words=value), "CAT", "words 'CAT' is not a list"),
     (lambda entry, value: entry["words"].__setitem__(0, value), ["K"], "word 0 is a list, not an object")],
    ids=["pronounced null", "pronounced number", "index Infinity", "index 0.5", "index true", "index string",
         "canonical number", "word text number", "sentence number", "words a string", "word a list"],
)
def test_a_label_field_of_the_wrong_type_skips_its_utterance_never_crashes_or_coerces(corpus, edit, value, reason):
    # found by tests/test_properties.py: before, None/5 as pronounced-phone and Infinity as index crashed the reader
    # (AttributeError, OverflowError); 0.5/true/"0" as index, and 5 as a text, were coerced (0, 1, 0, "5")
    path = corpus / "resource" / "scores.json"
    scores = json.loads(path.read_text())
    victim = _first_train_id(corpus)
    edit(scores[victim], value)
    path.write_text(json.dumps(scores))
    report = SkipReport()
    utts = load_split("local", str(corpus), "train", max_bad_fraction=0.1, report=report)
    assert len(utts) == 19 and report.reasons == {"bad labels": 1}
    assert report.examples["bad labels"].startswith(f"{victim}: ") and reason in report.examples["bad labels"]


def _disk_copy(root, rows_by_split):
    DatasetDict({s: Dataset.from_list(rows).cast_column("audio", Audio(decode=False))
                 for s, rows in rows_by_split.items()}).save_to_disk(str(root))
    return root


def test_hub_schema_scores_follow_the_same_rule(tmp_path, monkeypatch):
    monkeypatch.setenv("APA_CACHE_DIR", str(tmp_path / "cache"))
    rows = hub_rows("train")
    for row in rows:  # a float column, as parquet may hold it: 7.0 is 7
        row["accuracy"] = float(row["accuracy"])
    rows[0]["accuracy"] = 6.5
    victim = rows[0]["audio"]["path"].split(".")[0]
    root = _disk_copy(tmp_path / "disk", {"train": rows, "test": hub_rows("test")})
    report = SkipReport()
    utts = load_split("disk", str(root), "train", max_bad_fraction=0.1, decode=False, report=report)
    assert len(utts) == 19 and report.examples == {"bad labels": f"{victim}: score accuracy=6.5 is not an integer 0-10"}
    local = {u.id: u.scores for u in load_split("local", str(SAMPLE_ROOT), "train", max_bad_fraction=0)}
    assert all(u.scores == local[u.id] and type(u.scores["accuracy"]) is int for u in utts)


# ---------------------------------------------------------------------------------------------------------------
# save_to_disk: splits required; audio cache keyed by content
# ---------------------------------------------------------------------------------------------------------------


def test_a_save_to_disk_dataset_without_splits_is_refused_naming_the_fix(tmp_path):
    single = tmp_path / "single"
    Dataset.from_list(hub_rows("train")).cast_column("audio", Audio(decode=False)).save_to_disk(str(single))
    for split in ("train", "test"):
        with pytest.raises(DataError, match=r"single Dataset without splits.*DatasetDict\(\{'train': train, 'test': "
                                            r"test\}\)\.save_to_disk"):
            load_split("disk", str(single), split, max_bad_fraction=0)


def test_a_folder_save_to_disk_did_not_write_names_itself(tmp_path):
    (tmp_path / "notads").mkdir()
    with pytest.raises(DataError, match="is not a datasets.save_to_disk folder"):
        load_split("disk", str(tmp_path / "notads"), "train", max_bad_fraction=0)


@pytest.mark.slow
def test_a_dataset_rebuilt_at_the_same_path_never_serves_stale_audio(tmp_path, monkeypatch):
    monkeypatch.setenv("APA_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "disk"
    rows = hub_rows("test")
    _disk_copy(root, {"train": hub_rows("train"), "test": rows})
    first = {u.id: u for u in load_split("disk", str(root), "test", max_bad_fraction=0)}
    victim = rows[0]["audio"]["path"].split(".")[0]
    local = {u.id: u for u in load_split("local", str(SAMPLE_ROOT), "test", max_bad_fraction=0)}
    assert (decode_audio(first[victim].audio_path) == decode_audio(local[victim].audio_path)).all()
    # rebuild at the same path: the victim's clip is now a 1 s tone, same file name
    tone = tmp_path / "tone.wav"
    sf.write(tone, (0.3 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)).astype(np.float32), 16000)
    rows[0]["audio"] = {"bytes": tone.read_bytes(), "path": rows[0]["audio"]["path"]}
    shutil.rmtree(root)
    _disk_copy(root, {"train": hub_rows("train"), "test": rows})
    second = {u.id: u for u in load_split("disk", str(root), "test", max_bad_fraction=0)}
    assert second[victim].audio_path != first[victim].audio_path
    assert (decode_audio(second[victim].audio_path) == decode_audio(tone)).all()
    assert decode_audio(second[victim].audio_path).size != decode_audio(first[victim].audio_path).size
    # unchanged clips reuse their cached files
    others = [i for i in first if i != victim]
    assert all(second[i].audio_path == first[i].audio_path for i in others)
