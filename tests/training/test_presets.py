"""The speed presets of conf/trainer/ are trainer=paper_table3's optimisation: same examples per optimizer step, same
loss normalisation (over the answer tokens of the whole step), same AdamW and schedule; only how a step is cut into
micro-batches, activation checkpointing and the AdamW kernel differ. Proved on the tiny model, at 1/8 scale: the GPU
presets' 64 examples per step (64 x 1, 32 x 2, 16 x 4, 8 x 8) become 8 here (8 x 1, 4 x 2, 2 x 4, 1 x 8); the
argument (a step's gradient is the sum of its micro-batches' token-summed gradients over the step's token count) does
not depend on the numbers, so 64 = 64 x 1 = 8 x 8 holds as 8 = 8 x 1 = 1 x 8 does."""

from __future__ import annotations

import pytest
import torch

from apa.training.recipe import build_trainer
from tests.conftest import CONF, compose_config

pytestmark = pytest.mark.slow  # end to end: `pytest -m "not slow"` leaves this module out

PRESETS = ("fast_b64x1", "b32x2", "b16x4", "fits_24gb")
SPEED_KEYS = {"per_device_train_batch_size", "gradient_accumulation_steps", "activation_checkpointing", "optim"}
SCALE = 8  # examples per optimizer step: 64 on the GPU, 64 / SCALE = 8 here
# 8 utterances -> 16 examples: 2 optimizer steps of 8. fp32, LoRA dropout off (the tiny model has no other dropout),
# the recipe's own order, group_by_length (apa.training.sampling.StepSortedSampler: each step a random draw fixed by
# the seed,
# whatever the micro-batch size, sorted by length only inside the step), so every arrangement's step holds the same 8
BASE = ("experiment=demo", "prompts=terse", "lora=fresh_r64", "lora.dropout=0.0", "data.limit=8",
        "trainer.num_train_epochs=1", "trainer.train_sampling_strategy=group_by_length", "trainer.save_strategy=no",
        "trainer.report_to=[]", "trainer.logging_steps=1")
# measured on the development machine: <= 7.3e-5 (update), <= 2.4e-6 (loss, gradient norm) between arrangements;
# 0.25-0.42 (update) when each micro-batch is normalised by its own tokens instead of the step's
UPDATE_TOLERANCE = 1e-3  # |theta_a - theta_b| / |theta_b - theta_0| over all trainable tensors
LOG_TOLERANCE = 1e-5  # relative, per step: loss and gradient norm before clipping


def arrangement(trainer: str) -> tuple[str, ...]:
    """The preset's switches as overrides at 1/SCALE scale (the batch shrinks; accumulation stays)."""
    t = compose_config(f"trainer={trainer}").trainer
    return (f"trainer.per_device_train_batch_size={t.per_device_train_batch_size // SCALE}",
            f"trainer.gradient_accumulation_steps={t.gradient_accumulation_steps}",
            f"trainer.activation_checkpointing={str(t.activation_checkpointing).lower()}", f"trainer.optim={t.optim}")


def _train(tmp_path_factory, *overrides, fixed_audio_padding=True, step_normalised=True) -> dict:
    trainer, _, _ = build_trainer(compose_config(*BASE, *overrides), tmp_path_factory.mktemp("run"))
    collate = trainer.data_collator
    # The conformer's self-attention does not mask padded frames (transformers' Phi4MultimodalAudioModel adds the
    # boolean mask to the relative bias: +1 for a frame, +0 for padding, never -inf), so a clip's encoding depends on
    # the longest clip of its micro-batch. Padding every clip to the same length removes that dependence, so that
    # what is compared is the optimisation alone (test_audio_padding_alone_changes_the_loss shows the effect).
    frames = max(collate.features(row["audio_path"])[0].shape[0] for row in trainer.train_dataset)
    seen: list[list[str]] = []

    def recording(rows):
        seen.append([f"{r['id']}/{r['task']}" for r in rows])
        batch = collate(rows)
        if fixed_audio_padding:
            features = batch["audio_input_features"]
            n = batch["audio_attention_mask"].sum(1) if "audio_attention_mask" in batch else torch.tensor(
                [features.shape[1]])
            batch["audio_input_features"] = torch.nn.functional.pad(features, (0, 0, 0, frames - features.shape[1]))
            batch["audio_attention_mask"] = torch.arange(frames)[None, :] < n[:, None]
        return batch

    trainer.data_collator = recording
    # the Trainer passes each micro-batch the token count of the whole step (num_items_in_batch) only to a model
    # that takes loss kwargs; without it each micro-batch's loss is its own mean, divided by the accumulation
    assert trainer.model_accepts_loss_kwargs
    trainer.model_accepts_loss_kwargs = step_normalised
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    accumulation = trainer.args.gradient_accumulation_steps
    return {
        "steps": [sorted(sum(seen[i : i + accumulation], [])) for i in range(0, len(seen), accumulation)],
        "logs": [(e["loss"], e["grad_norm"]) for e in trainer.state.log_history if "grad_norm" in e],
        "before": before,
        "after": {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad},
    }


