"""The FLOP model MFU counts: each part follows activation checkpointing and unfreezing as documented."""

import pytest

from apa.bench.flops import flop_breakdown

pytestmark = pytest.mark.slow  # end to end: `pytest -m "not slow"` leaves this module out


def test_matmuls_follow_checkpointing_and_unfreezing():
    params = {"groups": {"language_model": {"total": 1000}, "lora": {"total": 50}, "audio_encoder": {"total": 90},
                         "audio_projector": {"total": 10}}, "embedding_params": 200}
    dims = {"lm_layers": 2, "lm_attention_width": 8, "audio_layers": 1, "audio_width": 4}
    # 800 matmul weights x 4 (forward + activation backward) x 10 tokens; audio forward only: 100 x 2 x 3 tokens
    plain = flop_breakdown(params, dims, [10], 3, checkpointing=False, unfrozen=False)
    assert (plain["lm_matmul"], plain["audio_matmul"]) == (4 * 800 * 10, 2 * 100 * 3)
    both = flop_breakdown(params, dims, [10], 3, checkpointing=True, unfrozen=True)
    assert (both["lm_matmul"], both["audio_matmul"]) == (6 * 800 * 10, 6 * 100 * 3)


def test_flop_breakdown_counts_attention_lora_and_recomputation():
    params = {"groups": {"language_model": {"total": 1000}, "lora": {"total": 50}, "audio_encoder": {"total": 90},
                         "audio_projector": {"total": 10}}, "embedding_params": 200}
    dims = {"lm_layers": 2, "lm_attention_width": 8, "audio_layers": 1, "audio_width": 4}
    # examples of 10 and 20 tokens: mean 15, mean square 250; 3 audio tokens
    plain = flop_breakdown(params, dims, [10, 20], 3, checkpointing=False, unfrozen=False, answer_tokens=5)
    assert plain == {"lm_matmul": 4 * 800 * 15, "lm_head": 4 * 200 * 5, "lora_matmul": 6 * 50 * 15,
                     "lm_attention": 3 * 2 * 2 * 8 * 250, "audio_matmul": 2 * 100 * 3,
                     "audio_attention": 4 * 1 * 4 * 9, "total": plain["total"]}
    assert plain["total"] == sum(v for k, v in plain.items() if k != "total")
    both = flop_breakdown(params, dims, [10, 20], 3, checkpointing=True, unfrozen=True)
    assert (both["lm_matmul"], both["lora_matmul"], both["lm_attention"]) == (6 * 800 * 15, 8 * 50 * 15,
                                                                             4 * 2 * 2 * 8 * 250)
    assert (both["audio_matmul"], both["audio_attention"]) == (6 * 100 * 3, 3 * 4 * 1 * 4 * 9)
