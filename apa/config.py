"""The run config's schema. Registered with Hydra's ConfigStore, so a misspelt key or a wrong type fails at
compose time with Hydra's own message, before any model is loaded.

The `trainer` node is generated from TRL's `SFTConfig` fields: every SFTConfig field can be set or overridden
(`trainer.num_train_epochs=4`), and nothing else can.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from importlib.metadata import version
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from apa.checkpoint.tiny import TinySpec
from apa.constants import SPEECH_LORA_TARGET_REGEX, cache_root
from apa.data import SAMPLE_ROOT
from apa.errors import UserError
from apa.run_folder.naming import RESOLVERS

for _name, _resolver in RESOLVERS.items():  # run, sweep, job and evaluation folder names (conf/hydra/*.yaml)
    OmegaConf.register_new_resolver(_name, _resolver, replace=True)
OmegaConf.register_new_resolver("apa_sample_root", lambda: str(SAMPLE_ROOT), replace=True)


class Choice(str, Enum):
    """A closed set of values for a config key: a wrong one fails when Hydra composes the config, naming the
    choices. Members are strings (`Source.hub == "hub"`), print as their value and are saved as it (JSON, YAML)."""

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__


class Dtype(Choice):
    auto = "auto"  # bf16 on a bf16 GPU, else float32
    bfloat16 = "bfloat16"
    float32 = "float32"


class Source(Choice):
    local = "local"  # the corpus's original layout under data.path
    hub = "hub"  # the hub's parquet (data.hub_id at data.revision)
    disk = "disk"  # a datasets.save_to_disk folder under data.path


class TrainableDtype(Choice):
    float32 = "float32"  # fp32 master weights for the unfrozen modules, as PEFT keeps LoRA weights (bf16 compute)
    bfloat16 = "bfloat16"  # the base dtype, as PEFT's modules_to_save copies have it: small updates are lost


class OnLabelMismatch(Choice):
    error = "error"  # stop, naming utterance, word and index
    skip = "skip"  # leave the utterance out, counted


class BootstrapUnit(Choice):
    speaker = "speaker"  # resample speakers (clusters of utterances): the honest interval, the default
    utterance = "utterance"  # resample utterances as if independent: narrower, under-covers with a speaker effect


@dataclass
class ModelConfig:
    name: str = MISSING
    path: str | None = None  # hub id or local folder of the native (transformers) checkpoint
    revision: str | None = None  # hub branch/tag/commit; the native weights sit at refs/pr/70 (see README)
    dtype: Dtype = Dtype.auto
    attn_implementation: str = "sdpa"
    tiny: TinySpec | None = None  # set: generate a tiny checkpoint with these sizes instead of loading `path`
    random: bool = False  # the full-size architecture with random weights (apa.checkpoint.full_size), for benchmarks
    unfreeze: list[str] = field(default_factory=list)  # also train whole modules: audio_encoder, audio_projector
    trainable_dtype: TrainableDtype = TrainableDtype.float32  # the unfrozen modules' weights (README: Unfreeze)
    cache_dir: str | None = None  # where tiny checkpoints are generated (default ~/.cache/apa or $APA_CACHE_DIR)


@dataclass
class LoraSchema:
    name: str = MISSING
    r: int = MISSING
    alpha: int = MISSING
    dropout: float = MISSING
    target_modules: str = SPEECH_LORA_TARGET_REGEX
    init_from: str | None = None  # subfolder of the model holding an adapter to continue (speech-lora)
    train_control_tokens: bool = False  # also train the <|APA|>/<|MDD|> embedding rows (the paper trains LoRA only)


@dataclass
class DataConfig:
    name: str = MISSING
    source: Source = Source.local
    path: str | None = None
    hub_id: str = "mispeech/speechocean762"  # a hub dataset id, or a local folder holding the hub's parquet files
    revision: str | None = None  # the hub dataset's commit (data.source=hub); apa.data.release
    labels: str | None = None  # which label release the data holds: original (the paper's) | 2024 (apa.data.release)
    train_split: str = "train"
    test_split: str = "test"
    limit: int | None = None  # use only the first N utterances of a split (demos, tests)
    max_bad_fraction: float = 0.05  # stop if more than this share of a split (train, ...) is unusable
    max_bad_fraction_test: float = 0.0  # the same for the test split: by default no test utterance may be skipped
    on_label_mismatch: OnLabelMismatch = OnLabelMismatch.error  # a mispronunciation index missing its canonical-phone
    max_audio_seconds: float | None = 30.0
    validation_fraction: float = 0.0  # > 0: hold out whole training speakers for an eval loss per epoch
    feature_cache_mb: float = 1024  # per dataloader process: log-mel features kept across batches and epochs; 0 = off


@dataclass
class PromptsConfig:
    name: str = MISSING
    apa: str = MISSING
    mdd: str = MISSING


_SCALARS = {"bool": bool, "int": int, "float": float, "str": str}


@functools.cache
def trainer_schema() -> type:
    """A dataclass with one optional field per SFTConfig field, typed as SFTConfig annotates it (bool, int, float,
    str; anything else Any), so that `trainer.learning_rate=abc` fails at compose time; unset (None) fields keep
    SFTConfig's default."""
    fields = [(name, typing.Optional[_SCALARS[kind]] if kind in _SCALARS else Any, field(default=None))  # noqa: UP045
              for name, kind in sft_config_fields().items()]
    return dataclasses.make_dataclass("TrainerConfig", fields)


