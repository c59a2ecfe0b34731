"""Held-out splits of the training data: whole speakers, so that validation measures new voices."""

from __future__ import annotations

import logging
import random
from collections import Counter

from apa.data.labels import DataError
from apa.data.records import Utterance

log = logging.getLogger(__name__)


def split_by_speaker(utterances: list[Utterance], fraction: float,
                     seed: int) -> tuple[list[Utterance], list[Utterance]]:
    """(train, validation): whole speakers held out, picked in a seeded order until `fraction` of the utterances are,
    so validation loss measures generalisation to new voices rather than to new sentences of known ones."""
    counts = Counter(u.speaker for u in utterances)
    if len(counts) < 2:
        raise DataError(f"data.validation_fraction={fraction} needs at least 2 speakers in the training split; "
                        f"found {len(counts)}: set it to 0 (no validation split)")
    speakers = sorted(counts)
    random.Random(seed).shuffle(speakers)
    held, n_held = set(), 0
    for speaker in speakers[:-1]:  # at least one speaker always stays in training
        if n_held >= fraction * len(utterances):
            break
        held.add(speaker)
        n_held += counts[speaker]
    log.info("validation split: %d of %d speakers held out (%d utterances)", len(held), len(counts), n_held)
    return [u for u in utterances if u.speaker not in held], [u for u in utterances if u.speaker in held]
