"""Batched greedy generation of answers for a list of examples."""

from __future__ import annotations

from typing import Any

import torch

from apa.constants import END_TOKEN
from apa.sft.collate import SpeechSFTCollator


def decode_answer(tokenizer, token_ids) -> str:
    """Generated ids -> answer text, special tokens (<|end|>, padding) dropped. `<unk>`, the MDD answer's mark for
    an unclear phone, is ordinary text to Phi-4's tokenizer (pieces `<`, `unk`, `>`; its special tokens are the
    `<|...|>` markers), so it survives `skip_special_tokens` (tests/sft/test_prompts.py checks this on the tiny
    tokenizer, which is built the same way)."""
    return tokenizer.decode(token_ids, skip_special_tokens=True).strip()


def suppressed_token_ids(processor) -> list[int]:
    """Audio and image placeholder ids: a generated placeholder would break the next decoding step."""
    return sorted({processor.audio_token_id, processor.image_token_id})


@torch.no_grad()
def generate_answers(
    model, processor, rows: list[dict], max_new_tokens: int, audio: list | None = None,
    batcher: SpeechSFTCollator | None = None, **generate_kwargs: Any,
) -> list[str]:
    """Greedy answers for `rows` ({user_content, audio_path}) in one left-padded batch, cut at <|end|>. Inputs come
    from the training collator (`batcher`, whose feature cache a caller may keep across batches).

    `generate_kwargs` go to `model.generate` as they are: `cache_implementation="static"` (a KV cache allocated once
    for the batch), `disable_compile`, or `min_new_tokens` (apa.bench.generate forces answer lengths with it)."""
    tokenizer = processor.tokenizer
    batcher = batcher or SpeechSFTCollator(processor)
    inputs = batcher.generation_inputs(rows, audio)
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
        **generate_kwargs,
    )
    new_tokens = out[:, inputs["input_ids"].shape[1] :]
    return [decode_answer(tokenizer, seq) for seq in new_tokens]
