"""Command line: `python -m ai00ref <command> ...`.

Each command is one `add_<name>_command(subparsers)` function that adds its parser and sets
`run=<function(args) -> exit code>`; list it in COMMANDS to make it available (e.g. `serve`, `bench`).
Errors about files (ModelFileError, OSError) print one line `error: <message>` on stderr and exit 1;
there are no tracebacks for problems the user can fix.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from typing import Callable, Sequence

from ai00ref.errors import ModelFileError


# ---- convert ----

def add_convert_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert", help="convert a PyTorch .pth checkpoint to an Ai00 .st file (fp16 safetensors)",
        description="Convert like Ai00's convert_safetensors.py: renames, lower-case names, fp16, "
                    "transposed low-rank matrices (spec/formats.md §3).")
    parser.add_argument("--input", required=True, help="the .pth checkpoint (model, state or LoRA)")
    parser.add_argument("--output", required=True, help="the .st file to write")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(run=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    from ai00ref.weights.convert import convert_file

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = convert_file(args.input, args.output, progress=not args.no_progress)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    print(f"converted {result.tensor_count} tensors: {args.input} -> {args.output} "
          f"({format_size(result.output_bytes)})")
    return 0


def format_size(n_bytes: int) -> str:
    for unit in ("bytes", "KiB", "MiB"):
        if n_bytes < 1024 or unit == "MiB":
            return f"{n_bytes} {unit}" if unit == "bytes" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    return f"{n_bytes:.2f} GiB"


# ---- registry and entry point ----

COMMANDS: list[Callable] = [add_convert_command]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ai00ref", description="Ai00 Server in Python")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    for add_command in COMMANDS:
        add_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.run(args)
    except (ModelFileError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
