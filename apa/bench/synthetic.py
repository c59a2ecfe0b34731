"""A stand-in for the full training set, lengths only: how long would the examples of SpeechOcean762's 2,500 training
utterances be, without their audio or a model? (`apa bench --mode sampler` and the sampler's tests count on it.)"""

from __future__ import annotations

import math
import random

from apa.sft.lengths import audio_tokens

CORPUS_SECONDS = (1.6, 20.0)  # SpeechOcean762: clips from 1.6 s to 20 s
CORPUS_MEAN_SECONDS = 4.3
SYNTHETIC_SIGMA = 0.45  # log-space spread: an assumption (the corpus documents its range and mean only)
# Text tokens of the answers, as the tiny model's tokenizer counts the bundled sample (docs/benchmarks.md): the APA
# answer (four integers as JSON) 22; the MDD answer (words and phonemes) grows with the clip: 7.6 + 9.0 tokens per
# second, residual spread 4 tokens. Prompt tokens are the caller's (`apa bench --mode sampler` counts the configured
# prompts); SYNTHETIC_PROMPT is prompts=concise's, for the sampler's tests.
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


def synthetic_corpus(utterances: int = 2500, seed: int = 0, prompt: dict[str, int] | None = None) -> list[dict]:
    """Token lengths of a SpeechOcean762-sized training set (2,500 utterances x APA + MDD = 5,000 examples), without
    audio or a model: the rows have example_lengths' fields (task, seconds, prompt, audio, answer, total).

    Clip durations: lognormal with log-space spread sigma = 0.45, truncated to [1.6 s, 20 s] (SpeechOcean762's
    range) and located so that the truncated mean is 4.3 s, the corpus mean (mu = 1.34, so the untruncated median
    is 3.8 s; about 3 % of the untruncated law lies below 1.6 s and is redrawn, next to nothing above 20 s). Drawn
    with random.Random(seed) by rejection, so durations are continuous, not resampled ties; seed 0 gives 1.60-13.6 s,
    mean 4.34 s, median 3.92 s. Audio tokens follow the processor's rule (audio_tokens: one per 80 ms of 16 kHz
    audio). Text tokens: SYNTHETIC_PROMPT and the answer lengths above, so an APA example is ~185 tokens longer than
    the MDD example of the same clip at 2 s and ~150 at 6 s (with `prompt`, tokens per task's prompt text, those
    instead). The spread sets how far long MDD examples reach into
    the APA lengths, hence how well sorting by length separates the tasks: Hugging Face's grouping leaves ~70 % of
    optimizer steps single-task here, roughly 75-80 % with sigma 0.4 and 60-70 % with 0.5 (three corpus seeds each).
    """
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
            text = (prompt or SYNTHETIC_PROMPT)[task]
            rows.append({"task": task, "seconds": clip, "prompt": text, "audio": audio, "answer": answers[task],
                         "total": text + audio + answers[task]})
    return rows