def _type_tag(hint: Any) -> str:
    """SFTConfig's annotation as a tag: the scalar it takes (None aside; an enum-or-str is a str), or 'any'."""
    import enum

    args = [a for a in (typing.get_args(hint) or (hint,)) if a is not type(None)]
    if len(args) == 2 and str in args and any(isinstance(a, type) and issubclass(a, enum.Enum) for a in args):
        return "str"
    if len(args) == 1 and args[0] in (bool, int, float, str):
        return args[0].__name__
    return "any"


def sft_config_fields() -> dict[str, str]:
    """SFTConfig's field names and type tags, cached per TRL/transformers version. Listing them means importing TRL
    (~25 s on a small machine); a process that only composes (a sweep's launcher, a command with a typo) should not
    pay that."""
    key = f"trl-{version('trl')}_transformers-{version('transformers')}"
    cache = cache_root() / "sft-config-fields-v2" / f"{key}.json"
    try:
        return json.loads(cache.read_text())
    except (OSError, ValueError):
        pass
    from trl import SFTConfig

    hints = typing.get_type_hints(SFTConfig)
    names = {f.name: _type_tag(hints[f.name]) for f in dataclasses.fields(SFTConfig) if f.init}
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(names))
        os.replace(tmp, cache)
    except OSError:  # a read-only cache only costs the import next time
        pass
    return names


@dataclass
class RunConfig:
    model: ModelConfig = MISSING
    lora: LoraSchema = MISSING
    trainer: Any = MISSING  # TrainerConfig, attached by the trainer group's schema
    data: DataConfig = MISSING
    prompts: PromptsConfig = MISSING
    seed: int = 42
    run_name: str | None = None  # the run (or sweep) folder's name; unset: <time>_<lora>_<overrides> (naming.py)
    resume: bool = False  # continue hydra.run.dir=<run> from its newest intact checkpoint, with the run's own config
    extend: bool = False  # with resume: train a (finished) run on to a larger trainer.num_train_epochs
    allow_other_versions: bool = False  # with resume: continue under library versions other than the run's (listed)


@dataclass
class MaxNewTokens:
    apa: int = 40
    mdd: int = 160


@dataclass
class BootstrapConfig:
    """The 95 % intervals evaluation writes beside each metric (apa.uncertainty; docs/metrics.md, Uncertainty)."""

    unit: BootstrapUnit = BootstrapUnit.speaker
    resamples: int = 2000
    seed: int = 0


