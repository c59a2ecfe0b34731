"""End-to-end training on the real tiny Phi-4-multimodal and the bundled sample, in process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoProcessor

from apa.checkpoint.layout import load_processor
from apa.checkpoint.loading import load_base, resolve_model_path
from apa.reporting.model_card import is_generic_card
from apa.run_folder import RunFolderError, check_run_dir
from apa.sft.collate import SpeechSFTCollator
from apa.sft.generation import generate_answers
from apa.training.recipe import build_trainer, fit
from apa.training.sampling import StepSortedSampler
from tests.conftest import compose_config

pytestmark = pytest.mark.slow  # end to end: `pytest -m "not slow"` leaves this module out


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _run(tmp_path_factory, name, *overrides, experiment="demo"):
    cfg = compose_config(f"experiment={experiment}", "prompts=terse", "trainer.report_to=[tensorboard]", *overrides)
    run_dir = tmp_path_factory.mktemp(name)
    trainer, resume_from, record = build_trainer(cfg, run_dir)
    before = _snapshot(trainer.model)
    final = fit(trainer, resume_from, record)
    return {"cfg": cfg, "trainer": trainer, "before": before, "after": _snapshot(trainer.model), "final": final}


@pytest.fixture(scope="module")
def overfit(tmp_path_factory):
    """experiment=overfit, the README's way to see the pipeline learn: three utterances (six examples) learned by
    heart. Proves masking, control tokens and generation together, and trains the control-token rows too, which
    exercises the tied-LM-head path of TRL's fused loss. (Measured: 6/6 exact from step 100 to 120 with its cosine
    schedule; a constant rate kept flipping single digits between steps.)"""
    return _run(tmp_path_factory, "overfit", experiment="overfit")


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """The default, frozen control tokens, continuing the checkpoint's own speech LoRA, with checkpointing on."""
    return _run(tmp_path_factory, "short", "lora=pretrained_r320", "data.limit=2",
                "trainer.num_train_epochs=1", "trainer.per_device_train_batch_size=2",
                "trainer.activation_checkpointing=true")


@pytest.fixture(scope="module")
def unfrozen(tmp_path_factory):
    """Table 3's other row: the audio encoder and projector train alongside the LoRA."""
    return _run(tmp_path_factory, "unfrozen", "lora=fresh_r64", "data.limit=2", "trainer.num_train_epochs=1",
                "trainer.per_device_train_batch_size=2", "model.unfreeze=[audio_encoder,audio_projector]")


def _changed(run, predicate) -> dict[str, bool]:
    return {n: not torch.equal(run["before"][n], run["after"][n]) for n in run["before"] if predicate(n)}


@pytest.mark.parametrize("run_name", ["overfit", "short_run"])
def test_only_the_adapter_moves(request, run_name):
    run = request.getfixturevalue(run_name)
    lora = _changed(run, lambda n: "lora_" in n)
    tokens = _changed(run, lambda n: "trainable_tokens_delta" in n)
    frozen = _changed(run, lambda n: "lora_" not in n and "trainable_tokens_delta" not in n)
    assert lora and all(lora.values()), "every LoRA matrix must have been updated"
    assert frozen and not any(frozen.values()), [n for n, c in frozen.items() if c][:5]
    assert tokens and all(tokens.values()) == bool(run["cfg"].lora.train_control_tokens)
    grad_norms = [e["grad_norm"] for e in run["trainer"].state.log_history if "grad_norm" in e]
    assert grad_norms and all(g > 0 for g in grad_norms)