def update_difference(a: dict, b: dict) -> float:
    num = sum(((a["after"][k] - b["after"][k]) ** 2).sum() for k in b["after"])
    den = sum(((b["after"][k] - b["before"][k]) ** 2).sum() for k in b["after"])
    return float((num / den).sqrt())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """trainer=paper_table3's arrangement (8 x 8, checkpointing, adamw_torch) at 1/8 scale: 1 x 8."""
    run = _train(tmp_path_factory, *arrangement("paper_table3"))
    assert len(run["steps"]) == 2 and all(len(s) == 8 for s in run["steps"]) and len(run["logs"]) == 2
    return run


def test_every_preset_is_the_paper_recipe_with_only_speed_switches():
    on_disk = {p.stem for p in (CONF / "trainer").glob("*.yaml")} - {"paper_table3", "seed_3epochs", "cpu_demo"}
    assert on_disk == set(PRESETS), "a new trainer preset needs its equivalence test here"
    paper = compose_config("trainer=paper_table3").trainer
    for name in PRESETS:
        preset = compose_config(f"trainer={name}").trainer
        changed = {k for k in paper if preset[k] != paper[k]}
        assert changed <= SPEED_KEYS, (name, changed - SPEED_KEYS)
        assert preset.per_device_train_batch_size * preset.gradient_accumulation_steps == 64
        assert preset.per_device_train_batch_size % SCALE == 0


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_trains_the_same_adapter_as_8x8(preset, reference, tmp_path_factory):
    run = _train(tmp_path_factory, *arrangement(preset))
    assert run["steps"] == reference["steps"]  # the same examples in every optimizer step
    assert all(torch.equal(run["before"][k], reference["before"][k]) for k in reference["before"])
    for (loss, norm), (ref_loss, ref_norm) in zip(run["logs"], reference["logs"], strict=True):
        assert loss == pytest.approx(ref_loss, rel=LOG_TOLERANCE)
        assert norm == pytest.approx(ref_norm, rel=LOG_TOLERANCE)
    assert update_difference(run, reference) < UPDATE_TOLERANCE


def test_the_comparison_sees_a_wrong_normalisation(reference, tmp_path_factory):
    """The same 1 x 8 with each micro-batch averaged over its own tokens (no num_items_in_batch): far off."""
    run = _train(tmp_path_factory, *arrangement("paper_table3"), step_normalised=False)
    assert run["steps"] == reference["steps"]
    assert update_difference(run, reference) > 100 * UPDATE_TOLERANCE


def test_audio_padding_alone_changes_the_loss(tmp_path_factory):
    """Why the runs above pad audio to one length: with the collator's own padding (to the longest clip of each
    micro-batch), 8 x 1 and 1 x 8 already differ in the first step's loss, before any update. If this fails, the
    audio encoder masks its padding now and the fixed padding above can go."""
    one = _train(tmp_path_factory, "trainer.per_device_train_batch_size=8", fixed_audio_padding=False)
    eight = _train(tmp_path_factory, "trainer.per_device_train_batch_size=1", "trainer.gradient_accumulation_steps=8",
                   fixed_audio_padding=False)
    assert one["steps"] == eight["steps"]
    assert abs(one["logs"][0][0] - eight["logs"][0][0]) > 1e-4 * abs(eight["logs"][0][0])
