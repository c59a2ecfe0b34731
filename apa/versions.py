"""The library versions a run or an evaluation ran under, and which of them change numbers.

Tokenization, kernels, generation and the training loop can change from one release of these libraries to the
next, so a resume or an evaluation under other versions is not the same computation: a resume lists the differences
and refuses unless the user allows them (`allow_other_versions=true`); an evaluation lists them and records both
sets in its fingerprint.json. No torch import: the run-folder checks use it before the heavy imports.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

# Versions that change a run's numbers (the resume check compares these).
NUMERIC_LIBRARIES = ("torch", "transformers", "tokenizers", "peft", "trl", "accelerate", "datasets")
# Recorded with them: configuration, audio decoding, the metrics' implementations, this project.
RECORDED_LIBRARIES = (*NUMERIC_LIBRARIES, "hydra-core", "omegaconf", "soundfile", "numpy", "scipy", "jiwer", "apa")
ALLOW_OPTION = "allow_other_versions=true"


def library_versions() -> dict[str, str]:
    out = {}
    for name in RECORDED_LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def version_differences(saved: dict | None, current: dict, names=NUMERIC_LIBRARIES) -> list[str]:
    """`name saved -> current` for each library of `names` whose version differs; a library the saved record does
    not list (a record of an older version of this project) counts as unknown, hence as different."""
    saved = saved or {}
    return [f"{name} {saved.get(name, 'unrecorded')} -> {current.get(name, 'not installed')}" for name in names
            if saved.get(name) != current.get(name)]
