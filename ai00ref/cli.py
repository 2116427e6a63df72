"""Command line: `python -m ai00ref <command> ...`.

Each command is one `add_<name>_command(subparsers)` function that adds its parser and sets
`run=<function(args) -> exit code>`; list it in COMMANDS to make it available (e.g. `serve`, `bench`).
Errors about files (ModelFileError, OSError) print one line `error: <message>` on stderr and exit 1;
there are no tracebacks for problems the user can fix.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Callable, Sequence

from ai00ref.bench import add_bench_command
from ai00ref.errors import ModelFileError
from ai00ref.weights.random_model import VARIANTS


# ---- convert ----

def add_convert_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert", help="convert a PyTorch .pth checkpoint to an Ai00 .st file, or any model to a (quantized) prefab",
        description="Convert like Ai00's convert_safetensors.py: renames, lower-case names, fp16, "
                    "transposed low-rank matrices (spec/formats.md §3). With --prefab, --quant or --lora: write a "
                    "prefab, the model with its LoRAs merged and its first N layers quantized (spec/formats.md "
                    "§Prefab, spec/quant.md).")
    parser.add_argument("--input", required=True, help="the .pth checkpoint (model, state or LoRA); for a prefab, "
                                                       "any model file (.pth, .st)")
    parser.add_argument("--output", required=True, help="the .st (or prefab) file to write")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--prefab", action="store_true", help="write a prefab (implied by --quant and --lora)")
    parser.add_argument("--quant", type=int, default=0, metavar="N", help="prefab: quantize the first N layers")
    parser.add_argument("--quant-type", default="int8", choices=["int8", "nf4", "sf4"], help="prefab: the scheme")
    parser.add_argument("--lora", action="append", default=[], metavar="PATH[:ALPHA]",
                        help="prefab: a LoRA to merge (alpha default 1); repeat for more, merged in order")
    parser.add_argument("--tokenizer", help="prefab: the vocabulary the model uses (default: the bundled World one)")
    parser.set_defaults(run=run_convert)


def parse_lora(text: str):
    """"path" or "path:alpha" -> Lora."""
    from ai00ref.engine import Lora

    path, _, alpha = text.rpartition(":")
    try:
        return Lora(path, float(alpha)) if path else Lora(text)
    except ValueError:
        return Lora(text)


def run_prefab(args: argparse.Namespace) -> int:
    from ai00ref.engine import save_prefab
    from ai00ref.tokenizer import load_tokenizer
    from ai00ref.weights.prefab import read_prefab_header

    tokenizer = load_tokenizer(args.tokenizer) if args.tokenizer else None
    save_prefab(args.input, args.output, [parse_lora(x) for x in args.lora], args.quant, args.quant_type,
                tokenizer=tokenizer, progress=not args.no_progress)
    header = read_prefab_header(args.output)
    quant = f"{header.quant.layers} layers {header.quant.scheme}" if header.quant.active else "none"
    print(f"wrote prefab {args.output} (quant: {quant}; {format_size(os.path.getsize(args.output))})")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from ai00ref.weights.convert import convert_file

    if args.prefab or args.quant or args.lora:
        return run_prefab(args)
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


# ---- random-model ----

def add_random_model_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "random-model", help="write a deterministic random model of any version and shape",
        description="The project's generator (ai00ref/weights/random_model.py): tests, benchmarks and the "
                    "conformance suite use it; every value is exact in fp16 and bf16.")
    parser.add_argument("--variant", required=True, choices=VARIANTS)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--embd", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=256)
    parser.add_argument("--head-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32", help=".pth only")
    parser.add_argument("--output", required=True, help="a .pth or an Ai00 .st file")
    parser.set_defaults(run=run_random_model)


def run_random_model(args: argparse.Namespace) -> int:
    from ai00ref.weights.random_model import RandomModelSpec, write_random_model

    spec = RandomModelSpec(args.variant, args.layers, args.embd, args.vocab, args.head_size, args.seed)
    path = write_random_model(spec, args.output, dtype=args.dtype)
    print(f"wrote {path} ({spec.variant} L{spec.n_layer} C{spec.n_embd} V{spec.n_vocab}, seed {spec.seed})")
    return 0


# ---- serve ----

def add_serve_command(subparsers) -> None:
    parser = subparsers.add_parser("serve", help="serve the OpenAI-compatible API (Ai00's routes, port 65530)")
    parser.add_argument("-c", "--config", default="assets/configs/Config.toml", help="Ai00 Config.toml")
    parser.add_argument("-i", "--ip", default=None, help="overrides [listen].ip")
    parser.add_argument("-p", "--port", type=int, default=None, help="overrides [listen].port")
    parser.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from ai00ref.server.config import ConfigError
    from ai00ref.server.main import serve

    try:
        return serve(args.config, args.ip, args.port)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


# ---- registry and entry point ----

COMMANDS: list[Callable] = [add_convert_command, add_random_model_command, add_bench_command, add_serve_command]


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
    except (ModelFileError, OSError, ValueError, NotImplementedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
