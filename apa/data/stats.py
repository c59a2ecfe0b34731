"""Dataset statistics: the phones of a split (L2 phones of the corpus's original release counted apart).
(Token lengths: apa.sft.lengths.)
"""

from __future__ import annotations

import logging
from collections import Counter

from apa.data.records import DELETED, L2_PHONES, UNKNOWN_PHONE

log = logging.getLogger(__name__)


def phone_stats(utterances, split: str) -> dict:
    """Log and return the phones of `utterances`: canonical phones and what was said at them (from the annotation),
    how many of each are L2 phones of the original release (IR, AR, TR, DZ, TS, DR; a distorted `IR*` counts as
    IR), and the mispronunciations by kind."""
    canonical, said, kinds = Counter(), Counter(), Counter()
    for utt in utterances:
        for expected, truth in zip(utt.canonical_phones, utt.phone_truth, strict=True):
            canonical[expected] += 1
            if truth == DELETED:
                kinds["deleted"] += 1
                continue
            said[truth.removesuffix("*")] += 1
            if truth != expected:
                kinds["unk" if truth == UNKNOWN_PHONE else "distorted" if truth.endswith("*") else "substituted"] += 1
    l2 = {p: {"canonical": canonical[p], "said": said[p]} for p in sorted(L2_PHONES) if canonical[p] or said[p]}
    stats = {
        "utterances": len(utterances),
        "canonical_phones": sum(canonical.values()),
        "canonical_l2_phones": sum(canonical[p] for p in L2_PHONES),
        "said_phones": sum(said.values()),
        "said_l2_phones": sum(said[p] for p in L2_PHONES),
        "l2_phones": l2,
        "mispronounced": {k: kinds[k] for k in ("substituted", "distorted", "unk", "deleted")},
    }
    l2_text = ", ".join(f"{p} {n['canonical']}/{n['said']}" for p, n in l2.items()) or "none"
    log.info("%s: %d utterances, %d canonical phones (%d L2), %d said (%d L2; L2 canonical/said: %s); "
             "mispronounced: %s", split, stats["utterances"], stats["canonical_phones"],
             stats["canonical_l2_phones"], stats["said_phones"], stats["said_l2_phones"], l2_text,
             ", ".join(f"{n} {k}" for k, n in stats["mispronounced"].items()))
    return stats
