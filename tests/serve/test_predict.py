"""Scoring one recording with `apa predict`."""

from pathlib import Path

import pytest

from apa.data import SAMPLE_ROOT
from apa.serve.predict import canonical_pronunciation, main, phone_comparison

pytestmark = pytest.mark.slow  # end to end: `pytest -m "not slow"` leaves this module out

WAV = SAMPLE_ROOT / "WAVE" / "SPEAKER0001" / "000010011.WAV"


def test_canonical_pronunciation_from_cmudict():
    assert canonical_pronunciation("We call it bear.") == "W IY K AO L IH T B EH R".split()


def test_phone_comparison_marks_substitutions_and_deletions():
    text = phone_comparison("TH IY M".split(), "TH AH".split())
    expected, heard, marks, summary = text.splitlines()
    assert expected.split()[1:] == ["TH", "IY", "M"] and heard.split()[1:] == ["TH", "AH", "-"]
    assert marks.count("^") == 2 and summary.startswith("2 of 3")


def test_predict_prints_scores_transcripts_and_phone_comparison(demo_sweep, capsys):
    adapter = demo_sweep / "fresh_r64_1" / "final_model"
    assert main(["--adapter", str(adapter), "--audio", str(WAV), "--text", "WE CALL IT BEAR"]) == 0
    out = capsys.readouterr().out
    assert "APA scores:" in out and "expected: W IY K AO L IH T B EH R" in out and "heard:" in out


@pytest.mark.parametrize(
    ("audio", "text", "message"),
    [("missing.wav", "WE CALL IT BEAR", "missing audio file"), (str(WAV), "WE CALL IT BLORPTH", "BLORPTH"),
     (str(WAV), "  ", "empty")],
)
def test_bad_input_gets_a_clear_message(demo_sweep, capsys, audio, text, message):
    adapter = demo_sweep / "fresh_r64_1" / "final_model"
    assert main(["--adapter", str(adapter), "--audio", audio, "--text", text]) == 2
    assert message in capsys.readouterr().err


