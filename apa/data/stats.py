"""Dataset statistics: the phones of a split (L2 phones of the corpus's original release counted apart).
(Token lengths: apa.sft.lengths.)

synthetic_corpus() stands in for the full training set (lengths only), and batch_mix() counts what a training order
does with it: padding, and the mix of tasks in each optimizer step.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from statistics import mean, pstdev

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


# ---------------------------------------------------------------------------------------------------------------
# A corpus-sized stand-in, and what a training order does with it
# ---------------------------------------------------------------------------------------------------------------

CORPUS_SECONDS = (1.6, 20.0)  # SpeechOcean762: clips from 1.6 s to 20 s
CORPUS_MEAN_SECONDS = 4.3
SYNTHETIC_SIGMA = 0.45  # log-space spread: an assumption (the corpus documents its range and mean only)
# Text tokens of the default prompts and of the answers, as the tiny model's tokenizer counts the bundled sample
# (docs/benchmarks.md): the APA prompt 262 (its rubric), the MDD prompt 73; the APA answer (four integers as JSON) 22;
# the MDD answer (words and phonemes) grows with the clip: 7.6 + 9.0 tokens per second, residual spread 4 tokens.
SYNTHETIC_PROMPT = {"apa": 262, "mdd": 73}
SYNTHETIC_APA_ANSWER = 22
SYNTHETIC_MDD_ANSWER = (7.6, 9.0, 4.0)  # intercept, tokens per second, standard deviation


def _phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def _truncated_lognormal_mean(mu: float, sigma: float, low: float, high: float) -> float:
    a, b = math.log(low), math.log(high)
    inside = _phi((b - mu) / sigma) - _phi((a - mu) / sigma)
    shifted = _phi((b - mu - sigma**2) / sigma) - _phi((a - mu - sigma**2) / sigma)
    return math.exp(mu + sigma**2 / 2) * shifted / inside


def _lognormal_mu(mean_seconds: float, sigma: float, low: float, high: float) -> float:
    """The log-space location whose lognormal, truncated to [low, high], has mean `mean_seconds` (bisection)."""
    lo, hi = math.log(low), math.log(high)
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _truncated_lognormal_mean(mid, sigma, low, high) < mean_seconds else (lo, mid)
    return (lo + hi) / 2


def synthetic_corpus(utterances: int = 2500, seed: int = 0) -> list[dict]:
    """Token lengths of a SpeechOcean762-sized training set (2,500 utterances x APA + MDD = 5,000 examples), without
    audio or a model: the rows have example_lengths' fields (task, seconds, prompt, audio, answer, total).

    Clip durations: lognormal with log-space spread sigma = 0.45, truncated to [1.6 s, 20 s] (SpeechOcean762's
    range) and located so that the truncated mean is 4.3 s, the corpus mean (mu = 1.34, so the untruncated median
    is 3.8 s; about 3 % of the untruncated law lies below 1.6 s and is redrawn, next to nothing above 20 s). Drawn
    with random.Random(seed) by rejection, so durations are continuous, not resampled ties; seed 0 gives 1.60-13.6 s,
    mean 4.34 s, median 3.92 s. Audio tokens follow the processor's rule (audio_tokens: one per 80 ms of 16 kHz
    audio). Text tokens: SYNTHETIC_PROMPT and the answer lengths above, so an APA example is ~185 tokens longer than
    the MDD example of the same clip at 2 s and ~150 at 6 s. The spread sets how far long MDD examples reach into
    the APA lengths, hence how well sorting by length separates the tasks: Hugging Face's grouping leaves ~70 % of
    optimizer steps single-task here, roughly 75-80 % with sigma 0.4 and 60-70 % with 0.5 (three corpus seeds each).
    """
    from apa.sft.lengths import audio_tokens  # (a benchmark's helper; apa.bench is its home)

    low, high = CORPUS_SECONDS
    mu = _lognormal_mu(CORPUS_MEAN_SECONDS, SYNTHETIC_SIGMA, low, high)
    rng = random.Random(seed)
    seconds: list[float] = []
    while len(seconds) < utterances:
        drawn = rng.lognormvariate(mu, SYNTHETIC_SIGMA)
        if low <= drawn <= high:
            seconds.append(drawn)
    intercept, per_second, spread = SYNTHETIC_MDD_ANSWER
    rows = []
    for clip in seconds:
        audio = audio_tokens(clip)
        mdd_answer = max(1, round(intercept + per_second * clip + rng.gauss(0, spread)))
        answers = {"apa": SYNTHETIC_APA_ANSWER, "mdd": mdd_answer}
        for task in ("apa", "mdd"):
            prompt = SYNTHETIC_PROMPT[task]
            rows.append({"task": task, "seconds": clip, "prompt": prompt, "audio": audio, "answer": answers[task],
                         "total": prompt + audio + answers[task]})
    return rows


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[round(q * (len(ordered) - 1))]


def batch_mix(order: list[int], lengths: list[int], tasks: list[str], batch_size: int, accumulation: int,
              world_size: int = 1, task: str = "apa") -> dict:
    """What a training order does, counted without a model.

    - padding_share: padded positions / all positions of the micro-batches (each of batch_size consecutive indices,
      right-padded to its longest example, as the collator pads);
    - per optimizer step (batch_size x accumulation x world_size consecutive indices; full steps only, the short
      last step of an epoch is left out): the share of `task` examples (mean, standard deviation, percentiles) and the
      share of steps that hold one task only.
    `order` may span several epochs, concatenated; steps and batches are then cut per epoch of len(lengths).
    """
    n = len(lengths)
    if n == 0 or len(order) % n:
        raise ValueError(f"order has {len(order)} indices: not whole epochs of {n}")
    real = padded = 0
    shares: list[float] = []
    step = batch_size * accumulation * world_size
    for epoch_start in range(0, len(order), n):
        epoch = order[epoch_start : epoch_start + n]
        for start in range(0, n, batch_size):
            batch = [lengths[i] for i in epoch[start : start + batch_size]]
            real += sum(batch)
            padded += max(batch) * len(batch)
        for start in range(0, n - step + 1, step):
            shares.append(sum(tasks[i] == task for i in epoch[start : start + step]) / step)
    ordered = sorted(shares)
    out = {"padding_share": 1 - real / padded, "steps": len(shares)}
    if shares:
        out.update({
            "single_task_steps": sum(s in (0.0, 1.0) for s in shares) / len(shares),
            f"{task}_share_mean": mean(shares),
            f"{task}_share_sd": pstdev(shares),
            **{f"{task}_share_p{q}": _percentile(ordered, q / 100) for q in (5, 25, 50, 75, 95)},
        })
    return out
