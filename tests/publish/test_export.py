"""`apa export`: the run's adapter merged into its base, saved as a checkpoint plain transformers loads, on the demo
sweep's runs (the tiny model: lora=pretrained_r320 continuing the checkpoint's speech LoRA, and fresh_r64)."""

from __future__ import annotations

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM, Phi4MultimodalForCausalLM

from apa.checkpoint.adapters import load_for_eval
from apa.checkpoint.layout import load_processor
from apa.checkpoint.loading import load_base
from apa.constants import cache_root
from apa.data.sources import load_configured_split
from apa.publish.export import main
from apa.run_folder import resolved_config
from apa.sft.collate import SpeechSFTCollator
from apa.training.recipe import example_rows

pytestmark = pytest.mark.slow  # end to end: `pytest -m "not slow"` leaves this module out

EXPORTED = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "chat_template.jinja", "processor_config.json", "README.md"}


def one_utterance_batch(run_dir, processor) -> dict:
    """The APA and MDD examples of one training utterance, as the model takes them (audio, control tokens)."""
    cfg = resolved_config(run_dir)
    rows = example_rows(load_configured_split(cfg.data, "train")[:1], cfg.prompts, processor.tokenizer.audio_token)
    batch = SpeechSFTCollator(processor)(rows)
    batch.pop("labels")
    return batch


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**batch).logits


@pytest.mark.parametrize(("run_name", "given"), [("pretrained_r320_0", "run"), ("fresh_r64_1", "final_model")])
def test_the_export_gives_the_adapted_models_logits_under_plain_transformers(demo_sweep, tmp_path, run_name, given):
    """The merged checkpoint, loaded by AutoModelForCausalLM alone, computes what prediction computes (base + adapter
    by PEFT, apa.checkpoint.adapters.load_for_eval) up to float rounding; the base alone is far from both, so the
    adapter (its LoRA, control-token rows) is in the weights."""
    run = demo_sweep / run_name
    out = tmp_path / "merged"
    if given == "run":
        out.mkdir()  # an existing empty folder may be the destination
    main([str(run if given == "run" else run / "final_model"), "--out", str(out)])
    assert {p.name for p in out.iterdir()} == EXPORTED
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]  # the temporary sibling was renamed, none is left
    for name in ("processor_config.json", "chat_template.jinja", "tokenizer.json"):
        assert (out / name).read_bytes() == (run / "final_model" / name).read_bytes()

    merged = AutoModelForCausalLM.from_pretrained(str(out))
    assert type(merged) is Phi4MultimodalForCausalLM and merged.dtype == torch.float32  # the tiny base's own dtype
    processor = load_processor(str(out))
    batch = one_utterance_batch(run, processor)
    cfg = resolved_config(run)
    adapted, _ = load_for_eval(cfg.model, run / "final_model")
    expected, got = logits(adapted, batch), logits(merged, batch)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-3)
    base, _, _ = load_base(cfg.model)
    assert (logits(base, batch) - expected).abs().max() > 1.0

    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "audio-text-to-text"
    assert card.data.base_model is None  # the miniature is no hub model: none is claimed
    assert str(cache_root()) not in card.content and "(merged)" in card.content
    assert f"LoRA `{cfg.lora.name}`" in card.content and "| final_model | final |" in card.content


def test_the_export_saves_the_dtype_asked_for(demo_sweep, tmp_path):
    out = tmp_path / "bf16"
    main([str(demo_sweep / "fresh_r64_1"), "--out", str(out), "--dtype", "bfloat16"])
    model = AutoModelForCausalLM.from_pretrained(str(out), dtype="auto")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_an_out_that_holds_anything_is_refused_before_loading(demo_sweep, tmp_path, capsys):
    """Never written into, never replaced: a folder with a file in it, or a file."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    a_file = tmp_path / "model.bin"
    a_file.write_text("mine too")
    for out in (folder, a_file):
        with pytest.raises(SystemExit) as exit_:
            main([str(demo_sweep / "fresh_r64_1"), "--out", str(out)])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.startswith(f"error: --out {out} exists and is not empty")
        assert err.count("\n") == 1
    assert [p.name for p in folder.iterdir()] == ["notes.txt"] and (folder / "notes.txt").read_text() == "keep me"
    assert a_file.read_text() == "mine too" and sorted(p.name for p in tmp_path.iterdir()) == ["mine", "model.bin"]


def test_what_is_not_a_runs_final_model_is_named(demo_sweep, tmp_path, capsys):
    run = demo_sweep / "fresh_r64_1"
    for path, message in ((run / "checkpoint-epoch-1", "is not the run's final_model/"),
                          (tmp_path, "is neither a run folder written by train.py"),
                          (tmp_path / "nowhere", "no such folder")):
        with pytest.raises(SystemExit):
            main([str(path), "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
