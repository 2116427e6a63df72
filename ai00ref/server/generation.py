"""One generation request as the scheduler runs it, and the stream of events its handler reads.

The scheduler thread calls `started`, `next_token`, `accept` and `fail`; each pushes events onto an asyncio queue
through the event loop (thread-safe). The handler iterates `events()`: ("start",), ("text", str)...,
("finish", reason), or ("error", ApiError). Streaming is the only path: a non-streamed reply is the events collected.
"""
from __future__ import annotations

import asyncio
import dataclasses
import time

import numpy as np

from ai00ref.server.samplers import apply_bias, softmax
from ai00ref.server.text import StopScanner

EOS = 0  # token 0 ends a generation with finish_reason "stop"


@dataclasses.dataclass
class GenerationParams:
    prompt: list[int]  # the tokens to feed (an empty prompt is [0], as Ai00)
    max_tokens: int
    stops: list[str]
    sampler: object  # ai00ref.server.samplers: transform(logits), sample(probs, rng)
    bias: dict[int, float]
    rng: np.random.Generator
    state_id: str
    unusable: np.ndarray | None = None  # (V,) bool: ids the tokenizer cannot decode (never sampled)
    constraint: object = None  # ai00ref.server.grammar.constraint.Constraint: the request's grammar, or None


class Generation:
    """A job for the scheduler (ai00ref/server/scheduler.py) that turns sampled tokens into text events."""

    def __init__(self, params: GenerationParams, tokenizer, loop: asyncio.AbstractEventLoop):
        self.params = params
        self.prompt, self.state_id = params.prompt, params.state_id
        self.tokenizer = tokenizer
        self.loop = loop
        self.queue: asyncio.Queue = asyncio.Queue()
        self.scanner = StopScanner(params.stops)
        self.cancelled = False
        self.generated = 0
        self.first_token_at: float | None = None
        self.finished_at: float | None = None

    # ---- the scheduler thread ----

    def push(self, event: tuple) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, event)

    def started(self) -> None:
        self.push(("start",))

    def next_token(self, logits: np.ndarray) -> int:
        """Ai00's order: penalties (the sampler's transform), the grammar's mask, bias, softmax, then the sampler
        picks. A grammar that allows no token at all (it cannot go on with this vocabulary) gives end of text."""
        logits = self.params.sampler.transform(np.asarray(logits, np.float64))
        if self.params.constraint is not None and self.params.constraint.mask(logits) == 0:
            return EOS
        logits = apply_bias(logits, self.params.bias)  # finite: a forbidden token stays at -inf
        if self.params.unusable is not None:
            logits[self.params.unusable] = -np.inf
        return int(self.params.sampler.sample(softmax(logits), self.params.rng))

    def accept(self, token: int) -> str | None:
        """Record a sampled token; emit the text it completes; return "stop", "length" or None (go on)."""
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.generated += 1
        reason = None
        piece = self.piece(token)
        if token == EOS or piece is None:  # as Ai00: end of text, or an id the tokenizer cannot decode
            text, reason = self.scanner.flush(), "stop"
        else:
            halt = self.params.constraint is not None and self.params.constraint.accept(token)
            text, stopped = self.scanner.feed(piece)
            if halt and not stopped:  # the grammar has finished: what is held back is part of the answer
                text += self.scanner.flush()
            if stopped or halt:
                reason = "stop"
            elif self.generated >= self.params.max_tokens:
                text, reason = text + self.scanner.flush(), "length"
        if text:
            self.push(("text", text))
        if reason is not None:
            self.finished_at = time.perf_counter()
            self.push(("finish", reason))
        return reason

    def piece(self, token: int) -> bytes | None:
        try:
            return self.tokenizer.token_bytes(token)
        except (KeyError, IndexError, ValueError):
            return None

    def fail(self, error: Exception) -> None:
        self.push(("error", error))

    # ---- the handler ----

    async def events(self):
        """Yield events until the finish (or an error); leaving early (a disconnect) cancels the job."""
        try:
            while True:
                event = await self.queue.get()
                yield event
                if event[0] in ("finish", "error"):
                    return
        finally:
            self.cancelled = True

    def duration(self) -> float:
        """Seconds from the first sampled token to the finish (Ai00's `usage.duration`)."""
        if self.first_token_at is None or self.finished_at is None:
            return 0.0
        return self.finished_at - self.first_token_at
