"""Merge a run's adapter into its base: a standalone checkpoint that plain transformers loads.

    apa export outputs/runs/<run> --out exported/<name> [--dtype auto|float32|bfloat16|float16]

Loads the base checkpoint the run trained on (its model config, revision included, with the same load-time checks as
training) in float32, puts the run's final_model/ on it as prediction does (`PeftModel.from_pretrained`: the LoRA,
with lora=pretrained_r320 the checkpoint's own speech LoRA as trained further, the control-token rows and any
unfrozen modules), merges it (`merge_and_unload`) and saves the weights in `--dtype` (auto: the base checkpoint's own,
bfloat16 for the released model), with the config, the tokenizer and the base's processor files, and the model
card. `AutoModelForCausalLM.from_pretrained(<out>)` loads it (Phi4MultimodalForCausalLM, no remote code). The merge
itself runs in float32 on the CPU: 4 bytes a parameter, about 24 GB for the released model and its r=320 LoRA.

The folder appears complete or not at all: it is written into a temporary folder beside `--out` and renamed into
place at the end. An `--out` that exists and is not empty is refused before anything loads.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from apa.errors import UserError, one_line_errors
from apa.publish import final_model_of
from apa.run_folder import MODEL_CARD, resolved_config, write_atomic

DTYPES = ("auto", "float32", "bfloat16", "float16")


def check_out(out: Path) -> None:
    """Never write into a user's folder: `out` must not exist, or be an empty folder."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} exists and is not empty; nothing was written. Choose a new folder (apa export "
                        "never writes into or replaces an existing one)")


def merged_model(model_cfg, adapter: Path, dtype: str):
    """The run's base with `adapter` merged into its weights, in `dtype` (auto: the base checkpoint's own)."""
    import torch
    from omegaconf import OmegaConf
    from transformers import AutoConfig

    from apa.checkpoint.adapters import put_adapter
    from apa.checkpoint.loading import load_base, resolve_model_path

    base_cfg = OmegaConf.merge(model_cfg, {"dtype": "float32"})  # merge in full precision, cast once at the end
    if dtype == "auto":
        stored = AutoConfig.from_pretrained(resolve_model_path(base_cfg), revision=base_cfg.get("revision")).dtype
        dtype = str(stored or "float32").removeprefix("torch.")
    base, _, _ = load_base(base_cfg)
    model = put_adapter(base, adapter).eval()
    return model.merge_and_unload().to(getattr(torch, dtype)), dtype


def export(path: Path, out: Path, dtype: str = "auto") -> Path:
    """Write the merged checkpoint of the run at `path` (a run folder or its final_model/) into `out`."""
    from apa.checkpoint.hub import check_config_hub_access
    from apa.checkpoint.layout import load_processor
    from apa.reporting.model_card import model_card

    run_dir, adapter = final_model_of(path)
    out = Path(out)
    check_out(out)
    cfg = resolved_config(run_dir)
    check_config_hub_access({"model": cfg.model})  # offline without the base cached: one line, at once
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's folder is private (0700); the export gets a new folder's usual mode
    try:
        model, dtype = merged_model(cfg.model, adapter, dtype)
        model.save_pretrained(str(tmp))
        load_processor(str(adapter)).save_pretrained(str(tmp))  # tokenizer (control tokens), the base's processor
        write_atomic(tmp / MODEL_CARD, model_card(run_dir, "merged"))
        check_out(out)  # still free after the minutes the merge took
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", type=Path, help="a run folder, or its final_model/")
    parser.add_argument("--out", type=Path, required=True, help="the new folder (must not exist, or be empty)")
    parser.add_argument("--dtype", choices=DTYPES, default="auto",
                        help="the saved weights' dtype (default: the base checkpoint's own)")
    args = parser.parse_args(argv)
    out = export(args.path, args.out, args.dtype)
    files = sorted(p.name for p in out.iterdir())
    print(f"Exported: {out} ({', '.join(files)})\nLoad it with: AutoModelForCausalLM.from_pretrained({str(out)!r})")


if __name__ == "__main__":
    main()
