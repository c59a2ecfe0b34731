"""The model card's Hugging Face metadata, for the run folder, final_model/ and a merged export, from one function."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from apa.reporting.model_card import is_generic_card, model_card, write_model_card
from apa.run_folder import write_record

PHI4 = {"name": "phi4mm", "path": "microsoft/Phi-4-multimodal-instruct", "revision": "refs/pr/70", "dtype": "auto",
        "attn_implementation": "sdpa", "unfreeze": []}
CACHE = "/home/someone/.cache/apa/tiny-phi4mm-2f71a57736"
TINY = {"name": "tiny", "path": None, "tiny": {"seed": 0}, "dtype": "float32", "attn_implementation": "sdpa"}
HUB_DATA = {"name": "speechocean762", "source": "hub", "labels": "original", "hub_id": "mispeech/speechocean762",
            "revision": "f9" * 20}
LOCAL_DATA = {"name": "sample", "source": "local", "labels": "2024", "path": "/data/so762"}


def make_run(root: Path, model: dict, dataset: dict) -> Path:
    run = root / "run"
    (run / "final_model").mkdir(parents=True)
    (run / "final_model" / "adapter_config.json").write_text("{}")
    write_record(run, {
        "config": {"model": model, "lora": {"name": "pretrained_r320", "r": 320, "alpha": 640, "dropout": 0.01,
                                            "init_from": "speech-lora"},
                   "trainer": {"num_train_epochs": 4}, "data": {"train_split": "train", "test_split": "test"},
                   "prompts": {"name": "paper"}, "seed": 0},
        "model_path": model["path"] or CACHE, "parameters": {"total": 10, "trainable": 1},
        "data": {"dataset": dataset, "train_utterances": 2500, "train_examples": 5000}})
    return run


def evaluated(run: Path, checkpoint: str = "final_model", pcc: float | None = 0.61) -> None:
    (run / "eval" / checkpoint).mkdir(parents=True)
    (run / "eval" / checkpoint / "metrics.json").write_text(json.dumps(
        {"pcc_accuracy": pcc, "pcc_fluency": math.nan, "wer": 0.15, "per": 0.125, "mdd_f1": None}))


def test_a_hub_base_is_named_with_its_revision_relation_license_and_the_final_models_metrics(tmp_path):
    run = make_run(tmp_path, PHI4, HUB_DATA)
    evaluated(run, "checkpoint-epoch-1", pcc=0.2)  # not this adapter's figures: not in the model-index
    evaluated(run)
    write_model_card(run)
    adapter = ModelCard.load(run / "final_model" / "README.md")
    data = adapter.data
    assert (data.base_model, data.base_model_relation, data.base_model_revision) == (
        "microsoft/Phi-4-multimodal-instruct", "adapter", "refs/pr/70")
    assert (data.library_name, data.license, data.pipeline_tag, data.datasets) == (
        "peft", "mit", "audio-text-to-text", ["mispeech/speechocean762"])
    assert {"lora", "pronunciation-assessment", "peft"} <= set(data.tags)
    results = {r.metric_name: r for r in data.eval_results}
    assert {name: r.metric_value for name, r in results.items()} == {"PCC accuracy": 0.61, "WER": 0.15, "PER": 0.125}
    assert {(r.dataset_type, r.dataset_split, r.dataset_revision) for r in results.values()} == {
        ("mispeech/speechocean762", "test", "f9" * 20)}
    assert "from_pretrained('microsoft/Phi-4-multimodal-instruct', revision='refs/pr/70')" in adapter.content
    assert str(run) not in adapter.content  # a card to publish: no local path
    # the run's card is the same card, with the run's own paths in "How to use"
    run_card = ModelCard.load(run / "README.md")
    assert run_card.data.to_dict() == data.to_dict() and str(run / "final_model") in run_card.content
    merged = ModelCard(model_card(run, "merged")).data
    assert (merged.base_model, merged.base_model_relation, merged.library_name) == (
        "microsoft/Phi-4-multimodal-instruct", "finetune", "transformers")


def test_a_miniature_claims_no_base_model_and_shows_no_cache_path(tmp_path):
    run = make_run(tmp_path, TINY, LOCAL_DATA)
    for kind in ("adapter", "merged"):
        text = model_card(run, kind)
        card = ModelCard(text)
        assert card.data.base_model is None and card.data.get("base_model_relation") is None
        assert card.data.license is None and card.data.datasets == ["mispeech/speechocean762"]
        assert CACHE not in text and "`tiny-phi4mm-2f71a57736`; not on the hub" in text
        assert "Not evaluated yet: `python evaluate.py run_dir=<run folder> checkpoint=all`" in text
        assert card.data.eval_results is None


def test_the_adapters_card_follows_the_evaluations(tmp_path):
    """Written with the run's card after training, rewritten after an evaluation (what evaluate.py does through
    apa.reporting.epochs.report_evaluation)."""
    run = make_run(tmp_path, PHI4, HUB_DATA)
    write_model_card(run)
    card = run / "final_model" / "README.md"
    assert "Not evaluated yet" in card.read_text() and ModelCard.load(card).data.eval_results is None
    evaluated(run)
    write_model_card(run)
    assert "| final_model | final | 0.610" in card.read_text()
    assert [r.metric_value for r in ModelCard.load(card).data.eval_results][:1] == [0.61]


@pytest.mark.parametrize(("text", "generic"), [(None, True), ("---\nlibrary_name: peft\n---\n- **Developed by:** "
                                                               "[More Information Needed]\n", True),
                                               ("# my own card\n", False)])
def test_only_a_missing_card_or_the_blank_template_counts_as_generic(tmp_path, text, generic):
    path = tmp_path / "README.md"
    if text is not None:
        path.write_text(text)
    assert is_generic_card(path) is generic
