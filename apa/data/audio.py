"""Audio decoding with soundfile and resampling with scipy.

Deliberately no torchaudio/torchcodec: their decoding now goes through FFmpeg, which broke the earlier public
attempt at this task. soundfile reads WAV/FLAC/OGG from a path or from bytes (the hub's parquet embeds bytes).
"""

from __future__ import annotations

import io
import logging
import os
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf

from apa.constants import SAMPLING_RATE

MIN_SECONDS = 0.1
log = logging.getLogger(__name__)
_BYTES_PER_SAMPLE = {"PCM_U8": 1, "PCM_S8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8}
_warned: set[tuple[str, str]] = set()  # (file, what): each warning once per process, not once per epoch


class AudioError(ValueError):
    """A clip that cannot be used. `kind` is a short category for skip counts; the message gives the detail."""

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind, self.detail = kind, detail


def decode_audio(
    source: str | Path | bytes,
    target_sr: int = SAMPLING_RATE,
    max_seconds: float | None = None,
) -> np.ndarray:
    """Decode to mono float32 at `target_sr`, rejecting clips no model should see."""
    if not isinstance(source, bytes) and not Path(source).is_file():
        what = "not a regular file" if Path(source).exists() else "missing audio file"  # a folder, a named pipe
        raise AudioError(what, str(source))
    try:
        data, sr = sf.read(io.BytesIO(source) if isinstance(source, bytes) else str(source), dtype="float32")
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioError("unreadable audio", str(e)) from e
    if not isinstance(source, bytes):
        _check_wav_length(Path(source), len(data))
    peak = float(np.abs(data).max()) if data.size else 0.0
    if peak > 1.001:  # float WAVs may hold any value; integer PCM decodes to [-1, 1)
        _warn_once(source, "scale", "samples reach %.3g, outside [-1, 1]: the recording is not scaled as audio "
                   "usually is (a float WAV written without normalising?); the model hears it as it is", peak)
    if data.ndim == 2:  # (frames, channels): downmix, since the encoder takes one channel
        data = data.mean(axis=1)
    if data.size == 0:
        raise AudioError("empty audio")
    if not np.isfinite(data).all():
        raise AudioError("NaN or infinite samples")
    if float(np.ptp(data)) < 1e-4:  # digital silence or a constant: a failed recording, though its labels say speech
        _warn_once(source, "silence", "the recording is silent (every sample within 1e-4 of %.3g): check the file; "
                   "its labels describe speech the model cannot hear", float(data.flat[0]))
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


def _warn_once(source, what: str, message: str, *args) -> None:
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    if (name, what) not in _warned:
        _warned.add((name, what))
        log.warning("%s: " + message, name, *args)


def _wav_data(path: Path) -> tuple[int, int] | None:
    """(where the samples start, how many bytes of them the header declares) of a RIFF WAV file, else None."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            pos = 12
            while True:
                f.seek(pos)
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                size = int.from_bytes(chunk[4:], "little")
                if chunk[:4] == b"data":
                    return pos + 8, size
                pos += 8 + size + (size & 1)  # chunks are padded to an even size
    except OSError:
        return None


def _check_wav_length(path: Path, frames: int) -> None:
    """Compare a WAV file's samples with what its header declares (libsndfile reads whichever is less, silently):
    - less data than declared (a copy or download cut short): refused, a counted skip, since its labels describe
      the whole sentence;
    - more than declared (a header written before the recording ended): the rest of the speech goes unheard; a
      warning."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError):
        return
    width = _BYTES_PER_SAMPLE.get(info.subtype)
    data = _wav_data(path) if info.format == "WAV" and width is not None else None
    if data is None:
        return
    offset, declared = data
    second = info.samplerate * info.channels * width  # bytes of one second of audio
    held = os.path.getsize(path) - offset
    if 0 < declared < 0xFFFFFFFF and held < declared - 0.1 * second:  # 0 and 2**32-1: written as a stream, no length
        raise AudioError("truncated audio", f"{path}: its header declares {declared / second:.2f} s, the file holds "
                         f"{held / second:.2f} s (a copy or download cut short?): copy the file again")
    extra = held - frames * info.channels * width
    if extra > 0.1 * second:  # more than 0.1 s of audio beyond the header's count
        _warn_once(path, "length", "the file holds %d bytes more than its WAV header declares (about %.1f s of "
                   "audio): only the declared %.2f s are read. Rewrite the header (e.g. `sox in.wav out.wav`)",
                   extra, extra / second, frames / info.samplerate)
