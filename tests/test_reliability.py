"""Bad input cases of docs/reliability.md not covered elsewhere: each gets a clear error or a counted, logged skip."""

import numpy as np
import pytest
import soundfile as sf
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError

from apa.config import ConfigError
from apa.data.audio import AudioError, decode_audio
from apa.data.labels import DataError
from apa.data.sources import load_split
from apa.sft.collate import SpeechSFTCollator
from apa.sft.prompts import build_examples
from apa.training.recipe import train
from tests.conftest import edit_scores


def _train_ids(root) -> list[str]:
    return [line.split()[0] for line in (root / "train" / "wav.scp").read_text().splitlines() if line.strip()]


def test_8khz_audio_is_resampled_keeping_its_duration(tmp_path):
    t = np.linspace(0, 2.0, 16000, endpoint=False)
    path = tmp_path / "phone_call.wav"
    sf.write(path, (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 8000)
    audio = decode_audio(path)
    assert audio.size == 32000  # 2 s at 16 kHz


def test_a_60_second_clip_is_skipped_as_too_long(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, np.zeros(60 * 16000, np.float32) + 0.01, 16000)
    with pytest.raises(AudioError, match="too long.*data.max_audio_seconds=30"):
        decode_audio(path, max_seconds=30)
    assert decode_audio(path).size == 60 * 16000  # without the limit it is a valid clip


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda e: e["words"][0]["phones"].__setitem__(0, "QX0"), "unknown phone symbol 'QX0'"),
        (lambda e: e["words"][0].update(mispronunciations=[
            {"index": 0, "canonical-phone": e["words"][0]["phones"][0], "pronounced-phone": "zz"}]),
         "unknown phone symbol 'zz'"),
        (lambda e: e.update(text="   "), "empty text"),
    ],
    ids=["canonical phone", "pronounced phone", "empty text"],
)
def test_bad_labels_are_skipped_counted_and_named(corpus, caplog, edit, reason):
    victim = _train_ids(corpus)[0]
    edit_scores(corpus, lambda scores: edit(scores[victim]))
    caplog.set_level("INFO")
    utts = load_split("local", str(corpus), "train", max_bad_fraction=0.1)
    assert len(utts) == 19 and victim not in {u.id for u in utts}
    assert reason in caplog.text and "skipped 1 of 20" in caplog.text


def test_distorted_and_unknown_pronounced_phones_are_valid_labels(corpus):
    victim = _train_ids(corpus)[0]

    def mark(scores):
        word = scores[victim]["words"][0]
        word["mispronunciations"] = [{"index": 0, "canonical-phone": word["phones"][0], "pronounced-phone": "AH*"}]
        scores[victim]["words"][-1]["mispronunciations"] = [
            {"index": 0, "canonical-phone": scores[victim]["words"][-1]["phones"][0], "pronounced-phone": "<unk>"}]

    edit_scores(corpus, mark)
    utts = {u.id: u for u in load_split("local", str(corpus), "train", max_bad_fraction=0)}
    spoken = utts[victim].words[0].pronounced_phones()
    assert spoken[0] == "AH*" and utts[victim].words[-1].pronounced_phones()[0] == "<unk>"


@pytest.mark.slow
def test_non_ascii_text_is_normalised_and_survives_tokenisation(corpus, make_config):
    from apa.checkpoint.loading import load_base

    victim = _train_ids(corpus)[0]
    decomposed = "CAFE\u0301 NAI\u0308VE"  # combining accents; NFC gives "CAFÉ NAÏVE"
    def edit(scores):  # the words spell the text, as a well-formed entry's do (two words kept, renamed)
        scores[victim].update(text=decomposed, words=scores[victim]["words"][:2])
        for word, text in zip(scores[victim]["words"], decomposed.split(), strict=True):
            word["text"] = text

    edit_scores(corpus, edit)
    utt = next(u for u in load_split("local", str(corpus), "train", max_bad_fraction=0) if u.id == victim)
    assert utt.text == "CAF\u00c9 NA\u00cfVE"
    cfg = make_config("experiment=demo", "prompts=terse")
    _, processor, _ = load_base(cfg.model)
    examples = build_examples(utt, {"apa": cfg.prompts.apa, "mdd": cfg.prompts.mdd}, processor.tokenizer.audio_token)
    rows = [{**ex.__dict__} for ex in examples]
    batch = SpeechSFTCollator(processor)(rows)
    mdd = next(i for i, row in enumerate(rows) if row["task"] == "mdd")
    answer = batch["input_ids"][mdd][batch["labels"][mdd] != -100]  # what the model is taught to say
    assert '"word_transcript": "CAF\u00c9 NA\u00cfVE"' in processor.tokenizer.decode(answer)


def test_duplicate_ids_in_wav_scp_stop_with_the_line(corpus):
    scp = corpus / "train" / "wav.scp"
    first = scp.read_text().splitlines()[0]
    scp.write_text(scp.read_text() + first + "\n")
    with pytest.raises(DataError, match=r"wav.scp:21: duplicate id"):
        load_split("local", str(corpus), "train", max_bad_fraction=0.5)