def test_the_adapter_may_be_the_run_folder_and_anything_else_is_named(demo_sweep, tmp_path, capsys):
    """A run folder stands for its final_model/ (it used to end in a tokenizer error suggesting sentencepiece);
    a folder that holds no adapter, or none at all, is one line naming what to pass."""
    from apa.serve.predict import adapter_folder

    run = demo_sweep / "fresh_r64_1"
    assert adapter_folder(run) == run / "final_model"
    assert adapter_folder(run / "final_model") == run / "final_model"
    for bad, message in ((tmp_path, "is not an adapter folder (no adapter_config.json)"),
                         (tmp_path / "nowhere", "no such folder"), (SAMPLE_ROOT, "is not an adapter folder")):
        assert main(["--adapter", str(bad), "--audio", str(WAV), "--text", "WE CALL IT BEAR"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1


# ---- many recordings: apa predict --audio <folder | 'glob' | wav.scp> --out <file> ----------------------------------

SCP = SAMPLE_ROOT / "test" / "wav.scp"


@pytest.fixture(scope="module")
def predictor(demo_sweep):
    from apa.serve.predict import Predictor

    # short answers (CPU decoding); a batch size below the recordings' count, so that several batches are formed
    return Predictor(demo_sweep / "fresh_r64_1" / "final_model", max_new_tokens=8, batch_size=4)


def _scored(path):
    import json

    return {line["id"]: line for line in map(json.loads, path.read_text().splitlines())}


def test_batches_answer_as_one_recording_at_a_time(predictor, tmp_path):
    """Five of the sample's test recordings scored in batches (4 + 1 per task, greedy) give, recording by recording,
    the raw answers and parsed results that scoring each alone gives (`score`, what the one-file form and the page
    run): batch mates do not change an answer here (docs/benchmarks.md: the audio encoder does not mask padding, so on
    real weights an answer may in principle move; `--batch-size 1` is the one-at-a-time answer)."""
    from apa.serve.batch import check_recordings, write_scores
    from apa.serve.inputs import find_recordings

    recordings = find_recordings(str(SCP))[:5]  # the Kaldi `text` beside wav.scp gives the sentences
    plan = check_recordings(recordings, predictor.max_seconds, set())
    batches = predictor.plan([r for rec, _ in plan.usable for r in predictor.rows(rec.id, rec.audio)])
    assert sorted(len(b) for b in batches) == [1, 1, 4, 4]  # padded batches of several clips: the case in question
    out = tmp_path / "scores.jsonl"
    counts = write_scores(predictor, plan, out)
    lines = _scored(out)
    assert counts["scored"] == len(lines) == 5 and set(lines) == {r.id for r in recordings}
    assert len({line["raw"]["mdd"] for line in lines.values()}) > 1  # the answers differ between recordings
    for rec in recordings:
        alone, line = predictor.score(rec.audio, rec.text), lines[rec.id]
        assert line["raw"] == alone["raw"], rec.id
        assert line["scores"] == alone["scores"] and line["transcripts"] == alone["transcripts"], rec.id
        assert line["parsed"] == {"apa": alone["scores"] is not None, "mdd": alone["transcripts"] is not None}
        assert line["canonical_phones"].split() == alone["canonical_phones"] and line["text"] == rec.text
        assert line["audio"] == rec.audio and line["adapter"] == str(predictor.adapter)


def test_a_resumed_file_ends_as_an_uninterrupted_one(predictor, tmp_path):
    """A crash tears the last line: --resume cuts it off, keeps the complete lines, generates the missing
    recordings' batches (whole) and ends with the lines an uninterrupted run wrote. Without --resume the file is
    never touched."""
    from apa.serve.batch import check_out, check_recordings, resumed, write_scores
    from apa.serve.inputs import find_recordings
    from apa.serve.predict import PredictError

    recordings = find_recordings(str(SCP))[5:10]
    whole = tmp_path / "whole.jsonl"
    write_scores(predictor, check_recordings(recordings, None, set()), whole)
    torn = tmp_path / "torn.jsonl"
    lines = whole.read_bytes().split(b"\n")
    torn.write_bytes(b"\n".join(lines[:2]) + b"\n" + lines[2][:40])
    before = torn.read_bytes()
    with pytest.raises(PredictError, match="already exists and is never overwritten: pass --resume"):
        check_out(torn, resume=False)
    with pytest.raises(PredictError, match="holds scores of another adapter"):
        resumed(torn, predictor.adapter.parent / "checkpoint-epoch-1")
    assert torn.read_bytes() == before
    check_out(torn, resume=True)
    done = resumed(torn, predictor.adapter)
    assert len(done) == 2 and torn.read_bytes() == b"\n".join(lines[:2]) + b"\n"
    plan = check_recordings(recordings, None, done)
    assert plan.todo == 3
    assert write_scores(predictor, plan, torn)["scored"] == 3
    assert _scored(torn) == _scored(whole)


def test_many_recordings_from_the_command_line(demo_sweep, tmp_path, capsys):
    """wav.scp (ids, paths relative to the corpus root) with a Kaldi text beside it, among them a missing file, an
    unreadable one and an id without a sentence: those are skipped, counted and named in the summary line, the rest
    scored, one JSON line each; the progress bar is on stderr. Run again, the file is refused, not overwritten."""
    import json

    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "garbage.wav").write_bytes(b"this is not a sound file" * 50)
    listed = SCP.read_text().splitlines()[:3]
    scp_lines = [f"{i} {SAMPLE_ROOT / p}" for i, p in (line.split() for line in listed)]
    (data / "wav.scp").write_text("\n".join([*scp_lines, f"gone {tmp_path / 'gone.wav'}",
                                             f"junk {tmp_path / 'garbage.wav'}", f"nosentence {WAV}"]) + "\n")
    sentences = dict(line.split(maxsplit=1) for line in (SAMPLE_ROOT / "test" / "text").read_text().splitlines())
    (data / "text").write_text("".join(f"{i} {sentences[i]}\n" for i, _ in (line.split() for line in listed))
                               + "gone WE CALL IT BEAR\njunk WE CALL IT BEAR\n")
    out = tmp_path / "out" / "scores.jsonl"
    args = ["--adapter", str(demo_sweep / "fresh_r64_1"), "--audio", str(data / "wav.scp"), "--out", str(out),
            "--max-new-tokens", "4"]
    assert main(args) == 0
    captured = capsys.readouterr()
    summary = captured.out.strip().splitlines()[-1]
    assert summary.startswith(f"scored 3 recording(s) into {out} in ") and "answers parsed: APA " in summary
    for reason in ("1 missing audio file (e.g. gone", "1 unreadable audio (e.g. junk", "1 no sentence for this id "
                   "(e.g. nosentence"):
        assert reason in summary, summary
    assert "skipped 3 of 6" in summary and "3/3 [" in captured.err and "rec/s]" in captured.err  # the progress bar
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(line["id"] for line in lines) == sorted(i for i, _ in (line.split() for line in listed))
    assert set(lines[0]) == {"id", "audio", "text", "scores", "transcripts", "parsed", "raw", "canonical_phones",
                             "phones_differ", "adapter"}
    before = out.read_bytes()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {out} already exists") and err.count("\n") == 1 and out.read_bytes() == before


def test_a_folder_a_glob_and_a_text_file_name_the_recordings(tmp_path):
    """A folder is searched with its subfolders (any case of the suffix), a glob as given; a recording's id is its
    file name without extension, its sentence from Kaldi text lines or JSON lines (id or file_name); one without a
    sentence is kept, to be skipped and counted when scored."""
    import json

    from apa.serve.inputs import find_recordings, is_many

    folder = SAMPLE_ROOT / "WAVE"
    sentences = SAMPLE_ROOT / "test" / "text"
    found = find_recordings(str(folder), text_file=sentences)
    assert len(found) == 40 and is_many(str(folder))
    by_id = {r.id: r for r in found}
    assert by_id["000030012"].text == "MARK IS GOING TO SEE ELEPHANT" and by_id["000010011"].text is None
    assert by_id["000030012"].audio == str(folder / "SPEAKER0003" / "000030012.WAV")
    pattern = str(SAMPLE_ROOT / "WAVE" / "*" / "0000300[1-4]*.WAV")
    assert is_many(pattern) and [r.id for r in find_recordings(pattern, text="WE CALL IT BEAR")] == \
        ["000030012", "000030024", "000030040", "000030047", "000030049"]
    assert {r.text for r in find_recordings(pattern, text="WE CALL IT BEAR")} == {"WE CALL IT BEAR"}
    metadata = tmp_path / "metadata.jsonl"
    metadata.write_text(json.dumps({"file_name": "SPEAKER0003/000030024.WAV", "text": "KATE LOVES CHINA"}) + "\n"
                        + json.dumps({"id": "000030040", "text": "TWO SIX FOUR EIGHT"}) + "\n")
    texts = {r.id: r.text for r in find_recordings(pattern, text_file=metadata)}
    assert texts["000030024"] == "KATE LOVES CHINA" and texts["000030040"] == "TWO SIX FOUR EIGHT"
    assert texts["000030012"] is None
    scp = find_recordings(str(SCP))  # paths relative to the corpus root, the Kaldi text beside it
    assert len(scp) == 20 and all(Path(r.audio).is_file() and r.text for r in scp)
    assert not is_many(str(WAV))


@pytest.mark.parametrize(
    ("audio", "extra", "message"),
    [("https://example.org/learner.wav", ["--text", "WE"], "is a URL: download the recording first"),
     (str(SAMPLE_ROOT / "WAVE"), ["--text", "WE"], "names many recordings: pass --out"),
     ("{empty}", ["--text", "WE", "--out", "{tmp}/s.jsonl"], "no audio files in it or its subfolders"),
     ("{tmp}/*.wav", ["--text", "WE", "--out", "{tmp}/s.jsonl"], "matches no file"),
     (str(SAMPLE_ROOT / "WAVE"), ["--out", "{tmp}/s.jsonl"], "no sentences given: pass --text-file"),
     (str(SAMPLE_ROOT / "WAVE"), ["--text-file", str(SAMPLE_ROOT), "--out", "{tmp}/s.jsonl"], "is a folder"),
     (str(SCP), ["--text", "WE", "--out", "{tmp}"], "is a folder: pass a file name"),
     ("{dupes}", ["--text", "WE", "--out", "{tmp}/s.jsonl"], "two recordings have the id 000010011")],
)
def test_unusable_inputs_are_one_line_before_the_model_loads(tmp_path, capsys, audio, extra, message):
    """Each is refused in one `error:` line, exit 2, before anything loads (the adapter is not even looked at)."""
    import shutil

    (tmp_path / "empty").mkdir()
    for sub in ("a", "b"):
        (tmp_path / "dupes" / sub).mkdir(parents=True)
        shutil.copy(WAV, tmp_path / "dupes" / sub)
    fill = {"tmp": tmp_path, "empty": tmp_path / "empty", "dupes": tmp_path / "dupes"}
    argv = ["--adapter", str(tmp_path / "no-adapter"), "--audio", audio.format(**fill),
            *(x.format(**fill) for x in extra)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
