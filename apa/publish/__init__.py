"""A trained adapter out of its run folder: merged into a standalone checkpoint (`apa export`), or uploaded to the
Hugging Face hub with its card (`apa push`)."""

from __future__ import annotations

from pathlib import Path

from apa.errors import UserError
from apa.run_folder import FINAL_MODEL, TRAINING_RECORD, read_record


def final_model_of(path: Path) -> tuple[Path, Path]:
    """(run folder, its final_model/) for a run folder or its final_model/; anything else is a UserError naming
    what to pass. Both commands need the run's record beside the adapter: it says which base to merge into and what
    the card tells."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: no such folder; pass a run folder (with {TRAINING_RECORD}) or its {FINAL_MODEL}/")
    run_dir = path if (path / TRAINING_RECORD).is_file() else path.parent
    if read_record(run_dir) is None:
        raise UserError(f"{path} is neither a run folder written by train.py (no {TRAINING_RECORD}) nor the "
                        f"{FINAL_MODEL}/ inside one")
    adapter = run_dir / FINAL_MODEL
    if path not in (run_dir, adapter):
        raise UserError(f"{path} is not the run's {FINAL_MODEL}/: pass {run_dir} or {adapter} (an epoch checkpoint "
                        "holds optimizer state; its adapter is published once it is the final model)")
    if not (adapter / "adapter_config.json").is_file():
        raise UserError(f"{run_dir} has no {FINAL_MODEL}/ (training has not finished): finish it with `python "
                        f"train.py resume=true hydra.run.dir={run_dir}`")
    return run_dir, adapter
