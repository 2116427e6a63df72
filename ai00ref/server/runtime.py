"""The loaded model: engine, tokenizer, initial states and the scheduler, built from the config (spec/api.md §Runtime).

Only one model is loaded at a time, as in Ai00. With no model configured (`[model].name = ""`) the server generates a
small deterministic random RWKV-7 model (its output is noise) so that a fresh clone serves at once, and says so.
"""
from __future__ import annotations

import dataclasses
import logging
import uuid
from pathlib import Path

import numpy as np

from ai00ref.engine import Lora, load_model, load_state
from ai00ref.ref.state import RecurrentState
from ai00ref.server.grammar.constraint import GrammarCompiler, GrammarLimits
from ai00ref.server.scheduler import Scheduler
from ai00ref.tokenizer import load_tokenizer

log = logging.getLogger("ai00ref.server")
DEMO_MODEL = "demo-random-v7.st"  # generated into the model folder when no model is configured
DEMO_SPEC = dict(variant="v7", n_layer=2, n_embd=64, n_vocab=65536, head_size=16, seed=2024)
PRECISIONS = {"Fp16": "fp16", "Fp32": "fp32"}
RUNTIME_STAGES = ("tokenizer", "model", "kernels", "states", "scheduler")  # what start_runtime reports to `on_stage`
QUANT_TYPES = {"None": "none", "Int8": "int8", "NF4": "nf4", "SF4": "sf4"}  # Ai00's spelling -> load_model's


@dataclasses.dataclass
class StateEntry:
    id: str
    name: str
    state: RecurrentState
    default: bool


@dataclasses.dataclass
class Runtime:
    model_path: Path
    engine: object
    tokenizer: object
    scheduler: Scheduler
    states: list[StateEntry]
    backend: str  # "ref", or the Taichi arch in use
    unusable: object = None  # (V,) bool: model ids the tokenizer cannot decode (masked out of sampling)
    model_folder: Path = Path(".")  # `[model].path`: the sandbox of request state files and prefab exports
    loras: tuple = ()  # the LoRAs merged at load (ai00ref.engine.Lora)
    grammars: object = None  # ai00ref.server.grammar.constraint.GrammarCompiler over this tokenizer

    @property
    def info(self):
        return self.engine.info

    def close(self) -> None:
        self.scheduler.close()
        if self.grammars is not None:
            self.grammars.close()


def demo_model(folder: Path) -> Path:
    from ai00ref.weights.random_model import RandomModelSpec, write_random_model

    path = folder / DEMO_MODEL
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        write_random_model(RandomModelSpec(**DEMO_SPEC), path)
    log.warning("no model configured ([model].name is empty): serving %s, a generated random model whose output "
                "is noise; set [model].name in the config to serve a real one", path)
    return path


def choose_engine(adapter_engine: str) -> tuple[str, dict]:
    """`[adapter] engine`: "ref", or a Taichi arch (auto, vulkan, cuda, cpu); auto falls back to ref without taichi."""
    if adapter_engine == "ref":
        return "ref", {}
    try:
        import taichi  # noqa: F401
    except ImportError:
        if adapter_engine != "auto":
            raise
        log.warning("taichi is not installed: serving with the NumPy reference engine (slow)")
        return "ref", {}
    return "taichi", {"arch": adapter_engine}


def undecodable_ids(tokenizer, n_vocab: int) -> np.ndarray:
    """(V,) bool: ids the model has but the tokenizer cannot decode (the World vocab leaves 65530..65535 unused)."""
    mask = np.zeros(n_vocab, bool)
    for token in range(1, n_vocab):
        try:
            tokenizer.token_bytes(token)
        except (KeyError, IndexError, ValueError):
            mask[token] = True
    return mask


def load_states(config, info) -> list[StateEntry]:
    entries = []
    for item in config.state:
        path = Path(item.path)
        entries.append(StateEntry(id=str(uuid.UUID(item.id)) if item.id else str(uuid.uuid4()),
                                  name=item.name or path.name, state=load_state(path, info), default=item.default))
    return entries


def load_quantized(model_path: Path, backend: str, lora: tuple, model_config, tokenizer, options: dict):
    """load_model with `[model] quant` and `quant_type` (a prefab keeps its own, made for this tokenizer's vocab);
    both engines run quantized weights (the Taichi one with kernels that read them directly: spec/kernels.md §7)."""
    return load_model(model_path, backend=backend, lora=lora, quant=model_config.quant,
                      quant_type=QUANT_TYPES[model_config.quant_type], tokenizer=tokenizer, progress=True, **options)


def no_stage(name: str) -> None:
    return None


def start_runtime(config, model_path: Path | None = None, on_stage=no_stage, warm_up: bool = False) -> Runtime:
    """Load the configured model (or `model_path`), its LoRAs and states, and start the scheduler.
    `on_stage(name)` is called as each of RUNTIME_STAGES begins (ai00ref/loading.py draws a bar from it).
    `warm_up` (the server): compile the Taichi engine's kernels before the first request (`TaichiModel.warm_up`)."""
    folder = Path(config.model.path)
    if model_path is None:
        model_path = folder / config.model.name if config.model.name else demo_model(folder)
    backend, options = choose_engine(config.adapter.engine)
    if backend == "taichi":
        options["precision"] = PRECISIONS[config.model.precision]
        options["token_chunk_size"] = config.model.token_chunk_size
    lora = tuple(Lora(item.path, item.alpha) for item in config.lora)
    on_stage("tokenizer")
    tokenizer = load_tokenizer(config.tokenizer.path if Path(config.tokenizer.path).exists() else None)
    on_stage("model")
    engine = load_quantized(model_path, backend, lora, config.model, tokenizer, options)
    on_stage("kernels")
    if warm_up and hasattr(engine, "warm_up"):  # the reference engine compiles nothing
        engine.warm_up()
    on_stage("states")
    states = load_states(config, engine.info)
    if getattr(engine, "initial_state", None) is not None:  # the model's own time_state
        states.insert(0, StateEntry(str(uuid.uuid4()), "internal", engine.initial_state, default=True))
    default = next((s.state for s in states if s.default), None)
    on_stage("scheduler")
    scheduler = Scheduler(engine, max_batch=config.model.max_batch, token_chunk_size=config.model.token_chunk_size,
                          initial_states={s.id: s.state for s in states}, default_state=default)
    arch = getattr(engine, "arch", "ref")
    log.info("serving %s (%s %s, %d layers, C=%d, quant %d %s) on %s%s, %d slots", model_path, engine.info.version,
             engine.info.variant, engine.info.n_layer, engine.info.n_embd, engine.info.quant_layers,
             engine.info.quant_type, arch, f" ({engine.runtime} runtime)" if hasattr(engine, "runtime") else "",
             config.model.max_batch)
    limits = GrammarLimits(max_grammar_bytes=config.bnf.max_grammar_bytes, compile_seconds=config.bnf.compile_seconds,
                           regex_memory_bytes=config.bnf.regex_memory_bytes, cache_entries=config.bnf.cache_entries,
                           start_nonterminal=config.bnf.start_nonterminal)
    return Runtime(Path(model_path), engine, tokenizer, scheduler, states, arch,
                   undecodable_ids(tokenizer, engine.info.n_vocab), folder, lora,
                   GrammarCompiler(tokenizer, engine.info.n_vocab, limits))