@dataclass
class BaselineConfig:
    """How `evaluate.py` without run_dir runs the untrained model. The paper's "no training" row (§3.1) is the model
    with its own speech LoRA active (the remote-code model always ran speech with it) and no control tokens."""

    speech_lora: bool = True  # the checkpoint's speech-lora/ on; false: the bare base model (ignores audio)
    control_tokens: bool = False  # true: prompts start with <|APA|>/<|MDD|> (seeded new rows), as training sees them


@dataclass
class EvalConfig:
    model: ModelConfig = MISSING  # used for the base model (no run_dir); a run folder brings its own
    data: DataConfig = MISSING  # used when given on the command line or for the base model
    prompts: PromptsConfig = MISSING
    run_dir: str | None = None  # a folder written by train.py
    # final_model | all | checkpoint-epoch-<N>: an open set (any epoch), so a string checked before anything loads,
    # not an Enum like the closed choices above
    checkpoint: str = "final_model"
    predictions: str | None = None  # re-score this predictions.jsonl, no model
    batch_size: int = 256  # the most answers generated in one batch
    # ... and the most tokens one batch may hold: rows x (longest prompt incl. audio + max_new_tokens of the task).
    # Batches are planned once, from prompt lengths alone, in order of length.
    max_batch_tokens: int = 32768
    max_new_tokens: MaxNewTokens = field(default_factory=MaxNewTokens)
    cache_implementation: str | None = None  # "static": a KV cache allocated once per batch (transformers' option)
    compile: bool = False  # with cache_implementation=static on a GPU: let transformers torch.compile the decoding
    baseline: BaselineConfig = field(default_factory=BaselineConfig)  # only without run_dir
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    seed: int = 42


def register_configs(trainer: bool = True) -> None:
    """Register the schemas; `trainer=False` (evaluate.py) skips the trainer node and with it the import of TRL."""
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    cs.store(name="eval_schema", node=EvalConfig)
    cs.store(group="model", name="schema", node=ModelConfig)
    cs.store(group="lora", name="schema", node=LoraSchema)
    if trainer:
        cs.store(group="trainer", name="schema", node=trainer_schema())
    cs.store(group="data", name="schema", node=DataConfig)
    cs.store(group="prompts", name="schema", node=PromptsConfig)


class ConfigError(UserError, ValueError):
    """The composed config has an option the schema does not know; the message names it."""


def check_config(cfg: DictConfig, schema: type) -> None:
    """Before any model loads: every key known, every value in range.

    Hydra's `+key=value` adds a key even where the schema has none, so a misspelt `+lora.rnak=8` would be ignored
    without a word. Every key of the composed config must be a field of the schema (the trainer node: of SFTConfig).
    Types are the schema's (compose time); ranges are checked here (`value_problems`)."""
    unknown = list(_unknown_keys(cfg, schema, ""))
    if unknown:
        raise ConfigError(f"unknown config option(s) {', '.join(unknown)}: check the spelling (`--cfg job` prints "
                          "every option); a leading '+' adds keys that nothing reads")
    unset = [key for key in cfg if OmegaConf.is_missing(cfg, key)]
    if unset:  # `~lora` removed a group the run needs
        raise ConfigError(f"{', '.join(unset)} not set: give a value (`python train.py --help` lists each group's "
                          "options)")
    problems = value_problems(cfg)
    if problems:
        raise ConfigError("; ".join(problems))


