"""`apa`: one command line for everything but training and evaluation (train.py, evaluate.py and multirun.sh stay
at the top of the repository, where Hydra composes their configs).

    apa compare <sweep or runs> [--out DIR]      comparison.md/csv and plots
    apa report <sweep or runs> [--out DIR]       report.html, offline
    apa table3 <sweep or runs> [--baseline DIR]  Table 3 beside the paper's rows
    apa predict --adapter <final_model> --audio <wav> --text "..."
    apa predict --adapter <final_model> --audio <folder|'glob'|wav.scp> --out scores.jsonl   (many, batched)
    apa app --adapter <final_model>              the scoring page (Gradio, pip install -e '.[app]')
    apa check <checkpoint folder or hub id>      the load-time checks, without weights
    apa export <run> --out DIR [--dtype ...]     the adapter merged into its base: a plain transformers checkpoint
    apa push <run> --repo-id USER/NAME [--public]  final_model/ and its card to the Hugging Face hub (private)
    apa bench [hydra overrides] [--mode ...]     throughput, memory, padding, generation

`apa <command> --help` describes each; `python -m apa` is the same program.
"""

from __future__ import annotations

import importlib
import sys

# command -> (module with a main(argv), one line of help)
COMMANDS = {
    "compare": ("apa.reporting.compare", "compare run folders: comparison.md/csv and plots"),
    "report": ("apa.reporting.report", "report.html: tables, curves and the utterance browser, offline"),
    "table3": ("apa.reporting.table3", "the paper's Table 3 with this project's rows"),
    "predict": ("apa.serve.predict", "score a recording, or many (folder, glob, wav.scp), with a trained adapter"),
    "app": ("apa.serve.app", "the scoring page on localhost (Gradio)"),
    "check": ("apa.checkpoint.check", "check a Phi-4-multimodal checkpoint without loading its weights"),
    "export": ("apa.publish.export", "merge a run's adapter into its base: a standalone transformers checkpoint"),
    "push": ("apa.publish.push", "upload a run's final_model/ with its model card to the Hugging Face hub"),
    "bench": ("apa.bench.cli", "benchmarks: training, collation, sampler, generation"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return "usage: apa <command> [arguments]\n\ncommands:\n" + "\n".join(lines) + "\n\n`apa <command> --help` " \
        "for each; training and evaluation: python train.py, python evaluate.py, ./multirun.sh"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: apa {command}: no such command; one of {', '.join(COMMANDS)} (apa --help)", file=sys.stderr)
        return 2
    sys.argv = [f"apa {command}", *rest]  # argparse's prog in usage and error lines
    result = importlib.import_module(COMMANDS[command][0]).main(rest)
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