def test_the_overfit_experiment_learns_and_its_evaluation_says_so(overfit):
    """What the README promises of experiment=overfit: the loss falls, and evaluating the run on its own training
    utterances (data.test_split=train) parses every answer and reaches PCC 1.0; the model card shows the result."""
    from apa.evaluation.evaluate import evaluate
    from apa.reporting.epochs import report_evaluation
    from tests.conftest import compose_eval_config

    losses = [e["loss"] for e in overfit["trainer"].state.log_history if "loss" in e]
    assert losses[-1] < losses[0] / 4
    run_dir = overfit["final"].parent
    assert not list(run_dir.glob("checkpoint-*"))  # save_strategy=no: no per-epoch checkpoints
    results = evaluate(compose_eval_config(f"run_dir={run_dir}"), [], run_dir / "eval")
    shown = report_evaluation(results)  # what evaluate.py does next: the model card gets the metrics
    metrics = results["final_model"]
    assert metrics["parse_rate_apa"] == metrics["parse_rate_mdd"] == 1.0
    assert all(metrics[f"pcc_{a}"] == pytest.approx(1.0) for a in ("accuracy", "fluency", "prosodic", "total"))
    assert metrics["per"] == 0 and metrics["n_utterances_scored"] == 3
    card = (run_dir / "README.md").read_text()
    assert "LoRA `fresh_r64`" in card and "| final_model | final | 1.000 | 1.000" in card
    adapter_card = (run_dir / "final_model" / "README.md").read_text()  # the adapter's own card, as pushed
    assert "library_name: peft" in adapter_card and "| final_model | final | 1.000 | 1.000" in adapter_card
    # TensorBoard shows the evaluation beside the loss: no epoch checkpoints, so one point, at the run's last step
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(run_dir / "logs"))
    board.Reload()
    assert [(e.step, e.value) for e in board.Scalars("test/pcc_total")] == [(120, pytest.approx(1.0))]
    assert [(e.step, e.value) for e in board.Scalars("test/per")] == [(120, 0.0)]
    assert board.Scalars("train/loss")[-1].step == 120
    # its MDD F1 is n/a for the real reason: its 3 utterances hold no mispronunciation (every answer parsed)
    assert ("n/a where the model rejected no phone (TR + FR = 0): MDD P, MDD F1 in final_model. n/a where the "
            "references annotate no mispronounced phone (TR + FA = 0): MDD R in final_model.") in card
    assert "no parsed answer" not in card
    # the table evaluate.py prints: once, saying it was scored on the split the run trained on
    assert shown.count("| this run (final_model) |") == 1 and "scored on the split it trained on" in shown


def test_overfit_run_reproduces_every_answer_greedily(overfit):
    trainer = overfit["trainer"]
    rows = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    assert {r["task"] for r in rows} == {"apa", "mdd"} and len(rows) == 6
    answers = generate_answers(trainer.model.eval(), trainer.processing_class, rows, max_new_tokens=64)
    assert answers == [r["answer"] for r in rows]


def auto_processor_outcome(path: Path):
    """What AutoProcessor.from_pretrained(path) gives: its parts' settings, or the ImportError it raises."""
    try:
        processor = AutoProcessor.from_pretrained(str(path))
    except ImportError as err:
        return "ImportError: " + str(err)
    return (type(processor).__name__, processor.image_processor.to_dict(), processor.audio_processor.to_dict())


@pytest.mark.parametrize("run_name", ["overfit", "short_run", "unfrozen"])
def test_final_model_reloads_with_plain_peft_and_identical_logits(request, run_name):
    """final_model/ opens with plain PEFT, and AutoProcessor treats it exactly as the base checkpoint."""
    run = request.getfixturevalue(run_name)
    trainer = run["trainer"]
    base, _, _ = load_base(run["cfg"].model)
    reloaded = PeftModel.from_pretrained(base, str(run["final"])).eval()
    base_path = Path(resolve_model_path(run["cfg"].model))
    # the base checkpoint's own processor files, verbatim: no stand-in class is ever written
    for name in ("processor_config.json", "chat_template.jinja"):
        assert (run["final"] / name).read_bytes() == (base_path / name).read_bytes()
    assert "ImageProcessingMixin" not in "".join(p.read_text() for p in run["final"].glob("*.json"))
    card = run["final"] / "README.md"  # never PEFT's blank template: the project's card, once train.py writes it
    assert not card.exists() or not is_generic_card(card)
    # plain Hugging Face code: AutoProcessor does on final_model exactly what it does on the base checkpoint (loads
    # where torchvision imports; here, with the CPU torch wheel, raises the same ImportError naming torchvision)
    on_base, on_final = auto_processor_outcome(base_path), auto_processor_outcome(run["final"])
    assert on_final == on_base
    processor = load_processor(str(run["final"]))  # the project's own loading: no torchvision needed
    assert processor.tokenizer.convert_tokens_to_ids(["<|APA|>", "<|MDD|>"]) == trainer.processing_class.tokenizer \
        .convert_tokens_to_ids(["<|APA|>", "<|MDD|>"])
    rows = [trainer.train_dataset[i] for i in range(2)]
    batch = SpeechSFTCollator(processor)(rows)
    batch.pop("labels")
    with torch.no_grad():
        expected = trainer.model.eval()(**batch).logits
        got = reloaded(**batch).logits
    assert torch.equal(expected, got)


