"""SpeechOcean762 readers, audio decoding and the bundled real sample."""

from pathlib import Path

SAMPLE_ROOT = Path(__file__).parent / "speechocean762_sample"
