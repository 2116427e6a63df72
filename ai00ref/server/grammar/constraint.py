"""Grammars compiled with kbnf, cached and bounded, and the per-request constraint (spec/bnf.md §1, §4).

kbnf compiles a KBNF grammar against the tokenizer's vocabulary into an engine that says, after any prefix, which
tokens may come next. Compiling holds Python's GIL for its whole duration (measured: `#"(a|b)*a(a|b){16}"` takes 86 s
and the interpreter runs nothing else meanwhile), so a time limit cannot be kept in a thread. Each new grammar is
therefore first compiled by a *preflight* worker process, killed when it runs over `compile_seconds`; only a
grammar that compiled there in time is compiled again in the server (where it can pause the server for as long,
once: the result is cached by its text, `cache_entries` least recently used kept). Bounds, all configurable in
`[bnf]`: the grammar's size in bytes, the compile time, and the memory of each regex's DFA (kbnf's own limit).
"""
from __future__ import annotations

import asyncio
import collections
import copy
import dataclasses
import multiprocessing
import threading

import numpy as np

from ai00ref.server.errors import bad_request
from ai00ref.server.grammar import legacy


@dataclasses.dataclass(frozen=True)
class GrammarLimits:
    max_grammar_bytes: int = 64 * 1024
    compile_seconds: float = 5.0
    regex_memory_bytes: int = 16 * 1024 * 1024  # per regex DFA (kbnf's RegexConfig.max_memory_usage)
    cache_entries: int = 32
    start_nonterminal: str = "start"


class GrammarError(ValueError):
    """A grammar that does not compile: the parser's message."""


def vocabulary_table(tokenizer, n_vocab: int) -> dict[int, bytes]:
    """Model id -> token bytes for every id the tokenizer decodes (id 0, end of text, is never a grammar's)."""
    table = {}
    for token in range(1, n_vocab):
        try:
            data = tokenizer.token_bytes(token)
        except (KeyError, IndexError, ValueError):
            continue
        if data:
            table[token] = data
    return table


def kbnf_config(limits: GrammarLimits):
    import kbnf

    config = kbnf.Config()
    regex = config.regex_config
    regex.max_memory_usage = limits.regex_memory_bytes
    config.regex_config = regex
    config.start_nonterminal = limits.start_nonterminal
    return config


def make_vocabulary(table: dict[int, bytes]):
    import kbnf

    return kbnf.Vocabulary({token: kbnf.Token(data) for token, data in table.items()},
                           {token: data.decode("utf-8", "replace") for token, data in table.items()})


def compile_engine(text: str, vocabulary, limits: GrammarLimits):
    """kbnf.Engine for KBNF `text`, or GrammarError with kbnf's message."""
    import kbnf

    try:
        return kbnf.Engine(text, vocabulary, kbnf_config(limits))
    except ValueError as error:  # kbnf's parse and semantic errors
        raise GrammarError(str(error)) from None


def preflight_worker(connection, table: dict[int, bytes], limits: GrammarLimits) -> None:
    """The preflight process: compile each grammar text it is sent; answer None or the error message."""
    vocabulary = make_vocabulary(table)
    while True:
        text = connection.recv()
        try:
            compile_engine(text, vocabulary, limits)
            connection.send(None)
        except GrammarError as error:
            connection.send(str(error))
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as error:  # noqa: BLE001 - a panic in kbnf's Rust (pyo3's PanicException)
            connection.send(f"the grammar compiler failed on it ({type(error).__name__}: {error})")


class Preflight:
    """A worker process that compiles grammars first, so that one which compiles too long can be killed."""

    def __init__(self, table: dict[int, bytes], limits: GrammarLimits):
        self.table, self.limits = table, limits
        self.context = multiprocessing.get_context("spawn")  # no fork of the server's threads
        self.process = None
        self.connection = None

    def start(self) -> None:
        here, there = self.context.Pipe()
        self.process = self.context.Process(target=preflight_worker, args=(there, self.table, self.limits),
                                            name="ai00ref-grammar-preflight", daemon=True)
        self.process.start()
        self.connection = here

    def check(self, text: str) -> None:
        """Blocking: GrammarError if kbnf refuses `text`, TimeoutError if it does not finish in time (the worker
        is then killed and restarted at the next check)."""
        if self.process is None or not self.process.is_alive():
            self.start()
        self.connection.send(text)
        if not self.connection.poll(self.limits.compile_seconds):
            self.stop()
            raise TimeoutError
        try:
            message = self.connection.recv()
        except (EOFError, OSError):  # the worker died on this text: it is refused, the next check starts another
            self.stop()
            raise GrammarError("the grammar compiler failed on it") from None
        if message is not None:
            raise GrammarError(message)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.join()
            self.process = None


