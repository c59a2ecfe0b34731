"""model.unfreeze trains fp32 master weights (model.trainable_dtype=float32, the default) on a bf16 base: small AdamW
updates reach every unfrozen weight, where bf16 weights lose most of them to rounding."""

import pytest
import torch

from apa.checkpoint.loading import attach_lora, load_base
from tests.conftest import compose_config

pytestmark = pytest.mark.slow  # end to end: `pytest -m "not slow"` leaves this module out


def _unfrozen(trainable_dtype: str):
    cfg = compose_config("experiment=demo", "lora=fresh_r64", "model.unfreeze=[audio_projector]",
                         f"model.trainable_dtype={trainable_dtype}")
    model, _, path = load_base(cfg.model)
    model = model.to(torch.bfloat16)  # the real checkpoint's weights on a bf16 GPU (this CPU loads float32)
    peft_model = attach_lora(model, cfg.lora, path, [], cfg.seed, cfg.model.unfreeze, None, cfg.model.trainable_dtype)
    return {n: p for n, p in peft_model.named_parameters() if p.requires_grad and ".modules_to_save." in n}


@pytest.mark.parametrize("trainable_dtype", ["float32", "bfloat16"])
def test_small_adamw_updates_reach_every_unfrozen_weight_in_fp32(trainable_dtype):
    params = _unfrozen(trainable_dtype)
    assert params and all(p.dtype == getattr(torch, trainable_dtype) for p in params.values())
    start = {n: p.detach().clone() for n, p in params.items()}
    optimizer = torch.optim.AdamW(params.values(), lr=2e-5, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    gradients = {n: torch.randn(p.shape, generator=gen).to(p.dtype) for n, p in params.items()}
    for _ in range(10):  # a steady gradient of any size: AdamW moves each weight by ~lr a step
        for n, p in params.items():
            p.grad = gradients[n].clone()
        optimizer.step()
    changed = sum(int((p.detach() != start[n]).sum()) for n, p in params.items())
    share = changed / sum(p.numel() for p in params.values())
    if trainable_dtype == "float32":
        assert share == 1.0
    else:
        assert share < 0.2  # a bf16 weight of std ~0.3 has a spacing of ~1e-3: steps of 2e-5 round away