@pytest.mark.parametrize(
    "override", ["+unknown_option=1", "+trainer.not_an_sft_field=1", "+lora.rnak=8", "+data.extra=1"],
)
def test_options_added_with_plus_are_checked_against_the_schema(make_config, tmp_path, override):
    cfg = make_config("experiment=demo", override)  # Hydra itself accepts a '+' key anywhere
    with pytest.raises(ConfigError, match=f"unknown config option.*{override[1:].split('=')[0]}"):
        train(cfg, tmp_path / "run")  # the one start: the config is checked before the folder is locked
    assert not (tmp_path / "run").exists()  # stopped before anything was written


@pytest.mark.parametrize("override", ["lora=r16", "trainer=fast", "data.sourse=hub"])
def test_unknown_group_options_and_keys_fail_at_compose_time(make_config, override):
    with pytest.raises((ConfigCompositionException, ConfigKeyError)):
        make_config(override)


def test_every_case_of_the_reliability_catalogue_names_a_test_that_exists():
    """docs/reliability.md: each numbered case names `file::test`; each must be a test function of that file."""
    import re

    from tests.conftest import REPO

    doc = (REPO / "docs" / "reliability.md").read_text()
    rows = [line for line in doc.splitlines() if re.match(r"^\| \d+ \|", line)]
    assert len(rows) >= 90
    missing = []
    for row in rows:
        for file, name in re.findall(r"`((?:\w+/)?test_\w+\.py)::(test_\w+)", row):
            if f"def {name}(" not in (REPO / "tests" / file).read_text():
                missing.append(f"{file}::{name}")
    assert not missing, missing
    assert sorted(int(row.split("|")[1]) for row in rows) == list(range(1, len(rows) + 1))