class GrammarCompiler:
    """One per runtime: grammar text (KBNF or the old dialect) -> compiled engine, through the preflight and the
    cache. `prototype` is called from handlers; compiles run one at a time in a worker thread."""

    def __init__(self, tokenizer, n_vocab: int, limits: GrammarLimits = GrammarLimits()):
        self.tokenizer, self.n_vocab, self.limits = tokenizer, n_vocab, limits
        self.cache: collections.OrderedDict = collections.OrderedDict()
        self.lock = threading.Lock()  # one compile at a time: each holds the GIL anyway
        self.table = None
        self.vocabulary = None
        self.preflight = None

    def kbnf_text(self, text: str) -> str:
        if len(text.encode()) > self.limits.max_grammar_bytes:
            raise bad_request(f"bnf_schema is larger than {self.limits.max_grammar_bytes} bytes", "bnf_schema",
                              code="grammar_too_large")
        if legacy.is_legacy(text):
            try:
                return legacy.translate(text)
            except legacy.LegacyBnfError as error:
                raise bad_request(f"bnf_schema (old <rule> dialect): {error}", "bnf_schema",
                                  code="invalid_grammar") from None
        return text

    def compile_blocking(self, text: str, param: str):
        with self.lock:
            if text in self.cache:
                self.cache.move_to_end(text)
                return self.cache[text]
            if self.vocabulary is None:
                self.table = vocabulary_table(self.tokenizer, self.n_vocab)
                self.vocabulary = make_vocabulary(self.table)
                self.preflight = Preflight(self.table, self.limits)
            try:
                self.preflight.check(text)
                engine = compile_engine(text, self.vocabulary, self.limits)
            except TimeoutError:
                raise bad_request(f"{param}: the grammar did not compile within {self.limits.compile_seconds} s",
                                  param, code="grammar_timeout") from None
            except GrammarError as error:
                raise bad_request(f"{param}: {error}", param, code="invalid_grammar") from None
            self.cache[text] = engine
            while len(self.cache) > self.limits.cache_entries:
                self.cache.popitem(last=False)
            return engine

    async def constraint(self, text: str, param: str = "bnf_schema") -> "Constraint":
        """A fresh constraint for one request (a copy of the cached engine)."""
        kbnf_text = self.kbnf_text(text)
        engine = await asyncio.to_thread(self.compile_blocking, kbnf_text, param)
        return Constraint(copy.copy(engine), self.n_vocab)

    def close(self) -> None:
        if self.preflight is not None:
            self.preflight.stop()


class Constraint:
    """One request's grammar state: which tokens may come next, and whether the grammar has finished."""

    def __init__(self, engine, n_vocab: int):
        self.engine = engine
        self.allowed = np.empty(n_vocab, np.int64)  # kbnf writes the allowed ids here

    def mask(self, logits: np.ndarray) -> int:
        """Set every disallowed token's logit to -inf, in place; returns how many tokens are allowed (0: the
        grammar cannot go on with this vocabulary)."""
        self.engine.compute_allowed_token_ids()
        n = self.engine.get_number_of_allowed_token_ids()
        kept = np.full_like(logits, -np.inf)
        if n:
            self.engine.write_allowed_token_ids_to_buffer(self.allowed.ctypes.data, n)
            ids = self.allowed[:n]
            kept[ids] = logits[ids]
        logits[:] = kept
        return n

    def accept(self, token: int) -> bool:
        """Advance by a sampled (allowed) token; True when the grammar has finished."""
        import kbnf

        try:
            return self.engine.try_accept_new_token(token) == kbnf.AcceptTokenResult.Finished
        except ValueError:  # not allowed: only if the sampler ignored the mask; the grammar cannot go on
            return True


__all__ = ["GrammarLimits", "GrammarCompiler", "Constraint", "GrammarError"]
