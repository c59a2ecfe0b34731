"""The test examples of an evaluation: both tasks for every usable utterance of the test split, each with the
reference it is scored against; the training split's mean scores (what an unparsed APA answer is imputed with); and
which test utterances the evaluated run trained on.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from apa.data.labels import SkipReport
from apa.data.records import APA_ASPECTS
from apa.data.release import corpus_digest
from apa.data.sources import load_configured_split
from apa.data.splits import shared_ids, split_by_speaker
from apa.data.stats import phone_stats
from apa.run_folder import METRICS, SPLIT_FILE, read_record
from apa.sft.prompts import apa_target, build_examples, mdd_target

log = logging.getLogger(__name__)


def mdd_reference(utt) -> dict[str, str]:
    """The MDD reference: the target, the canonical phones, and per canonical phone what was said there
    (`phone_truth`, token for token with `canonical_phones`: the phone, its substitute, `<unk>`, `X*` or `<del>`)."""
    return {**mdd_target(utt), "canonical_phones": " ".join(utt.canonical_phones),
            "phone_truth": " ".join(utt.phone_truth)}


def evaluation_set(cfg: DictConfig, audio_token: str, control_token: bool = True) -> tuple[list[dict], dict]:
    """(rows, split record): both tasks for every usable utterance of the test split, each with its reference; and
    what the split held (utterances, canonical phones, what was skipped and why, data.limit), for test_split.json."""
    report = SkipReport()
    utterances = load_configured_split(cfg.data, cfg.data.test_split, report=report)
    instructions = {"apa": cfg.prompts.apa, "mdd": cfg.prompts.mdd}
    rows = []
    for utt in utterances:
        references = {"apa": apa_target(utt), "mdd": mdd_reference(utt)}
        for ex in build_examples(utt, instructions, audio_token, control_token):
            rows.append({**asdict(ex), "reference": references[ex.task]})
    record = {"split": cfg.data.test_split, "source": cfg.data.source, "limit": cfg.data.limit, **report.as_dict(),
              "utterances_usable": len(utterances), "phones": phone_stats(utterances, cfg.data.test_split),
              "speakers": {utt.id: utt.speaker for utt in utterances}}  # the bootstrap's clusters (apa.uncertainty)
    return rows, record


def evaluation_examples(cfg: DictConfig, audio_token: str, control_token: bool = True) -> list[dict]:
    """Both tasks for every usable utterance of the test split, each with its reference."""
    return evaluation_set(cfg, audio_token, control_token)[0]


def train_means(cfg: DictConfig) -> dict[str, float]:
    """Mean human score per aspect on the training split: what an unparsed answer is replaced by."""
    utterances = load_configured_split(cfg.data, cfg.data.train_split, decode=False)
    return {a: sum(u.scores[a] for u in utterances) / len(utterances) for a in APA_ASPECTS}


def trained_ids(run_dir: Path, test_data: DictConfig) -> set[str]:
    """The ids of the utterances the run in `run_dir` trained on, read again as its record says it read them: its
    training split's labels (no audio is decoded), its data.limit, less the utterances it skipped and the validation
    speakers it held out. From the test data's folder where that is a copy of the run's corpus (the same contents,
    as evaluation_config finds a moved one)."""
    record = read_record(run_dir)
    run = OmegaConf.create(record["config"])
    data, recorded = run.data, ((record.get("data") or {}).get("dataset") or {}).get("content")
    if data.source == test_data.source == "local" and recorded and corpus_digest(test_data.path) == recorded:
        data.path = test_data.path
    utterances = load_configured_split(data, data.train_split, decode=False)[:data.limit or None]
    skipped = set(((record.get("data") or {}).get("train_split") or {}).get("skipped_ids") or [])
    utterances = [u for u in utterances if u.id not in skipped]
    if data.validation_fraction > 0:
        utterances = split_by_speaker(utterances, data.validation_fraction, run.seed)[0]
    return {u.id for u in utterances}


def trained_on(run_dir: Path, test_data: DictConfig, split: dict) -> dict:
    """{"utterances_trained_on": n} for the test split's record (`split`, from evaluation_set; test_split.json, and
    metrics.json's n_utterances_trained_on): how many of its utterances the run trained on, by id as training
    compares its splits (shared_ids), warned about when any. Not refused: scoring a run on what it learned is how
    experiment=overfit checks the pipeline. {} (logged) where the run's training data cannot be read again."""
    try:
        seen = shared_ids(split["speakers"], trained_ids(run_dir, test_data))
    except Exception as e:  # noqa: BLE001 - a courtesy check (its reader may fail in any library's way): go on
        log.warning("could not check which test utterances %s trained on (its training data cannot be read again: "
                    "%s); utterances_trained_on is left out of %s", run_dir, e, SPLIT_FILE)
        return {}
    if seen:
        log.warning("%d of the %d test utterances (data.test_split=%s) are ones %s trained on (%s%s): its figures on "
                    "them measure memorisation, not held-out speech. Recorded as utterances_trained_on in %s and "
                    "n_utterances_trained_on in %s", len(seen), len(split["speakers"]), split["split"], run_dir,
                    ", ".join(seen[:3]), " ..." if len(seen) > 3 else "", SPLIT_FILE, METRICS)
    return {"utterances_trained_on": len(seen)}
