"""Batch examples into Phi-4-multimodal inputs with labels that teach only the answer."""

from __future__ import annotations

import logging
from typing import Any

import torch

from apa.constants import ASSISTANT_TOKEN, SAMPLING_RATE
from apa.data.audio import decode_audio

log = logging.getLogger(__name__)
IGNORE_INDEX = -100


def chat_text(processor, user_content: str, answer: str | None) -> str:
    """The conversation through the checkpoint's chat template: with an answer for training, open for generation."""
    messages = [{"role": "user", "content": user_content}]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return processor.tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=answer is None
    )


class SpeechSFTCollator:
    """Rows {id, task, audio_path, user_content, answer} -> processor features + labels.

    Labels are -100 on everything up to and including the last `<|assistant|>` (the prompt and its audio
    placeholders) and on padding; the answer, its `<|end|>` and the final end-of-text are learned. Because
    `<|assistant|>` is a special token, tokenizing the whole conversation splits exactly where the answer begins.
    """

    def __init__(self, processor, max_length: int | None = None):
        self.processor = processor
        self.max_length = max_length
        self.assistant_id = processor.tokenizer.convert_tokens_to_ids(ASSISTANT_TOKEN)
        self.audio_id = processor.audio_token_id

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        self.processor.tokenizer.padding_side = "right"
        texts = [chat_text(self.processor, r["user_content"], r["answer"]) for r in rows]
        audio = [decode_audio(r["audio_path"]) for r in rows]
        batch = self.processor(
            text=texts, audio=audio, sampling_rate=SAMPLING_RATE, return_tensors="pt", padding=True
        )
        input_ids = batch["input_ids"]
        labels = input_ids.clone()
        for i, row in enumerate(input_ids):
            starts = (row == self.assistant_id).nonzero()
            if len(starts) == 0:
                raise ValueError(f"example {rows[i]['id']} has no {ASSISTANT_TOKEN}: the chat template lost the answer")
            labels[i, : int(starts[-1]) + 1] = IGNORE_INDEX
        labels[batch["attention_mask"] == 0] = IGNORE_INDEX
        labels[input_ids == self.audio_id] = IGNORE_INDEX
        if self.max_length and input_ids.shape[1] > self.max_length:
            long = [r["id"] for r, n in zip(rows, batch["attention_mask"].sum(1), strict=True) if n > self.max_length]
            log.warning("examples %s are longer than max_length=%d; kept whole (no answer is truncated)",
                        long, self.max_length)
        batch["labels"] = labels
        return dict(batch)
