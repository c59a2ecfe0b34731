"""Corpus files are never read silently wrong (issue 12, item 4): a decode error names its file and line, a byte
order mark is accepted."""

import json
import shutil

import pytest

from apa.data import SAMPLE_ROOT
from apa.data.speechocean import DataError, load_split

BOM = b"\xef\xbb\xbf"


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "so762"
    shutil.copytree(SAMPLE_ROOT, root)
    return root


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
