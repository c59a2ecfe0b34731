"""Each line of a split's wav.scp and utt2spk gives an utterance its audio and its speaker, or the utterance is a
counted skip naming the line and the fix (fault round 4, #68-#70): a Kaldi pipe command is not a missing file, two ids
naming one recording are not both trained on, an utterance without a speaker is not given a made-up one, an id cut at
a space is said to be."""

import shutil

import pytest

from apa.data.labels import DataError, SkipReport
from apa.data.original import KALDI_COMMAND
from apa.data.sources import load_split


def _set_line(path, n: int, text: str | None) -> None:
    """Line `n` (1-based) of `path` replaced by `text`, or removed (None)."""
    lines = path.read_text().split("\n")
    if text is None:
        del lines[n - 1]
    else:
        lines[n - 1] = text
    path.write_text("\n".join(lines))


def _ids(root, split="train") -> list[str]:
    return [line.split()[0] for line in (root / split / "wav.scp").read_text().splitlines()]


def _read(root, report):
    return load_split("local", str(root), "train", max_bad_fraction=0.5, report=report)


def test_a_kaldi_pipe_command_in_wav_scp_is_a_counted_skip_saying_so_not_a_missing_file(corpus, caplog):
    """#68: `<id> sox … |` was counted as `missing audio file: <corpus>/sox … |`."""
    first = _ids(corpus)[0]
    _set_line(corpus / "train" / "wav.scp", 1, f"{first}\tsox WAVE/SPEAKER0001/{first}.WAV -t wav - |")
    caplog.set_level("WARNING")
    report = SkipReport()
    utts = _read(corpus, report)
    assert len(utts) == 19 and report.reasons == {KALDI_COMMAND: 1}
    assert report.examples[KALDI_COMMAND] == (
        f"{first}: train/wav.scp:1: `sox WAVE/SPEAKER0001/{first}.WAV -t wav - |`: give the audio file's path instead "
        "(run the command once, writing a .wav, and list that file)")
    assert "missing audio file" not in caplog.text and f"skipping {first}: {KALDI_COMMAND}" in caplog.text
    assert report.skipped_phones > 0 and report.phones == sum(len(u.canonical_phones) for u in utts) + \
        report.skipped_phones  # its phones count in the split, as an audio skip's do


def test_apa_predict_skips_a_kaldi_pipe_command_for_the_same_reason():
    from apa.serve.batch import check_recordings
    from apa.serve.inputs import Recording

    plan = check_recordings([Recording("a", "sox a.flac -t wav - |", "WE CALL IT BEAR")], None, set())
    assert plan.skipped.examples == {KALDI_COMMAND: "a: `sox a.flac -t wav - |`: list the audio file's path instead"}


@pytest.mark.parametrize("spelling", ["WAVE/SPEAKER0001/{id}.WAV", "./WAVE/SPEAKER0001/../SPEAKER0001/{id}.WAV"])
def test_two_ids_naming_one_audio_file_skip_the_later_naming_both(corpus, caplog, spelling):
    """#69: line 2 given line 1's file (however spelt) was trained on silently, its labels describing another
    recording."""
    first, second = _ids(corpus)[:2]
    _set_line(corpus / "train" / "wav.scp", 2, f"{second}\t{spelling.format(id=first)}")
    caplog.set_level("WARNING")
    report = SkipReport()
    utts = _read(corpus, report)
    assert first in {u.id for u in utts} and second not in {u.id for u in utts}
    assert report.ids == [second] and report.reasons == {"audio file of another utterance": 1}
    assert report.examples["audio file of another utterance"] == (
        f"{second}: train/wav.scp:2: {spelling.format(id=first)} is also {first}'s (train/wav.scp:1): one of the two "
        f"lines is a copy-paste error, and {second}'s labels would describe {first}'s recording. Fix wav.scp")
    assert f"skipping {second}: audio file of another utterance" in caplog.text


def test_an_id_missing_from_utt2spk_is_a_counted_skip_and_no_utterance_has_a_made_up_speaker(corpus):
    """#70: the id was read with speaker "", one made-up speaker for every such id, which the validation split would
    hold out (or keep) as one voice and the bootstrap resample as one."""
    first = _ids(corpus)[0]
    _set_line(corpus / "train" / "utt2spk", 1, None)
    report = SkipReport()
    utts = _read(corpus, report)
    assert first not in {u.id for u in utts} and all(u.speaker for u in utts)
    assert report.examples == {"id not in utt2spk": f"{first}: add `{first} <speaker>` to train/utt2spk: speakers "
                                                    "decide the validation split and the test bootstrap"}
    (corpus / "train" / "utt2spk").unlink()  # no speakers at all: one line, not a skip per utterance
    with pytest.raises(DataError, match=r"train/utt2spk not found: the original layout names each utterance's "
                                        r"speaker there"):
        _read(corpus, SkipReport())


def test_an_id_with_a_space_is_a_counted_skip_naming_the_line(corpus):
    """An id is the line's first word: `0000 10011 <file>` was read as id 0000 and file `10011 <file>`, and an
    utt2spk line `<id> 0001 x` as speaker `0001 x`, without a word."""
    first, second = _ids(corpus)[:2]
    _set_line(corpus / "train" / "wav.scp", 1, f"{first[:4]} {first[4:]}\tWAVE/SPEAKER0001/{first}.WAV")
    _set_line(corpus / "train" / "utt2spk", 2, f"{second} 0001 x")
    report = SkipReport()
    _read(corpus, report)
    assert report.ids == [first[:4], second]
    assert report.examples == {
        "more than two fields in a wav.scp line": (
            f"{first[:4]}: train/wav.scp:1: read as id {first[:4]!r} and file "
            f"{first[4:] + chr(9) + 'WAVE/SPEAKER0001/' + first + '.WAV'!r}, which does not exist. Kaldi fields are "
            "separated by spaces, so an utterance id cannot hold one: rename it (in wav.scp, utt2spk and scores.json); "
            "if the space is in the file's path, that file is missing"),
        "not one speaker id in utt2spk": (
            f"{second}: train/utt2spk:2: `{second} 0001 x`: each line is `<utterance id> <speaker id>`, one word each "
            "(an id cannot hold a space)")}


def test_a_file_path_with_a_space_that_exists_is_read(corpus):
    first = _ids(corpus)[0]
    shutil.move(corpus / "WAVE" / "SPEAKER0001" / f"{first}.WAV", corpus / "WAVE" / "SPEAKER0001" / "my clip.WAV")
    _set_line(corpus / "train" / "wav.scp", 1, f"{first}\tWAVE/SPEAKER0001/my clip.WAV")
    report = SkipReport()
    assert len(_read(corpus, report)) == 20 and not report.skipped
