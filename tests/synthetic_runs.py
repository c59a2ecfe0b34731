"""Run folders as evaluation leaves them, written without training: the bundled sample's test utterances (or
synthetic copies of them, for size) with noisy answers. For the report's tests, which need parsed answers, outcomes
of every kind and (for the scale test) thousands of utterances; the tiny trained model answers almost nothing."""

from __future__ import annotations

import json
import random
from pathlib import Path

from apa.data import SAMPLE_ROOT
from apa.data.records import APA_ASPECTS
from apa.data.sources import load_split
from apa.evaluation.predictions import metrics_json
from apa.metrics import compute_metrics
from apa.run_folder import write_record

PHONES = "AA AE AH AO B D EH ER IH IY K L M N P R S T UW Z".split()


def _noisy(phones: list[str], rng: random.Random, rate: float) -> list[str]:
    out = []
    for p in phones:
        roll = rng.random()
        if roll < rate:  # substitution
            out.append(rng.choice(PHONES))
        elif roll < 1.5 * rate:  # deletion
            continue
        else:
            out.append(p)
        if rng.random() < rate / 2:  # insertion
            out.append(rng.choice(PHONES))
    return out


def predictions(utterances, rng: random.Random, unparsed: float, noise: int, rate: float) -> list[dict]:
    rows = []
    for i, u in utterances:
        scores = {a: u.scores[a] for a in APA_ASPECTS}
        if rng.random() < unparsed:
            rows.append({"id": i, "task": "apa", "reference": scores, "prediction": None, "raw": "I think {score"})
        else:
            pred = {a: min(10, max(0, s + rng.randint(-noise, noise))) for a, s in scores.items()}
            rows.append({"id": i, "task": "apa", "reference": scores, "prediction": pred, "raw": json.dumps(pred)})
        reference = {"word_transcript": u.text, "phoneme_transcript": " ".join(u.annotated_phones),
                     "canonical_phones": " ".join(u.canonical_phones)}
        if rng.random() < unparsed:
            rows.append({"id": i, "task": "mdd", "reference": reference, "prediction": None, "raw": "<unk> <b>words"})
        else:
            pred = {"word_transcript": u.text, "phoneme_transcript": " ".join(_noisy(u.annotated_phones, rng, rate))}
            rows.append({"id": i, "task": "mdd", "reference": reference, "prediction": pred, "raw": json.dumps(pred)})
    return rows


def make_sweep(root: Path, runs: tuple[str, ...] = ("fresh_r64_1", "pretrained_r320_0"), epochs: int = 2,
               n_utterances: int | None = None, seed: int = 0, splits: tuple[str, ...] = ("test",),
               tiny: bool = False, unparsed: float = 0.15) -> Path:
    """root/<run>/ with its run record (training_config.json as a finished training leaves it: format version, loss
    history, num_train_epochs a float as the trainer's schema stores it), checkpoint-epoch-<N>/trainer_state.json
    and eval/<checkpoint>/predictions.jsonl + metrics.json for every epoch and final_model (final_model only with
    epochs=0, as experiment=overfit leaves it). n_utterances beyond the sample's 20 test utterances are copies, ids
    SYN<n>, that answer as their original (no audio, no speaker). A run "evaluated" on the train split is scored on
    the split it trained on (data.test_split = train, as experiment=overfit); tiny: the record says model=tiny (random
    weights); unparsed: the share of answers that do not parse (1.0: the demo's random model)."""
    means = {a: 5.0 for a in APA_ASPECTS}
    for r, name in enumerate(runs):
        split = splits[r % len(splits)]  # the split this run was "evaluated" on (the sample's has one speaker each)
        test = load_split("local", str(SAMPLE_ROOT), split, max_bad_fraction=0.0, decode=False)
        n = n_utterances or len(test)
        utterances = [(u.id, u) for u in test][:n]
        data = {"name": "sample", "source": "local", "path": str(SAMPLE_ROOT), "hub_id": None, "revision": None,
                "labels": "2024", "train_split": "train", "test_split": split, "limit": None, "max_bad_fraction": 0.05,
                "max_audio_seconds": 30.0, "on_label_mismatch": "error", "max_bad_fraction_test": 0.0,
                "validation_fraction": 0.0, "feature_cache_mb": 1024.0}
        run = root / name
        lora = name.rsplit("_", 1)[0]
        rank = 320 if "320" in lora else 64
        record = {
            "config": {"model": {"name": "tiny", "tiny": tiny}, "lora": {"name": lora, "r": rank, "alpha": 2 * rank},
                       "trainer": {"num_train_epochs": float(epochs), "learning_rate": 1e-3}, "data": data,
                       "seed": 0},
            "parameters": {"total": 1_000_000, "trainable": 1000 * rank, "trainable_share": rank / 1000,
                           "groups": {"lora": {"total": 1000 * rank, "trainable": 1000 * rank}}},
            "data": {"train_examples": 8, "train_stats": {"hours": 0.004}, "world_size": 1,
                     "dataset": {"name": "sample", "source": "local", "labels": "2024", "path": str(SAMPLE_ROOT)}},
            "library_versions": {"torch": "2.13.0"}, "git_commit": "0123456789abcdef",
            "started": "2026-11-28T10:00:00+0000", "finished": "2026-11-28T10:01:00+0000",
            "train_seconds": 60.0 + r, "global_steps": 4 * epochs, "train_metrics": {"train_samples_per_second": 1.5},
            "final_train_loss": 1.0 / (r + 1),
        }
        run.mkdir(parents=True)
        rng = random.Random(seed * 1000 + r)
        history = []
        for epoch in range(1, epochs + 1):
            history += [{"step": 4 * (epoch - 1) + s, "epoch": epoch - 1 + s / 4, "loss": 5.0 / (4 * epoch + s - 3)}
                        for s in range(1, 5)]
            checkpoint = run / f"checkpoint-epoch-{epoch}"
            checkpoint.mkdir()
            (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 4 * epoch,
                                                                       "log_history": history}))
        # as training completes it: the format version, and the loss by optimizer step
        write_record(run, {**record, "loss_history": [[h["step"], h["loss"]] for h in history]})
        for name_ in [f"checkpoint-epoch-{e}" for e in range(1, epochs + 1)] + ["final_model"]:
            rows = predictions(utterances, rng, unparsed=unparsed, noise=3, rate=0.15)
            metrics = compute_metrics(rows, means)
            # copies answer as their original did: cheap to score, and the metrics are those of the originals
            rows += [{**rows[2 * (k % len(utterances)) + t], "id": f"SYN{k:06d}"}
                     for k in range(len(utterances), n) for t in (0, 1)]
            folder = run / "eval" / name_
            folder.mkdir(parents=True)
            (folder / "predictions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
            (folder / "metrics.json").write_text(metrics_json(metrics))
    return root
