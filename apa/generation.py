"""Batched greedy generation of answers for a list of examples."""

from __future__ import annotations

import torch

from apa.collate import chat_text
from apa.constants import END_TOKEN, SAMPLING_RATE
from apa.data.audio import decode_audio


def suppressed_token_ids(processor) -> list[int]:
    """Audio and image placeholder ids: a generated placeholder would break the next decoding step."""
    return sorted({processor.audio_token_id, processor.image_token_id})


@torch.no_grad()
def generate_answers(
    model, processor, rows: list[dict], max_new_tokens: int, audio: list | None = None
) -> list[str]:
    """Greedy answers for `rows` ({user_content, audio_path}) in one left-padded batch, cut at <|end|>."""
    tokenizer = processor.tokenizer
    tokenizer.padding_side = "left"  # generation continues from the last position of every row
    texts = [chat_text(processor, r["user_content"], None) for r in rows]
    audio = audio if audio is not None else [decode_audio(r["audio_path"]) for r in rows]
    inputs = processor(text=texts, audio=audio, sampling_rate=SAMPLING_RATE, return_tensors="pt", padding=True)
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in inputs.items()}
    end_ids = [tokenizer.convert_tokens_to_ids(END_TOKEN), tokenizer.eos_token_id]
    out = model.generate(
        **inputs,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        eos_token_id=end_ids,
        pad_token_id=tokenizer.pad_token_id,
        suppress_tokens=suppressed_token_ids(processor),
    )
    new_tokens = out[:, inputs["input_ids"].shape[1] :]
    return [tokenizer.decode(seq, skip_special_tokens=True).strip() for seq in new_tokens]

