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
from ai00ref.generate import add_generate_command
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
    parser.add_argument("--variant", required=True, choices=VARIANTS, help="the RWKV version")
    parser.add_argument("--layers", type=int, default=2, help="layers (default: %(default)s)")
    parser.add_argument("--embd", type=int, default=64, help="embedding size C (default: %(default)s)")
    parser.add_argument("--vocab", type=int, default=256, help="vocabulary size; 65536 to use it with the World "
                                                               "tokenizer, as serve and generate do (default: "
                                                               "%(default)s)")
    parser.add_argument("--head-size", type=int, default=64, help="head size N, v5 and later (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="the same seed gives the same file (default: "
                                                            "%(default)s)")
    parser.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32",
                        help=".pth only; an .st is fp16, as Ai00's (default: %(default)s)")
    parser.add_argument("--output", required=True, help="a .pth or an Ai00 .st file (by its suffix)")
    parser.set_defaults(run=run_random_model)


def run_random_model(args: argparse.Namespace) -> int:
    from ai00ref.weights.random_model import RandomModelSpec, write_random_model

    spec = RandomModelSpec(args.variant, args.layers, args.embd, args.vocab, args.head_size, args.seed)
    path = write_random_model(spec, args.output, dtype=args.dtype)
    print(f"wrote {path} ({spec.variant} L{spec.n_layer} C{spec.n_embd} V{spec.n_vocab}, seed {spec.seed})")
    return 0


# ---- serve ----

def add_serve_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve", help="serve the OpenAI-compatible API (Ai00's routes, port 65530)",
        description="Serve Ai00's HTTP API: the OpenAI routes under /api/oai, /api/oai/v1 and /v1, Ai00's "
                    "extensions and admin routes, the web UI at /, the API's documentation at /api-docs, /health "
                    "and /metrics (spec/api.md). The model, LoRAs, states, engine and port come from the config; "
                    "with no model configured a random demo model is generated and served.")
    parser.add_argument("-c", "--config", default="assets/configs/Config.toml",
                        help="Ai00 Config.toml (default: %(default)s; the built-in defaults when that file is "
                             "missing)")
    parser.add_argument("-i", "--ip", default=None, help="overrides [listen].ip")
    parser.add_argument("-p", "--port", type=int, default=None, help="overrides [listen].port")
    parser.add_argument("--log-format", choices=["text", "json"], default="text",
                        help="json: one JSON object a line, with each request's id, route, status and duration "
                             "(default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="hide the loading bar")
    parser.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from ai00ref.server.config import ConfigError
    from ai00ref.server.main import serve

    try:
        return serve(args.config, args.ip, args.port, args.log_format, progress=not args.no_progress)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


# ---- conformance (the runner of conformance/__main__.py, which parses its own options) ----

def add_conformance_command(subparsers) -> None:
    subparsers.add_parser(
        "conformance", add_help=False,
        help="compare an engine's logits and states with the official rwkv package's fixtures (its own --help)")


def run_conformance(argv: Sequence[str]) -> int:
    from conformance.__main__ import main as conformance_main

    return conformance_main(list(argv), prog="python -m ai00ref conformance")


# ---- registry and entry point ----

COMMANDS: list[Callable] = [add_serve_command, add_generate_command, add_convert_command, add_random_model_command,
                            add_bench_command, add_conformance_command]
DESCRIPTION = """Ai00 Server in Python: serve RWKV models (v4 to v7) over Ai00's OpenAI-compatible API, complete a
prompt from the terminal, convert and generate model files, time engines, check them against the official package.

`python -m ai00ref <command> --help` explains each command."""
EPILOG = """examples:
  python -m ai00ref serve                                  # assets/configs/Config.toml, port 65530
  python -m ai00ref generate --prompt "The Eiffel tower is" --max-tokens 32
  python -m ai00ref random-model --variant v7 --vocab 65536 --output assets/models/random.st
  python -m ai00ref convert --input model.pth --output assets/models/model.st
  python -m ai00ref bench --random v7:L12:C768:V65536
  python -m ai00ref conformance --backend ref
"""


class ParagraphFormatter(argparse.HelpFormatter):
    """Prose paragraphs are wrapped to the terminal; a paragraph of example lines (indented, or under a title
    ending in ':') is kept as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = []
        for paragraph in text.strip().split("\n\n"):
            lines = paragraph.splitlines()
            if lines[0].endswith(":") or all(line.startswith(" ") for line in lines):
                paragraphs.append("\n".join(indent + line for line in lines))
            else:
                paragraphs.append(super()._fill_text(paragraph, width, indent))
        return "\n\n".join(paragraphs)


def build_parser() -> argparse.ArgumentParser:
    from ai00ref import bench

    parser = argparse.ArgumentParser(prog="python -m ai00ref", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=ParagraphFormatter)
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    for add_command in COMMANDS:
        add_command(subparsers)
    for command in subparsers.choices.values():
        command.formatter_class = ParagraphFormatter
    _, examples, measured = bench.__doc__.split("\n\n")[:3]  # bench's module docstring: title, examples, what
    subparsers.choices["bench"].description += "\n\n" + measured.strip()
    subparsers.choices["bench"].epilog = "examples:\n" + examples
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["conformance"]:
        return run_conformance(argv[1:])
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
