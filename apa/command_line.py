"""What a command line may say, checked before Hydra acts on it: the keys it sets, renamed config choices, output
folders that cannot be folders, run names that are not plain folder names, a quoted `~`; and the jobs a sweep's
command line makes (as Hydra's basic sweeper splits them), none of which may train the same config as another."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from apa.errors import UserError
from apa.run_folder.naming import check_run_name

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def override_keys(overrides: list[str]) -> list[str]:
    """The keys (or groups) a command line's overrides set, as Hydra's own parser reads them (`+data.x=1` -> data.x,
    `lora=a,b` -> lora)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return [o.key_or_group for o in OverridesParser.create().parse_overrides(list(overrides))]


# Config choices renamed: the old name is refused with one line naming the new one.
RENAMED_CHOICES = {("lora", "paper_r64"): "fresh_r64"}


def check_command_line(overrides: list[str]) -> None:
    """What Hydra would trip over before the job starts, refused in one line: a renamed config choice
    (`lora=paper_r64`, alone or in a sweep), an output folder (`hydra.run.dir`, `hydra.sweep.dir`) that is a
    file (Hydra's own mkdir would end in a traceback), a run name that is not a folder name, a quoted `~`."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides([o for o in overrides if "=" in o])
    except Exception:  # noqa: BLE001 - Hydra reports a malformed command line itself, in its own words
        return
    keys = [o.key_or_group for o in parsed if not o.is_delete()]
    for key in dict.fromkeys(k for i, k in enumerate(keys) if k in keys[:i]):  # Hydra keeps the last, silently
        given = [o.input_line for o in parsed if o.key_or_group == key]
        print(f"warning: {key} is given {len(given)} times ({' '.join(given)}): the last, {given[-1]}, is used",
              file=sys.stderr, flush=True)
    for override in parsed:
        if override.key_or_group in ("hydra.run.dir", "hydra.sweep.dir") and not override.is_sweep_override():
            folder = Path(str(override.value()))
            if folder.exists() and not folder.is_dir():
                raise UserError(f"{override.key_or_group}={folder} is a file, not a folder: choose another folder")
        _check_tilde(override)
        if override.key_or_group == "run_name":  # before Hydra makes a folder of it
            for value in override.sweep_string_iterator() if override.is_sweep_override() else [override.value()]:
                check_run_name(value)
    check_renamed_choices(overrides, parsed)


def _check_tilde(override) -> None:
    """`"data.path='~/corp'"`: the shell leaves a quoted `~` alone and Hydra passes it on as it is, so the path would
    be a folder named `~` in the working directory. Refused, naming the path the user meant."""
    try:
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
    except Exception:  # noqa: BLE001 - a sweep only a sweeper can list (an interval): nothing to check here
        return
    for value in values:
        if isinstance(value, str) and value.startswith("~") and not Path(value).exists():
            meant = Path(value).expanduser()
            missing = "" if meant.exists() else " (which does not exist either)"
            raise UserError(f"{override.key_or_group}={value}: `~` is not expanded after `key=` or inside quotes (the "
                            f"shell leaves it, Hydra passes it on as it is): give the path as {meant}{missing}")


def check_renamed_choices(overrides: list[str], parsed=None) -> None:
    """Refuse a command line that picks a renamed config choice (`lora=paper_r64`, alone or in a sweep)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if parsed is None:
        try:
            parsed = OverridesParser.create().parse_overrides([o for o in overrides if "=" in o])
        except Exception:  # noqa: BLE001 - Hydra reports a malformed command line itself, in its own words
            return
    for override in parsed:
        values = (list(override.sweep_string_iterator()) if override.is_sweep_override()
                  else [override.get_value_element_as_str()])
        for value in values:
            new = RENAMED_CHOICES.get((override.key_or_group, value))
            if new:
                raise UserError(f"{override.key_or_group}={value} was renamed {override.key_or_group}={new} (its "
                                "numbers are the seed author's, not the paper's): use the new name")


def sweep_jobs(config: DictConfig) -> list[list[list[str]]] | None:
    """The sweep's batches of jobs (each job its list of overrides), as Hydra's basic sweeper splits them; None
    for another sweeper."""
    if OmegaConf.select(config, "hydra.sweeper._target_") != BASIC_SWEEPER:
        return None
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    batch = OmegaConf.select(config, "hydra.sweeper.max_batch_size")
    return BasicSweeper.split_arguments(sweep_overrides(config), batch)


def sweep_overrides(config: DictConfig) -> list:
    """The sweep's overrides as Hydra parses them: the experiment's sweeper params, then the command line's."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [f"{k}={v}" for k, v in (OmegaConf.select(config, "hydra.sweeper.params") or {}).items()]
    return OverridesParser.create().parse_overrides([*params, *config.hydra.overrides.task])


def shared_keys(jobs: list[list[str]]) -> list[str]:
    """The override keys whose value is the same in every job (typed once, not swept)."""
    from apa.command_line import override_keys

    values = [dict(zip(override_keys(job), job, strict=True)) for job in jobs]
    return sorted(k for k in values[0] if all(v.get(k) == values[0][k] for v in values))


def check_distinct_jobs(jobs: list[list[str]], config_name: str, config: DictConfig) -> None:
    """Two jobs that would train the same config (a value swept twice, `lora=fresh_r64,fresh_r64`, or spelt
    twice, `trainer.num_train_epochs=2,2.0`) are refused: the second, same seed and all, would be the first again,
    not a replicate. A job whose config cannot be composed is left to fail when it runs, as before."""
    from hydra import compose

    seen: dict[str, int] = {}
    for n, job in enumerate(jobs):
        try:
            key = json.dumps(OmegaConf.to_container(compose(config_name=config_name, overrides=job)),
                             sort_keys=True, default=str)
        except Exception:  # noqa: BLE001 - the job reports it in its own words when it runs
            continue
        if key in seen:
            first = jobs[seen[key]]
            spelt = [" and ".join(pair) for pair in zip([o for o in first if o not in job],
                                                        [o for o in job if o not in first], strict=False)]
            swept = [(o, list(o.sweep_string_iterator())) for o in sweep_overrides(config) if o.is_sweep_override()]
            twice = [f"{o.key_or_group}={v} is given twice ({o.input_line})" for o, values in swept
                     for i, v in enumerate(values) if v in values[:i]]
            what = f"{spelt[0]} are one value" if spelt else twice[0] if twice else " ".join(job)
            raise UserError(f"jobs {seen[key]} and {n} of this sweep would train the same config: {what}. The "
                            "same config trains with the same seed, so the second job would repeat the first, not "
                            "replicate it: give each value once (for replicates, sweep the seed: seed=1,2,3)")
        seen[key] = n
