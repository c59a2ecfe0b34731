"""Reading the corpus layout, decoding audio, and skipping bad input with counts instead of crashing."""

import json

import numpy as np
import pytest
import soundfile as sf

from apa.data import SAMPLE_ROOT
from apa.data.audio import AudioError, decode_audio
from apa.data.labels import DataError, SkipReport
from apa.data.sources import load_split


def _scores(root):
    return json.loads((root / "resource" / "scores.json").read_text())


def test_sample_reads_every_utterance():
    train = load_split("local", str(SAMPLE_ROOT), "train", max_bad_fraction=0)
    test = load_split("local", str(SAMPLE_ROOT), "test", max_bad_fraction=0)
    assert len(train) == 20 and len(test) == 20
    assert {u.speaker for u in train} == {"0001"} or all(u.speaker for u in train)
    assert not {u.id for u in train} & {u.id for u in test}


def test_bad_utterances_are_skipped_and_counted(corpus, caplog):
    wavs = sorted((corpus / "WAVE" / "SPEAKER0001").glob("*.WAV"))
    wavs[0].unlink()  # missing audio
    wavs[1].write_bytes(b"RIFF\x00\x00garbage")  # corrupt header
    scores = _scores(corpus)
    scores[wavs[2].stem]["accuracy"] = 12  # out of range
    del scores[wavs[3].stem]["fluency"]  # missing field
    del scores[wavs[4].stem]  # in wav.scp but not in scores.json
    (corpus / "resource" / "scores.json").write_text(json.dumps(scores))
    caplog.set_level("INFO")
    utts = load_split("local", str(corpus), "train", max_bad_fraction=0.5)
    assert len(utts) == 15
    for reason in ("missing audio file", "unreadable audio", "outside 0-10", "missing score field",
                   "not in scores.json"):
        assert reason in caplog.text
    assert "skipped 5 of 20" in caplog.text


def test_with_a_limit_every_skip_of_the_split_is_counted_out_of_the_same_utterances(corpus):
    """data.limit=4 with bad labels on lines 2 and 16 and a missing clip on line 3: the split is its first 5
    utterances (the 4 labelled ones and line 2); line 16's skip, outside them, was counted in `skipped 3 of 6`."""
    ids = [line.split()[0] for line in (corpus / "train" / "wav.scp").read_text().splitlines()]
    path = corpus / "resource" / "scores.json"
    scores = json.loads(path.read_text())
    scores[ids[1]]["accuracy"] = scores[ids[15]]["accuracy"] = 11
    path.write_text(json.dumps(scores))
    (corpus / "WAVE" / "SPEAKER0001" / f"{ids[2]}.WAV").unlink()
    report = SkipReport()
    utts = load_split("local", str(corpus), "train", max_bad_fraction=0.5, report=report, limit=4)
    assert [u.id for u in utts] == [ids[0], ids[3], ids[4]]
    assert report.total == 5 and report.ids == [ids[1], ids[2]]
    assert report.summary().startswith("skipped 2 of 5 utterances: 1 bad labels")
    assert report.as_dict()["phones_in_split"] == sum(len(u.canonical_phones) for u in utts) + report.skipped_phones


def test_keep_first_cuts_the_split_after_its_nth_usable_utterance():
    report = SkipReport()
    for place in range(1, 11):  # utterances 2, 3, 7 and 9 skipped while reading
        report.total = place
        if place in (2, 3, 7, 9):
            report.skip(f"u{place}", "bad labels")
    assert report.keep_first(4) == 2  # usable: 1, 4, 5, 6 -> the first 6 utterances, skips 2 and 3 among them
    assert report.total == 6 and report.ids == ["u2", "u3"]
    report = SkipReport(total=10)
    report.skip("u10", "bad labels")  # counted at place 10: after the first 2 usable ones
    assert report.keep_first(2) == 1 and report.total == 2 and not report.skipped


def test_too_many_bad_utterances_stop_the_run(corpus):
    for wav in list((corpus / "WAVE" / "SPEAKER0001").glob("*.WAV"))[:3]:
        wav.unlink()
    with pytest.raises(DataError, match="max_bad_fraction"):
        load_split("local", str(corpus), "train", max_bad_fraction=0.1)


def test_missing_corpus_folder_names_the_fix(tmp_path):
    with pytest.raises(DataError, match="data.path"):
        load_split("local", str(tmp_path / "nowhere"), "train", max_bad_fraction=0.1)


def test_resampling_and_downmix_keep_duration(tmp_path):
    t = np.linspace(0, 1.5, int(1.5 * 44100), endpoint=False)
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)], axis=1).astype(np.float32) * 0.3
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, 44100)
    audio = decode_audio(path)
    assert audio.ndim == 1 and audio.dtype == np.float32
    assert abs(audio.size / 16000 - 1.5) < 1e-3


@pytest.mark.parametrize(
    ("samples", "message"),
    [(np.zeros(0, np.float32), "empty|unreadable"), (np.full(16000, np.nan, np.float32), "NaN"),
     (np.zeros(800, np.float32), "too short")],
)
def test_unusable_clips_are_rejected(tmp_path, samples, message):
    path = tmp_path / "x.wav"
    sf.write(path, samples, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=message):
        decode_audio(path)
