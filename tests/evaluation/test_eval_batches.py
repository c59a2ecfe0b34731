"""Evaluation at batch scale: token-budget batches, and the base model loaded once per run with the adapters
swapped between checkpoints; predictions as a fresh base model per checkpoint makes them, whatever the batches."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from omegaconf import OmegaConf

from apa.checkpoint.adapters import EvalModels, load_for_eval
from apa.evaluation.evaluate import evaluate
from apa.evaluation.predictions import generate_predictions, plan_batches
from apa.training.recipe import train
from tests.conftest import compose_config, compose_eval_config

pytestmark = pytest.mark.slow  # end to end: `pytest -m "not slow"` leaves this module out

SHORT = ("max_new_tokens.apa=12", "max_new_tokens.mdd=12")
CHECKPOINTS = ("checkpoint-epoch-1", "checkpoint-epoch-2")


def _rows(lengths: dict[str, list[int]]) -> tuple[list[dict], list[int]]:
    rows = [{"id": f"{task}{i:02d}", "task": task} for task, ns in lengths.items() for i in range(len(ns))]
    return rows, [n for ns in lengths.values() for n in ns]


def test_batches_follow_the_token_budget_and_the_row_cap():
    rows, lengths = _rows({"apa": [50, 10, 30, 20, 40, 500], "mdd": [5, 15, 25, 35]})
    length = {r["id"]: n for r, n in zip(rows, lengths, strict=True)}
    new = {"apa": 10, "mdd": 20}

    def cut(batches):
        return [[length[r["id"]] for r in b] for b in batches]

    batches = plan_batches(rows, 3, lengths, max_batch_tokens=100, max_new_tokens=new)
    # shortest first, filled while rows x (longest + max_new_tokens) <= 100: 2 x (20 + 10) = 60, but 3 x 40 > 100;
    # 2 x (40 + 10) = 100; the 500-token row goes alone; MDD: 2 x (15 + 20) = 70, then 2 x (35 + 20) = 110 > 100
    assert cut(batches) == [[10, 20], [30, 40], [50], [500], [5, 15], [25], [35]]
    assert [b[0]["task"] for b in batches] == ["apa"] * 4 + ["mdd"] * 3
    assert cut(plan_batches(rows, 2, lengths)) == [[10, 20], [30, 40], [50, 500], [5, 15], [25, 35]]  # cap only
    assert plan_batches(rows, 3, lengths, 100, new) == batches  # fixed in advance: a resumed run cuts the same


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
    """A run with 2 epoch checkpoints that trained everything an adapter can carry: LoRA, the unfrozen audio
    encoder and projector (modules_to_save) and the control-token rows."""
    run_dir = tmp_path_factory.mktemp("two_epochs")
    cfg = compose_config("experiment=demo", "prompts=terse", "lora=fresh_r64", "data.limit=2",
                         "trainer.num_train_epochs=2", "trainer.per_device_train_batch_size=2", "trainer.report_to=[]",
                         "trainer.learning_rate=5e-3", "model.unfreeze=[audio_encoder,audio_projector]",
                         "lora.train_control_tokens=true")
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")  # as train.py's Hydra writes it
    train(cfg, run_dir)
    return run_dir


def _evaluate(run_dir, tmp_path, monkeypatch, *overrides) -> tuple[dict[str, str], int]:
    """predictions.jsonl per epoch checkpoint of `checkpoint=all`, and how often the base model was loaded."""
    import apa.checkpoint.loading

    loads = []
    load_base = apa.checkpoint.loading.load_base
    monkeypatch.setattr(apa.checkpoint.loading, "load_base", lambda cfg: loads.append(1) or load_base(cfg))
    for old in run_dir.glob("eval*"):
        shutil.rmtree(old)
    # 4 test utterances where the run has 2: other data than the run's own, so results go to eval-sample-<digest>/
    given = ("checkpoint=all", "data.limit=4", *SHORT, *overrides)
    evaluate(compose_eval_config(f"run_dir={run_dir}", *given), list(given), tmp_path)
    (eval_root,) = run_dir.glob("eval-sample-*")
    return {c: (eval_root / c / "predictions.jsonl").read_text() for c in CHECKPOINTS}, len(loads)


def _by_key(text: str) -> dict:
    return {(r["id"], r["task"]): r for r in map(json.loads, text.splitlines())}


def _fresh_predictions(run_dir, tmp_path, *overrides) -> dict[str, str]:
    """predictions.jsonl per checkpoint as a fresh load of base + adapter makes them (no swap)."""
    from apa.evaluation.examples import evaluation_examples

    trained = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    cfg = OmegaConf.merge(compose_eval_config("data=sample", "data.limit=4", *SHORT, *overrides),
                          {"prompts": trained.prompts})
    out = {}
    for checkpoint in CHECKPOINTS:
        model, processor = load_for_eval(trained.model, run_dir / checkpoint)
        rows = evaluation_examples(cfg, processor.tokenizer.audio_token)
        path = tmp_path / "fresh" / "-".join(overrides) / checkpoint / "predictions.jsonl"
        generate_predictions(model, processor, rows, path, cfg.batch_size, dict(cfg.max_new_tokens),
                             max_batch_tokens=cfg.max_batch_tokens)
        out[checkpoint] = path.read_text()
    return out


def test_swapping_adapters_gives_a_fresh_loads_predictions_with_one_base_load(two_epochs, tmp_path, monkeypatch):
    # one base model, adapters swapped; batches by token budget (small here, so there are several)
    new, new_loads = _evaluate(two_epochs, tmp_path, monkeypatch, "max_batch_tokens=130")
    assert new_loads == 1
    fresh = _fresh_predictions(two_epochs, tmp_path, "max_batch_tokens=130")  # a fresh base per checkpoint
    one_batch = _fresh_predictions(two_epochs, tmp_path, "batch_size=8")  # other batches: each task's answers in one
    for checkpoint in CHECKPOINTS:
        assert new[checkpoint] == fresh[checkpoint]  # same batches: byte for byte
        assert _by_key(new[checkpoint]) == _by_key(one_batch[checkpoint])  # other batches: the same answers
        assert len(_by_key(new[checkpoint])) == 8
    assert new[CHECKPOINTS[0]] != new[CHECKPOINTS[1]]  # the checkpoints differ, so the swap did something
    # the budget did cut each task's answers into batches of 2 (~50 prompt tokens + 12 of answer each)
    from apa.checkpoint.layout import load_processor
    from apa.evaluation.examples import evaluation_examples
    from apa.evaluation.predictions import prompt_lengths
    from apa.sft.collate import SpeechSFTCollator

    processor = load_processor(str(two_epochs / CHECKPOINTS[0]))
    trained = OmegaConf.load(two_epochs / ".hydra" / "config.yaml")
    cfg = OmegaConf.merge(compose_eval_config("data=sample", "data.limit=4"), {"prompts": trained.prompts})
    rows = evaluation_examples(cfg, processor.tokenizer.audio_token)
    batcher = SpeechSFTCollator(processor)
    lengths = prompt_lengths(rows, batcher)
    assert lengths == [batcher.generation_inputs([row])["input_ids"].shape[1] for row in rows]  # exact, no decoding
    batches = plan_batches(rows, 256, lengths, 130, {"apa": 12, "mdd": 12})
    assert [len(b) for b in batches] == [2, 2, 2, 2]


def test_swapped_adapters_give_the_logits_of_a_fresh_load(two_epochs):
    from apa.evaluation.examples import evaluation_examples
    from apa.sft.collate import SpeechSFTCollator

    trained = OmegaConf.load(two_epochs / ".hydra" / "config.yaml")
    models = EvalModels(trained.model)
    for checkpoint in (*CHECKPOINTS, CHECKPOINTS[0]):  # back and forth
        model, processor = models.load(two_epochs / checkpoint)
        cfg = OmegaConf.merge(compose_eval_config("data=sample", "data.limit=2"), {"prompts": trained.prompts})
        rows = evaluation_examples(cfg, processor.tokenizer.audio_token)
        batch = SpeechSFTCollator(processor)(rows)
        batch.pop("labels")
        fresh, _ = load_for_eval(trained.model, two_epochs / checkpoint)
        with torch.no_grad():
            assert torch.equal(model(**batch).logits, fresh(**batch).logits), checkpoint
    assert models.base_loads == 1


def test_budget_batches_resume_to_an_identical_file(two_epochs, tmp_path):
    from apa.evaluation.examples import evaluation_examples

    trained = OmegaConf.load(two_epochs / ".hydra" / "config.yaml")
    model, processor = load_for_eval(trained.model, two_epochs / CHECKPOINTS[0])
    cfg = OmegaConf.merge(compose_eval_config("data=sample", "data.limit=4", *SHORT), {"prompts": trained.prompts})
    rows = evaluation_examples(cfg, processor.tokenizer.audio_token)
    full = tmp_path / "full" / "predictions.jsonl"
    generate_predictions(model, processor, rows, full, 256, dict(cfg.max_new_tokens), max_batch_tokens=130)
    lines = full.read_bytes().splitlines(keepends=True)
    part = tmp_path / "part" / "predictions.jsonl"
    part.parent.mkdir()
    part.write_bytes(b"".join(lines[:3]) + lines[3][:10])  # a crash in the middle of a batch's write
    generate_predictions(model, processor, rows, part, 256, dict(cfg.max_new_tokens), max_batch_tokens=130)
    assert part.read_bytes() == full.read_bytes()


def test_static_kv_cache_option_gives_the_same_predictions(two_epochs, tmp_path):
    from apa.evaluation.examples import evaluation_examples
    from apa.evaluation.predictions import generation_options

    trained = OmegaConf.load(two_epochs / ".hydra" / "config.yaml")
    model, processor = load_for_eval(trained.model, two_epochs / CHECKPOINTS[1])
    cfg = OmegaConf.merge(compose_eval_config("data=sample", "data.limit=2", *SHORT), {"prompts": trained.prompts})
    rows = evaluation_examples(cfg, processor.tokenizer.audio_token)
    files = {}
    for cache in ("null", "static"):
        options = generation_options(OmegaConf.merge(cfg, OmegaConf.from_dotlist([f"cache_implementation={cache}"])))
        assert options["generate_kwargs"].get("cache_implementation") == (None if cache == "null" else "static")
        files[cache] = tmp_path / cache / "predictions.jsonl"
        generate_predictions(model, processor, rows, files[cache], 256, dict(cfg.max_new_tokens), **options)
    assert files["static"].read_bytes() == files["null"].read_bytes()
