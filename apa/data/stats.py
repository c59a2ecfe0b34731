"""Dataset statistics: the phones of a split (L2 phones of the corpus's original release counted apart), hours of
audio, and token lengths of prompt, audio and answer per task.

Lengths are counted without decoding audio: the clip's frame count comes from its header, and the processor's own
rule turns it into audio tokens (one per 80 ms: frames = (samples - 400) // 160 + 1, tokens = ceil(frames / 8)).
The trainer's length-grouped batching and apa.bench's padding share and time projection use these lengths.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from statistics import mean

import soundfile as sf

from apa.constants import SAMPLING_RATE
from apa.data.records import DELETED, L2_PHONES, UNKNOWN_PHONE

log = logging.getLogger(__name__)


def audio_tokens(seconds: float) -> int:
    samples = int(round(seconds * SAMPLING_RATE))
    frames = max((samples - 400) // 160 + 1, 1)
    return math.ceil(frames / 8)


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


def example_lengths(rows: list[dict], processor) -> list[dict]:
    """Per example: seconds of audio and tokens of prompt text, audio, answer and in all (what the model sees)."""
    from apa.collate import chat_text

    tokenizer = processor.tokenizer
    seconds_of: dict[str, float] = {}
    out = []
    for row in rows:
        path = row["audio_path"]
        if path not in seconds_of:
            info = sf.info(path)
            seconds_of[path] = info.frames / info.samplerate
        prompt = tokenizer(chat_text(processor, row["user_content"], None), add_special_tokens=False).input_ids
        full = tokenizer(chat_text(processor, row["user_content"], row["answer"]), add_special_tokens=False).input_ids
        n_audio = audio_tokens(seconds_of[path])
        prompt_text = len(prompt) - 1  # minus the audio placeholder, which expands to n_audio tokens
        answer = len(full) - len(prompt)
        out.append({"task": row["task"], "seconds": seconds_of[path], "prompt": prompt_text, "audio": n_audio,
                    "answer": answer, "total": prompt_text + n_audio + answer})
    return out


def summarize(lengths: list[dict], max_length: int | None, split: str, ids: list[str] | None = None) -> dict:
    """Log and return per-task statistics; name the examples longer than `max_length` (they are kept whole)."""
    seconds = {}
    for item in lengths:
        seconds.setdefault(item["task"], []).append(item["seconds"])
    hours = sum(seconds[next(iter(seconds))]) / 3600 if seconds else 0.0  # each clip appears once per task
    summary: dict = {"examples": len(lengths), "hours": round(hours, 4), "tasks": {}}
    lines = [f"{split}: {len(lengths)} examples, {hours:.3f} h of audio; tokens per example (mean / p95 / max):"]
    for task in sorted({item["task"] for item in lengths}):
        mine = [item for item in lengths if item["task"] == task]
        stats = {}
        for part in ("prompt", "audio", "answer", "total"):
            values = sorted(item[part] for item in mine)
            stats[part] = {"mean": round(mean(values), 1), "p95": values[int(0.95 * (len(values) - 1))],
                           "max": values[-1]}
        summary["tasks"][task] = {"examples": len(mine), **stats}
        lines.append(f"  {task}: " + ", ".join(
            f"{part} {s['mean']:.0f} / {s['p95']} / {s['max']}" for part, s in stats.items()))
    too_long = [i for i, item in enumerate(lengths) if max_length and item["total"] > max_length]
    summary["longer_than_max_length"] = len(too_long)
    if too_long:
        names = [ids[i] if ids else str(i) for i in too_long]
        lines.append(f"  {len(too_long)} examples are longer than max_length={max_length} and are kept whole "
                     f"(no answer is truncated): {', '.join(names[:10])}{' ...' if len(names) > 10 else ''}")
    log.info("\n".join(lines))
    return summary
