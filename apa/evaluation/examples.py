"""The test examples of an evaluation: both tasks for every usable utterance of the test split, each with the
reference it is scored against; and the training split's mean scores (what an unparsed APA answer is imputed with).
"""

from __future__ import annotations

from dataclasses import asdict

from omegaconf import DictConfig

from apa.data.labels import SkipReport
from apa.data.records import APA_ASPECTS
from apa.data.sources import load_configured_split
from apa.data.stats import phone_stats
from apa.sft.prompts import apa_target, build_examples, mdd_target


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
