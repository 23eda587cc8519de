"""The `clinical-t5x` console script: one subcommand per pipeline stage.

Each subcommand lives in its own module, which parses its own flags in `main(argv)`; this
file only dispatches, importing nothing heavy until a command is chosen (so `--help` is fast
and the trainer never pays for TensorFlow it does not use).
"""

from __future__ import annotations

import importlib
import sys

# name -> (module:function taking argv, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("clinical_t5x.data.synth:main", "write synthetic MIMIC-III/IV note files"),
    "prepare": ("clinical_t5x.data.prepare:main", "raw MIMIC CSVs -> DEID-normalised TFRecord shards"),
    "vocab": ("clinical_t5x.text.vocab_build:main", "build a vocabulary folder (SentencePiece + tags)"),
    "train": ("clinical_t5x.train.trainer:main", "train with the built-in JAX trainer (t5x flags)"),
    "export": ("clinical_t5x.hf.convert:export_main", "t5x-layout checkpoint -> Hugging Face folder"),
    "import-hf": ("clinical_t5x.hf.convert:import_main", "Hugging Face T5 folder -> checkpoint"),
    "check-downstream": ("clinical_t5x.data.downstream:main", "check MedNLI/RadQA/CLIP files, count records"),
    "finetune": ("clinical_t5x.eval.finetune:main", "fine-tune + evaluate on MedNLI, RadQA or CLIP"),
    "demo": ("clinical_t5x.demo:main", "the whole flow on the built-in synthetic default"),
    "contamination": ("clinical_t5x.data.contamination:main",
                      "downstream examples sharing a 13-word n-gram with prepared shards (ids only)"),
    "audit": ("clinical_t5x.audit.cli:main", "canary exposure, membership inference, extraction"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: clinical-t5x COMMAND [options]   (clinical-t5x COMMAND --help)", "", "commands:"]
    lines += [f"  {name:<{width}}  {doc}" for name, (_, doc) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"clinical-t5x: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, func_name = COMMANDS[name][0].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
