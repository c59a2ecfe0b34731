"""The FLOP model: what one training example and one generated answer cost, counted by part (language model, LoRA
and audio encoder matmuls, attention, checkpointing's recomputation), and the device peak that MFU divides by."""

from __future__ import annotations

import torch

# Dense bf16 peak of common cards (vendor data sheets), for MFU; --peak-tflops overrides.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0,
                    "RTX 4090": 165.0, "RTX 3090": 71.0}


def peak_tflops(override: float | None) -> float | None:
    """The device's dense bf16 peak in TFLOP/s: `override`, else the CUDA device's by name, else None."""
    if override:
        return override
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def mfu(flops_per_s: float, peak: float | None) -> float | None:
    """Model FLOPs utilization: achieved FLOP/s over the device's peak (None without a peak: no GPU, no override)."""
    return flops_per_s / (peak * 1e12) if peak else None


def flop_params(parameters: dict, model) -> dict:
    """The parameter counts the FLOP model reads: apa.checkpoint.loading.parameter_report's `parameters` (its groups)
    and the size of the embedding matrix, which is a lookup at the input and the LM head at the output."""
    embeddings = model.get_base_model().get_input_embeddings().weight
    return {**parameters, "embedding_params": embeddings.numel()}


def model_dims(model) -> dict[str, int]:
    """The sizes the attention FLOPs need, from the model's config (a PeftModel passes its base model's)."""
    config = model.config
    text = config.get_text_config()
    audio = config.audio_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return {"lm_layers": text.num_hidden_layers, "lm_attention_width": text.num_attention_heads * head_dim,
            "audio_layers": audio.num_blocks, "audio_width": audio.hidden_size}


def flop_breakdown(params: dict, dims: dict, tokens: list[int], audio_tokens: float, checkpointing: bool,
                   unfrozen: bool, answer_tokens: float = 0.0) -> dict[str, float]:
    """FLOPs of one training example (mean over `tokens`, each an example's total length), by part:

    - lm_matmul: the frozen language model's weight matmuls (the embedding matrix left out), 2N per token forward,
      2N backward (activation gradients only: its weights are frozen), 2N again under activation checkpointing;
    - lm_head: the tied embedding matrix as the output projection, which TRL's fused loss applies at the
      `answer_tokens` labelled positions only: 2E forward + 2E backward each (not checkpointed);
    - lora_matmul: the LoRA matrices, trained: 2N forward, 4N backward (activation and weight gradients), +2N under
      checkpointing;
    - lm_attention: scores and weighted sums of the causal self-attention, only the causal half counted:
      2 x layers x width x L^2 forward per example of L tokens, x3 with the backward, x4 with checkpointing;
    - audio_matmul and audio_attention: the conformer at the audio-token rate (its conv subsampling before that is
      not counted), bidirectional attention (4 x layers x width x A^2 forward), forward only unless model.unfreeze
      trains it (then x3; its layers are not checkpointed). A is the mean audio length, so its square is a floor.
    """
    groups = params["groups"]
    lm = groups["language_model"]["total"] - params.get("embedding_params", 0)
    lora = groups["lora"]["total"]
    audio = groups["audio_encoder"]["total"] + groups["audio_projector"]["total"]
    mean_l = sum(tokens) / len(tokens)
    mean_l2 = sum(n * n for n in tokens) / len(tokens)
    out = {
        "lm_matmul": (6 if checkpointing else 4) * lm * mean_l,
        "lm_head": 4 * params.get("embedding_params", 0) * answer_tokens,
        "lora_matmul": (8 if checkpointing else 6) * lora * mean_l,
        "lm_attention": (4 if checkpointing else 3) * 2 * dims["lm_layers"] * dims["lm_attention_width"] * mean_l2,
        "audio_matmul": (6 if unfrozen else 2) * audio * audio_tokens,
        "audio_attention": (3 if unfrozen else 1) * 4 * dims["audio_layers"] * dims["audio_width"] * audio_tokens ** 2,
    }
    out["total"] = sum(out.values())
    return out


def generation_flops(params: dict, dims: dict, prompt: int, audio: int, generated: int) -> float:
    """Forward FLOPs of one answer: the prompt's prefill (LM + LoRA matmuls, causal attention, the audio encoder) and
    `generated` decoding steps, each attending to everything before it; the LM head once per generated token."""
    groups = params["groups"]
    lm = groups["language_model"]["total"] - params.get("embedding_params", 0) + groups["lora"]["total"]
    audio_params = groups["audio_encoder"]["total"] + groups["audio_projector"]["total"]
    attention = 2 * dims["lm_layers"] * dims["lm_attention_width"]
    prefill = 2 * lm * prompt + attention * prompt ** 2
    encoder = 2 * audio_params * audio + 4 * dims["audio_layers"] * dims["audio_width"] * audio ** 2
    decode = 2 * lm * generated + 2 * attention * (prompt * generated + generated ** 2 / 2)
    head = 2 * params.get("embedding_params", 0) * generated
    return prefill + encoder + decode + head