def test_float_audio_far_outside_unit_range_is_decoded_with_a_warning_naming_the_file(tmp_path, caplog):
    t = np.linspace(0, 1.0, 16000, endpoint=False)
    path = tmp_path / "unnormalised.wav"
    sf.write(path, (40 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 16000, subtype="FLOAT")
    with caplog.at_level("WARNING", logger="apa.data.audio"):
        audio = decode_audio(path)
        decode_audio(path)  # once per file, not once per epoch
    assert audio.size == 16000
    warned = [r.getMessage() for r in caplog.records if "outside [-1, 1]" in r.getMessage()]
    assert len(warned) == 1 and str(path) in warned[0] and "samples reach 40" in warned[0]


def test_a_wav_header_that_declares_less_than_the_file_holds_is_named(tmp_path, caplog):
    import struct

    t = np.linspace(0, 1.0, 16000, endpoint=False)
    whole = tmp_path / "whole.wav"
    sf.write(whole, (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 16000, subtype="PCM_16")
    data = bytearray(whole.read_bytes())
    at = data.index(b"data")
    size = struct.unpack("<I", data[at + 4:at + 8])[0]
    data[at + 4:at + 8] = struct.pack("<I", size // 4)  # the header says 0.25 s; the file holds 1 s
    cut = tmp_path / "cut_header.wav"
    cut.write_bytes(bytes(data))
    with caplog.at_level("WARNING", logger="apa.data.audio"):
        assert decode_audio(whole).size == 16000
        assert not caplog.records
        assert decode_audio(cut).size == 4000
    (message,) = [r.getMessage() for r in caplog.records]
    assert str(cut) in message and "more than its WAV header declares" in message and "0.25 s are read" in message


def test_a_wav_cut_short_of_what_its_header_declares_is_refused_naming_both_lengths(tmp_path, caplog):
    """A partial copy or download: the header still declares the whole clip, libsndfile silently read what was left
    (0.62 s of 2.58 s), trained against labels for the whole sentence. Now a counted skip of its own kind. A header
    written as a stream (data size 0 or 2**32-1: length unknown) is read as it is."""
    import struct

    from apa.data.audio import AudioError

    t = np.linspace(0, 2.0, 32000, endpoint=False)
    whole = tmp_path / "whole.wav"
    sf.write(whole, (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 16000, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[:20000])  # 0.62 s of the 2 s declared
    with pytest.raises(AudioError) as refused:
        decode_audio(cut)
    assert refused.value.kind == "truncated audio"
    assert str(refused.value) == (f"truncated audio: {cut}: its header declares 2.00 s, the file holds 0.62 s (a "
                                  "copy or download cut short?): copy the file again")
    data = bytearray(whole.read_bytes()[:20000])
    at = data.index(b"data")
    data[at + 4:at + 8] = struct.pack("<I", 0xFFFFFFFF)  # a streamed header: no length
    streamed = tmp_path / "streamed.wav"
    streamed.write_bytes(bytes(data))
    with caplog.at_level("WARNING", logger="apa.data.audio"):
        assert decode_audio(streamed).size == (20000 - at - 8) // 2
    assert decode_audio(whole).size == 32000


@pytest.mark.parametrize("kind", ["file", "uncreatable", "relative"])
def test_the_cache_folder_is_absolute_or_one_line_naming_apa_cache_dir(tmp_path, monkeypatch, kind):
    """APA_CACHE_DIR that is a file or cannot be created was a traceback from the tiny model's generator; a relative
    one was recorded as such in adapter configs (loadable only from the folder the run started in)."""
    from apa.constants import cache_root
    from apa.errors import UserError

    if kind == "relative":
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("APA_CACHE_DIR", "cache_here")
        assert cache_root() == tmp_path / "cache_here" and (tmp_path / "cache_here").is_dir()
        return
    target = tmp_path / "a_file"
    target.write_text("mine\n")
    monkeypatch.setenv("APA_CACHE_DIR", str(target if kind == "file" else target / "sub"))
    with pytest.raises(UserError, match=r"^APA_CACHE_DIR=.* cannot be used as the cache folder .*set APA_CACHE_DIR"):
        cache_root()
    assert target.read_text() == "mine\n"


def test_a_silent_recording_is_decoded_with_a_warning_naming_the_file(tmp_path, caplog):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(16000, dtype=np.float32), 16000, subtype="PCM_16")
    with caplog.at_level("WARNING", logger="apa.data.audio"):
        assert decode_audio(path).size == 16000
    (message,) = [r.getMessage() for r in caplog.records]
    assert str(path) in message and "the recording is silent" in message


def test_audio_that_is_not_a_regular_file_is_a_skip_saying_so_once(tmp_path):
    import os

    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)  # decoding it would block forever
    with pytest.raises(AudioError) as caught:
        decode_audio(fifo)
    assert caught.value.kind == "not a regular file" and str(caught.value) == f"not a regular file: {fifo}"
    assert caught.value.detail == str(fifo)  # what a skip report logs beside the kind: the reason said once


def test_rescoring_a_folder_names_the_predictions_file_in_it(tmp_path):
    from apa.evaluation.predictions import EvaluationError, read_predictions

    (tmp_path / "predictions.jsonl").write_text("")
    with pytest.raises(EvaluationError, match=r"is a folder: give the predictions.jsonl file \(.*predictions.jsonl\)"):
        read_predictions(tmp_path)


def test_files_read_back_with_the_wrong_types_are_one_line_naming_them(tmp_path):
    """Valid JSON holding the wrong types: metrics as strings or lists (compare/report crashed formatting them),
    train_means without numbers (re-scoring crashed with KeyError), format_version as a string (refused as 'format 2,
    this version reads format 2')."""
    import json

    from apa.run_folder import RunFolderError, read_metrics, read_record, read_train_means

    (tmp_path / "metrics.json").write_text(json.dumps({"wer": "0.1", "pcc_total": [1], "n_apa": 3}))
    with pytest.raises(RunFolderError, match=r"metrics.json holds wer='0.1', pcc_total=\[1\], not numbers"):
        read_metrics(tmp_path)
    (tmp_path / "train_means.json").write_text(json.dumps({"accuracy": "x"}))
    with pytest.raises(RunFolderError, match="has no number for accuracy, fluency, prosodic, total"):
        read_train_means(tmp_path / "train_means.json")
    (tmp_path / "training_config.json").write_text(json.dumps({"format_version": "2", "config": {}}))
    with pytest.raises(RunFolderError, match="holds format_version='2', not the integer this project writes"):
        read_record(tmp_path)


@pytest.mark.slow
def test_an_interrupt_without_a_message_and_an_ascii_console_still_print_one_line(capfd):
    import subprocess
    import sys

    code = ("from apa.errors import one_line_errors\n"
            "@one_line_errors\n"
            "def main():\n"
            "    print('PCC \\u2020 \\u2212 0.5')\n"
            "    raise KeyboardInterrupt\n"
            "main()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**__import__("os").environ, "PYTHONIOENCODING": "ascii"})
    assert done.returncode == 130 and done.stdout == "PCC ? ? 0.5\n"
    assert done.stderr.strip() == "error: interrupted (Ctrl-C)"


def test_a_checkpoint_without_its_run_folder_is_refused_not_replaced_by_the_base_model(tmp_path):
    from apa.evaluation.evaluate import evaluate
    from apa.evaluation.predictions import EvaluationError
    from tests.conftest import compose_eval_config

    cfg = compose_eval_config("model=tiny", "data=sample", "checkpoint=checkpoint-epoch-1")
    with pytest.raises(EvaluationError, match=r"checkpoint=checkpoint-epoch-1 needs run_dir=.*untrained base model"):
        evaluate(cfg, [], tmp_path)
    assert not any(tmp_path.iterdir())


def test_truncated_weights_are_one_line_naming_them(tmp_path):
    """A truncated model.safetensors (a cache or download cut short) was a SafetensorError traceback."""
    from apa.checkpoint.check import _header
    from apa.checkpoint.loading import ModelLoadError

    whole = tmp_path / "model.safetensors"
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(64, 64)}, whole)
    data = whole.read_bytes()
    whole.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="a weights file cannot be read .*truncated or damaged. Delete the folder"):
        _header(whole)
