"""What a command line may say, checked before Hydra acts on it: the keys it sets, renamed config choices, output
folders that cannot be folders, run names that are not plain folder names."""

from __future__ import annotations

from pathlib import Path

from apa.errors import UserError
from apa.run_folder.naming import check_run_name


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
            raise UserError(f"{override.key_or_group}={value}: `~` is not expanded inside quotes (Hydra passes it on "
                            f"as it is): give the path as {meant}" + ("" if meant.exists() else " (which does not "
                                                                        "exist either)"))


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
