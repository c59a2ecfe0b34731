"""Token lengths of the examples, counted without decoding audio: the clip's frame count comes from its header, and
the processor's own rule turns it into audio tokens (one per 80 ms: frames = (samples - 400) // 160 + 1,
tokens = ceil(frames / 8)). The trainer's length-grouped batching, evaluation's batch planning and the benchmarks use
these lengths."""

from __future__ import annotations

import logging
import math
from statistics import mean

import soundfile as sf

from apa.constants import SAMPLING_RATE

log = logging.getLogger(__name__)


def audio_tokens(seconds: float) -> int:
    samples = int(round(seconds * SAMPLING_RATE))
    frames = max((samples - 400) // 160 + 1, 1)
    return math.ceil(frames / 8)


def clip_seconds(paths) -> dict[str, float]:
    """Duration of each distinct clip, from its header (no decoding)."""
    out: dict[str, float] = {}
    for path in paths:
        if path not in out:
            info = sf.info(path)
            out[path] = info.frames / info.samplerate
    return out


def example_lengths(rows: list[dict], processor) -> list[dict]:
    """Per example: seconds of audio and tokens of prompt text, audio, answer and in all (what the model sees)."""
    from apa.sft.collate import chat_text

    tokenizer = processor.tokenizer
    seconds_of = clip_seconds(row["audio_path"] for row in rows)
    out = []
    for row in rows:
        path = row["audio_path"]
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
