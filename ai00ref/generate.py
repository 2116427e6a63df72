"""`python -m ai00ref generate`: one completion from the terminal, streamed to stdout as it is sampled.

It takes the server's own path: the model is loaded as `serve` loads it (the config's model, or --model), the options
become a request body that the server's parsers check (a bad value is one line on stderr and exit 1), and the text
streams from the scheduler. Sampler options left out take the API's defaults (spec/api.md §3).
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
from pathlib import Path

EXAMPLES = """examples:
  python -m ai00ref generate --prompt "The capital of France is" --max-tokens 32
  python -m ai00ref generate --model assets/models/x.st --engine ref --temperature 0 --prompt "Hello"
  python -m ai00ref generate --chat --prompt "Tell me a joke"        # the chat template: User: ...  Assistant:
  echo "Once upon a time" | python -m ai00ref generate --prompt - --sampler mirostat --tau 3
  python -m ai00ref generate --prompt "Is water wet? " --bnf yes_no.kbnf  # start ::= "yes" | "no";
"""
SAMPLERS = {"nucleus": "Nucleus", "typical": "Typical", "mirostat": "Mirostat"}
PENALTIES = ("presence_penalty", "frequency_penalty", "penalty_decay")


def add_generate_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate", help="complete one prompt from the terminal, streaming the text to stdout",
        description=__doc__.split("\n\n", 1)[1].strip(), epilog=EXAMPLES)
    source = parser.add_argument_group("model")
    source.add_argument("-m", "--model", help="a model file (.st, .pth or prefab); default: the config's "
                                              "[model].name, or the generated demo model when that is empty")
    source.add_argument("-c", "--config", default="assets/configs/Config.toml",
                        help="Ai00 Config.toml for the model, LoRAs, states and engine (default: %(default)s; the "
                             "built-in defaults when that file is missing)")
    source.add_argument("--engine", choices=["auto", "vulkan", "cuda", "cpu", "ref"],
                        help="overrides [adapter].engine: a Taichi arch, or ref (the NumPy reference)")
    source.add_argument("--no-progress", action="store_true", help="hide the loading bar")
    text = parser.add_argument_group("prompt")
    text.add_argument("-p", "--prompt", required=True, help="the text to continue; '-' reads stdin")
    text.add_argument("--chat", action="store_true", help="answer PROMPT as a user message in the chat template "
                                                          "(stops at a blank line, as /chat/completions)")
    text.add_argument("-n", "--max-tokens", type=int, default=256, help="tokens to generate at most "
                                                                        "(default: %(default)s)")
    text.add_argument("--stop", action="append", metavar="TEXT", help="a stop string (repeat for more); default: "
                                                                      "none, or a blank line with --chat")
    shape = text.add_mutually_exclusive_group()
    shape.add_argument("--bnf", metavar="FILE", help="a KBNF grammar file the output must follow (spec/bnf.md)")
    shape.add_argument("--json-schema", metavar="FILE", help="a JSON Schema file the output must follow")
    sampling = parser.add_argument_group("sampler (left out: the API's defaults)")
    sampling.add_argument("--sampler", choices=sorted(SAMPLERS), default="nucleus", help="(default: %(default)s)")
    sampling.add_argument("-t", "--temperature", type=float, help="0: greedy (default 1)")
    sampling.add_argument("--top-p", type=float, help="nucleus: probability mass kept (default 0.5)")
    sampling.add_argument("--top-k", type=int, help="nucleus, typical: tokens kept at most; 0: no limit "
                                                    "(default 128)")
    sampling.add_argument("--tau", type=float, help="typical: mass (default 0.5); mirostat: target surprise "
                                                    "(default 3)")
    sampling.add_argument("--rate", type=float, help="mirostat: learning rate (default 0.1)")
    sampling.add_argument("--presence-penalty", type=float, help="(default 0.3)")
    sampling.add_argument("--frequency-penalty", type=float, help="(default 0.3)")
    sampling.add_argument("--penalty-decay", type=float, help="per token (default 0.99654, a 200-token half-life)")
    sampling.add_argument("--seed", type=int, help="seeds the sampler: the same seed gives the same text")
    parser.set_defaults(run=run_generate)


# ---- the request ----

def sampler_fields(args: argparse.Namespace) -> dict:
    """The options the user gave, in the API's fields: top-level for nucleus, else a sampler object."""
    names = {"nucleus": ("temperature", "top_p", "top_k", *PENALTIES),
             "typical": ("temperature", "tau", "top_k", *PENALTIES), "mirostat": ("tau", "rate")}[args.sampler]
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    ignored = [name for name in ("temperature", "top_p", "top_k", "tau", "rate", *PENALTIES)
               if name not in names and getattr(args, name) is not None]
    if ignored:
        flags = ", ".join("--" + name.replace("_", "-") for name in ignored)
        raise ValueError(f"--sampler {args.sampler} does not take {flags}")
    return given if args.sampler == "nucleus" else {"sampler": {"type": SAMPLERS[args.sampler], **given}}


