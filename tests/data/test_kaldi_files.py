"""Each line of a split's wav.scp gives an utterance its audio, or the utterance is a counted skip naming the line
and the fix (fault round 4, #68): a Kaldi pipe command is not a missing file."""



from apa.data.labels import SkipReport
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