# (dotted key, test, what it must be): checked where the key exists and is set
_RANGES: tuple[tuple[str, Any, str], ...] = (
    ("trainer.num_train_epochs", lambda v: v > 0, "a positive number of epochs"),
    ("trainer.max_steps", lambda v: v == -1 or v > 0, "positive, or -1 (use num_train_epochs)"),
    ("trainer.per_device_train_batch_size", lambda v: v >= 1, "at least 1"),
    ("trainer.gradient_accumulation_steps", lambda v: v >= 1, "at least 1"),
    ("trainer.learning_rate", lambda v: v > 0, "positive"),
    ("trainer.warmup_steps", lambda v: v >= 0, "0 or more (below 1: a fraction of all steps)"),
    ("trainer.weight_decay", lambda v: v >= 0, "0 or more"),
    ("trainer.max_grad_norm", lambda v: v >= 0, "0 or more (0: no gradient clipping)"),
    ("trainer.logging_steps", lambda v: v > 0, "positive (below 1: a fraction of all steps)"),
    ("trainer.save_steps", lambda v: v > 0, "positive (below 1: a fraction of all steps)"),
    ("trainer.eval_steps", lambda v: v > 0, "positive (below 1: a fraction of all steps)"),
    ("trainer.max_length", lambda v: v >= 1, "at least 1"),
    ("lora.r", lambda v: v >= 1, "at least 1"),
    ("lora.alpha", lambda v: v > 0, "positive"),
    ("lora.dropout", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("data.limit", lambda v: v >= 1, "at least 1, or null for the whole split"),
    ("data.labels", lambda v: str(v) in ("original", "2024"), "original (the paper's labels) or 2024 (the "
     "relabelling without L2 phones)"),
    ("data.max_bad_fraction", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("data.max_bad_fraction_test", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("data.max_audio_seconds", lambda v: v > 0, "positive, or null for no limit"),
    ("data.validation_fraction", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("data.feature_cache_mb", lambda v: v >= 0, "0 (off) or more"),
    ("seed", lambda v: 0 <= v < 2**32, "from 0 to 4294967295 (2^32 - 1)"),
    ("batch_size", lambda v: v >= 1, "at least 1"),
    ("max_batch_tokens", lambda v: v >= 1, "at least 1"),
    ("checkpoint", lambda v: v in ("final_model", "all") or bool(re.fullmatch(r"checkpoint-epoch-\d+", v)),
     "final_model, all or checkpoint-epoch-<N>"),
    ("bootstrap.resamples", lambda v: v >= 100, "at least 100 (2000 by default)"),
    ("max_new_tokens.apa", lambda v: v >= 1, "at least 1"),
    ("max_new_tokens.mdd", lambda v: v >= 1, "at least 1"),
)


def value_problems(cfg: DictConfig) -> list[str]:
    """`key=value: must be …` for every value out of its range (types are the schema's business)."""
    problems = []
    for key, ok, must in _RANGES:
        value = OmegaConf.select(cfg, key, default=None)
        if value is None or isinstance(value, (DictConfig, list)):
            continue
        try:
            good = bool(ok(value))
        except TypeError:
            good = False
        if not good or isinstance(value, bool):
            problems.append(f"{key}={value!r} must be {must}")
        elif isinstance(value, float) and not math.isfinite(value):  # inf passes `> 0`: trains to NaN weights
            problems.append(f"{key}={value!r} must be a finite number")
    return problems


def _unknown_keys(node: DictConfig, schema: type, prefix: str) -> Iterator[str]:
    hints = typing.get_type_hints(schema)
    for key in node:
        if key not in hints:
            yield f"{prefix}{key}"
            continue
        child = node._get_node(key)
        kind = trainer_schema() if (schema is RunConfig and key == "trainer") else _dataclass_in(hints[key])
        if kind is not None and isinstance(child, DictConfig) and not child._is_none():
            yield from _unknown_keys(child, kind, f"{prefix}{key}.")


def _dataclass_in(hint: Any) -> type | None:
    """The dataclass in a field's type (`TinySpec | None` -> TinySpec), if any."""
    candidates = typing.get_args(hint) or (hint,)
    return next((c for c in candidates if dataclasses.is_dataclass(c)), None)


def trainer_kwargs(trainer_cfg) -> dict[str, Any]:
    """The SFTConfig keyword arguments actually set in the config (None means: SFTConfig's default)."""
    values = OmegaConf.to_container(trainer_cfg, resolve=True)
    return {k: v for k, v in values.items() if v is not None}