def request_body(args: argparse.Namespace, prompt: str) -> dict:
    body = {"max_tokens": args.max_tokens, "seed": args.seed, **sampler_fields(args), **grammar_fields(args)}
    if args.chat:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    if args.stop is not None or not args.chat:
        body["stop"] = args.stop or []
    return body


def grammar_fields(args: argparse.Namespace) -> dict:
    """--bnf or --json-schema as the API's bnf_schema or response_format."""
    if args.bnf:
        return {"bnf_schema": Path(args.bnf).read_text(encoding="utf-8")}
    if args.json_schema:
        try:
            schema = json.loads(Path(args.json_schema).read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{args.json_schema} is not JSON: {error}") from None
        return {"response_format": {"type": "json_schema", "json_schema": {"name": "cli", "schema": schema}}}
    return {}


def read_prompt(value: str) -> str:
    return sys.stdin.read() if value == "-" else value


# ---- running it ----

def generation_config(args: argparse.Namespace):
    from ai00ref.server.main import read_config

    config = read_config(args.config, None, None)
    if args.engine is not None:
        config = dataclasses.replace(config, adapter=dataclasses.replace(config.adapter, engine=args.engine))
    return config


async def stream_text(runtime, params, grammar, kind: str, out) -> str:
    """Submit the request to the runtime's scheduler and write its text as it comes; returns the finish reason."""
    from ai00ref.server.generation import Generation

    if grammar is not None:
        params.constraint = await runtime.grammars.constraint(*grammar)
    job = Generation(params, runtime.tokenizer, asyncio.get_running_loop())
    runtime.scheduler.submit(job)
    reason, started = None, False
    async for event in job.events():
        if event[0] == "text":
            text = event[1].lstrip() if kind == "chat" and not started else event[1]
            started = started or bool(text)
            out.write(text)
            out.flush()
        elif event[0] == "finish":
            reason = event[1]
        elif event[0] == "error":
            raise event[1]
    return reason


def run_generate(args: argparse.Namespace) -> int:
    from ai00ref.loading import loading_bar
    from ai00ref.server.app import generation_params
    from ai00ref.server.errors import ApiError
    from ai00ref.server.grammar.request import request_grammar
    from ai00ref.server.runtime import RUNTIME_STAGES, start_runtime
    from ai00ref.server.states import NIL_STATE

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    prompt = read_prompt(args.prompt)
    body = request_body(args, prompt)  # option errors before the model loads
    config = generation_config(args)
    model = Path(args.model) if args.model else None
    if model is not None and not model.is_file():
        raise FileNotFoundError(f"no such model file: {model}")
    label = f"loading {model.name if model else config.model.name or 'the demo model'}"
    with loading_bar(label, RUNTIME_STAGES, enabled=not args.no_progress) as on_stage:
        runtime = start_runtime(config, model, on_stage=on_stage)
    kind = "chat" if args.chat else "completion"
    try:
        params = generation_params(body, kind, runtime, NIL_STATE)  # the server's checks of every field
        grammar = request_grammar(body)
    except ApiError as error:
        runtime.close()
        print(f"error: {error.message}", file=sys.stderr)
        return 1
    try:
        reason = asyncio.run(stream_text(runtime, params, grammar, kind, sys.stdout))
    except ApiError as error:
        print(f"\nerror: {error.message}", file=sys.stderr)
        return 1
    finally:
        runtime.close()
    print()
    print(f"[{reason}]", file=sys.stderr)
    return 0
