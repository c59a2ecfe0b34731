"""Audio decoding with soundfile and resampling with scipy.

Deliberately no torchaudio/torchcodec: their decoding now goes through FFmpeg, which broke the earlier public
attempt at this task. soundfile reads WAV/FLAC/OGG from a path or from bytes (the hub's parquet embeds bytes).
"""

from __future__ import annotations

import io
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf

from apa.constants import SAMPLING_RATE

MIN_SECONDS = 0.1


class AudioError(ValueError):
    """A clip that cannot be used. `kind` is a short category for skip counts; the message gives the detail."""

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


def decode_audio(
    source: str | Path | bytes,
    target_sr: int = SAMPLING_RATE,
    max_seconds: float | None = None,
) -> np.ndarray:
    """Decode to mono float32 at `target_sr`, rejecting clips no model should see."""
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise AudioError("missing audio file", str(source))
    try:
        data, sr = sf.read(io.BytesIO(source) if isinstance(source, bytes) else str(source), dtype="float32")
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioError("unreadable audio", str(e)) from e
    if data.ndim == 2:  # (frames, channels): downmix, since the encoder takes one channel
        data = data.mean(axis=1)
    if data.size == 0:
        raise AudioError("empty audio")
    if not np.isfinite(data).all():
        raise AudioError("NaN or infinite samples")
    if sr != target_sr:
        from scipy.signal import resample_poly  # imported here: scipy.signal costs seconds and most corpora are 16 kHz

        g = gcd(int(sr), int(target_sr))
        data = resample_poly(data, target_sr // g, int(sr) // g).astype(np.float32)
    seconds = data.size / target_sr
    if seconds < MIN_SECONDS:
        raise AudioError("audio too short", f"{seconds:.3f} s < {MIN_SECONDS} s")
    if max_seconds is not None and seconds > max_seconds:
        raise AudioError("audio too long", f"{seconds:.1f} s > data.max_audio_seconds={max_seconds}")
    return data
