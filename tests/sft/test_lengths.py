"""Dataset statistics match what the model sees; the speaker-held-out validation split; the max_length report."""

import json
import shutil

import pytest

from apa.checkpoint.loading import load_base
from apa.data import SAMPLE_ROOT
from apa.data.labels import DataError
from apa.data.sources import load_split
from apa.data.splits import split_by_speaker
from apa.sft.collate import SpeechSFTCollator
from apa.sft.lengths import example_lengths, summarize
from apa.training.recipe import example_rows
from tests.conftest import compose_config


@pytest.fixture(scope="module")
def sample_rows():
    cfg = compose_config("experiment=demo", "prompts=terse")
    _, processor, _ = load_base(cfg.model)
    utts = load_split("local", str(SAMPLE_ROOT), "train", max_bad_fraction=0)[:5]
    rows = example_rows(utts, cfg.prompts, processor.tokenizer.audio_token)
    return rows, processor


@pytest.mark.slow
def test_token_lengths_are_what_the_collator_builds(sample_rows):
    rows, processor = sample_rows
    lengths = example_lengths(rows, processor)
    collate = SpeechSFTCollator(processor)
    for row, counted in zip(rows, lengths, strict=True):
        batch = collate([row])
        assert int(batch["attention_mask"].sum()) == counted["total"]
        assert int((batch["input_ids"] == processor.audio_token_id).sum()) == counted["audio"]
        assert int((batch["labels"] != -100).sum()) == counted["answer"]


def test_examples_longer_than_max_length_are_named_not_truncated(sample_rows, caplog):
    rows, processor = sample_rows
    lengths = example_lengths(rows, processor)
    totals = [n["total"] for n in lengths]
    limit = sorted(set(totals))[-2]  # only the longest exceed it
    expected = [f"{r['id']}/{r['task']}" for r, t in zip(rows, totals, strict=True) if t > limit]
    caplog.set_level("INFO")
    summary = summarize(lengths, limit, "train", [f"{r['id']}/{r['task']}" for r in rows])
    assert summary["longer_than_max_length"] == len(expected) >= 1
    assert f"{len(expected)} examples are longer than max_length={limit}" in caplog.text
    assert "kept whole" in caplog.text and all(name in caplog.text for name in expected)
    assert summary["tasks"]["apa"]["examples"] == summary["tasks"]["mdd"]["examples"] == 5
    assert summary["hours"] == pytest.approx(sum(n["seconds"] for n in lengths) / 2 / 3600, abs=1e-4)


def _sample_with_speakers_of(size: int, tmp_path):
    """A copy of the bundled sample whose training utterances belong to speakers of `size` utterances each."""
    root = tmp_path / "so762"
    shutil.copytree(SAMPLE_ROOT, root)
    utt2spk = root / "train" / "utt2spk"
    lines = utt2spk.read_text().splitlines()
    utt2spk.write_text("".join(f"{line.split()[0]} {1000 + i // size}\n" for i, line in enumerate(lines)))
    return root


def test_validation_split_holds_out_whole_speakers(tmp_path):
    root = _sample_with_speakers_of(5, tmp_path)  # the 20 training utterances: four speakers of 5
    utts = load_split("local", str(root), "train", max_bad_fraction=0)
    train, validation = split_by_speaker(utts, 0.25, seed=42)
    assert len(validation) == 5 and len(train) == 15
    assert not {u.speaker for u in train} & {u.speaker for u in validation}
    assert split_by_speaker(utts, 0.25, seed=42) == (train, validation)  # reproducible
    with pytest.raises(DataError, match="at least 2 speakers"):
        split_by_speaker(load_split("local", str(SAMPLE_ROOT), "train", max_bad_fraction=0), 0.2, seed=42)


@pytest.mark.slow
def test_training_with_a_validation_split_logs_an_eval_loss_per_epoch(tmp_path):
    from apa.training.recipe import build_trainer, fit

    root = _sample_with_speakers_of(3, tmp_path)
    cfg = compose_config("experiment=demo", "prompts=terse", "trainer.report_to=[]", f"data.path={root}",
                             "data.limit=6", "data.validation_fraction=0.3", "trainer.per_device_train_batch_size=4")
    trainer, resume_from, record = build_trainer(cfg, tmp_path / "run")
    assert (record["data"]["train_utterances"], record["data"]["validation_utterances"]) == (3, 3)
    # the phone statistics of each part (L2 phones of the original release counted apart) and the split's counts
    phones = [record["data"][f"{part}_phones"] for part in ("train", "validation")]
    assert all(p["canonical_phones"] > 0 and p["canonical_l2_phones"] == 0 == p["said_l2_phones"] for p in phones)
    saved = json.loads((tmp_path / "run" / "training_config.json").read_text())["data"]
    assert saved["train_phones"] == phones[0] and saved["train_split"]["limit"] == 6
    assert saved["train_split"]["utterances_in_split"] == 6 and saved["train_split"]["utterances_skipped"] == 0
    fit(trainer, resume_from, record)
    eval_losses = [e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e]
    assert len(eval_losses) == cfg.trainer.num_train_epochs == 2 and all(v > 0 for v in eval_losses)
