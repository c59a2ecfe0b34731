"""Scoring one recording with `apa predict`."""

import pytest

from apa.data import SAMPLE_ROOT
from apa.serve.predict import canonical_pronunciation, main, phone_comparison

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