def test_run_folder_is_complete(short_run):
    run_dir = short_run["final"].parent
    names = {p.name for p in run_dir.iterdir()}
    assert {"training_config.json", "parameters.txt", "checkpoint-epoch-1", "final_model", "logs"} <= names
    assert not any(n.startswith("checkpoint-") and "epoch" not in n for n in names)
    assert list((run_dir / "logs").glob("events.out.tfevents.*"))
    record = json.loads((run_dir / "training_config.json").read_text())
    assert record["config"]["lora"]["name"] == "pretrained_r320"
    assert record["parameters"]["trainable"] == record["parameters"]["groups"]["lora"]["trainable"] > 0
    assert {"torch", "transformers", "peft", "trl"} <= set(record["library_versions"])
    assert "git_commit" in record and record["final_train_loss"] is not None
    adapter = json.loads((run_dir / "final_model" / "adapter_config.json").read_text())
    assert (adapter["r"], adapter["lora_alpha"], adapter["lora_dropout"]) == (320, 640, 0.01)
    assert {"tokenizer.json", "processor_config.json", "adapter_model.safetensors"} <= {
        p.name for p in (run_dir / "final_model").iterdir()}
    assert (run_dir / "checkpoint-epoch-1" / "optimizer.pt").exists()


def test_group_by_length_gives_the_task_mixing_sampler(short_run):
    trainer = short_run["trainer"]
    assert trainer.args.train_sampling_strategy == "group_by_length"  # paper_table3's, inherited by cpu_demo
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, StepSortedSampler)
    assert (sampler.unit, sampler.seed) == (2, 42)  # batch 2 x world size 1; data_seed
    assert sorted(sampler) == list(range(len(trainer.train_dataset)))


def test_existing_results_are_not_overwritten(short_run):
    run_dir = short_run["final"].parent
    with pytest.raises(RunFolderError, match="resume=true.*another folder"):
        check_run_dir(run_dir, resume=False)


def test_unfreeze_trains_the_audio_modules_and_shows_them_in_the_parameter_table(unfrozen, short_run):
    def audio(name):
        return "audio_embed.encoder" in name or "_proj_for_speech" in name

    trained_copies = _changed(unfrozen, lambda n: audio(n) and ".modules_to_save." in n)
    assert trained_copies and sum(trained_copies.values()) > 0.8 * len(trained_copies)
    assert any(v for n, v in trained_copies.items() if "up_proj_for_speech" in n)
    # the frozen twins, the language model and the vision tower did not move
    rest = _changed(unfrozen, lambda n: "lora_" not in n and ".modules_to_save." not in n)
    assert rest and not any(rest.values())
    # LoRA-only (short_run) leaves the audio encoder bit-identical
    lora_only = _changed(short_run, audio)
    assert lora_only and not any(lora_only.values())
    table = (unfrozen["final"].parent / "parameters.txt").read_text()
    rows = {line.split()[0]: line.split()[1:] for line in table.splitlines()[1:]}
    assert int(rows["audio_encoder"][1].replace(",", "")) > 0 and int(rows["audio_projector"][1].replace(",", "")) > 0
    saved = json.loads((unfrozen["final"] / "adapter_config.json").read_text())["modules_to_save"]
    assert set(saved) == {"audio_embed.encoder", "audio_embed.up_proj_for_speech", "audio_embed.down_proj_for_speech"}


def test_the_sampler_follows_the_epoch_even_behind_skip_first_batches(short_run, monkeypatch):
    """Resumed mid-epoch under DDP, the Trainer iterates skip_first_batches(BatchSamplerShard(...)), which hides our
    sampler from its set_epoch: PronunciationTrainer sets the epoch itself before each epoch."""
    import transformers

    trainer = short_run["trainer"]
    sampler = trainer._get_train_sampler()
    sampler.set_epoch(0)
    seen = []
    monkeypatch.setattr(transformers.Trainer, "_run_epoch", lambda self, model, epoch, *a, **k: seen.append(
        (epoch, sampler.epoch)))
    trainer._run_epoch(None, 3)
    assert seen == [(3, 3)]


def test_an_unfrozen_run_exports_with_its_trained_modules_in_place(unfrozen, tmp_path):
    """The Unfreeze row's adapter carries whole trained modules (PEFT modules_to_save) beside the LoRA: `apa export`
    puts the trained copies in the base's place, so plain transformers computes the trained model's logits."""
    from transformers import AutoModelForCausalLM

    from apa.publish.export import export

    out = export(unfrozen["final"], tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    base, _, _ = load_base(unfrozen["cfg"].model)
    base_weights = base.state_dict()
    trained = [name for name, tensor in merged.state_dict().items()
               if "audio_embed.encoder" in name and not torch.equal(tensor, base_weights[name])]
    assert trained, "the trained audio encoder must be in the export, not the base's"
    trainer = unfrozen["trainer"]
    batch = SpeechSFTCollator(load_processor(str(out)))([trainer.train_dataset[i] for i in range(2)])
    batch.pop("labels")
    with torch.no_grad():
        expected = trainer.model.eval()(**batch).logits
        got = merged(**batch).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-3)
