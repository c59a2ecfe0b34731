"""Held-out splits of the training data: whole speakers, so that validation measures new voices; and the utterances
two splits share."""

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


def shared_ids(first, second) -> list[str]:
    """The utterances in both `first` and `second` (Utterances or ids), by id, sorted: an utterance's identity in
    every split and every copy of a corpus. Training refuses a test split that shares any with its training split
    (apa.training.recipe.check_disjoint_splits); an evaluation warns of test utterances its run trained on
    (apa.evaluation.examples.trained_on)."""
    first_ids, second_ids = ({u if isinstance(u, str) else u.id for u in items} for items in (first, second))
    return sorted(first_ids & second_ids)
