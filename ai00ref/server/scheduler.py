"""One inference loop over `max_batch` slots, as Ai00's (spec/api.md §Scheduler).

Each slot holds one request and one row of a batched engine state. Every step, the loop feeds all busy slots'
pending tokens to the engine in one ragged `forward` (idle rows get no tokens), at most `token_chunk_size` tokens in
all, shared fairly, so a long prompt is fed in chunks between the other slots' decoding steps. A slot whose prompt is
consumed samples a token from its logits and asks its job whether to go on.

The loop runs in its own thread (the engine blocks); handlers talk to it through `submit` and the job's methods.
A job is anything with `prompt`, `state_id`, `cancelled`, `started()`, `next_token(logits)`, `accept(token)` (a
finish reason or None) and `fail(error)`: see ai00ref/server/generation.py.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import threading
import time
import typing

import numpy as np

from ai00ref.ref.state import RecurrentState
from ai00ref.server.errors import ApiError
from ai00ref.server.metrics import SchedulerMetrics

log = logging.getLogger("ai00ref.server.scheduler")
CACHE_PROMPTS_LONGER_THAN = 32  # Ai00 caches the post-prompt state of prompts longer than this
CACHE_ENTRIES = 256  # per state id, least recently used out first


class PrefixCache:
    """Per state id, token sequences -> (batch-1 host state after them, logits after their last token)."""

    def __init__(self, capacity: int = CACHE_ENTRIES):
        self.capacity = capacity
        self.entries: dict[str, collections.OrderedDict] = collections.defaultdict(collections.OrderedDict)

    def checkout(self, state_id: str, tokens: list[int]):
        """The longest cached prefix of `tokens`: (state, logits, its length), or (None, None, 0)."""
        entries, best = self.entries[state_id], ()
        for key in entries:
            if len(best) < len(key) <= len(tokens) and tuple(tokens[:len(key)]) == key:
                best = key
        if not best:
            return None, None, 0
        entries.move_to_end(best)
        state, logits = entries[best]
        return state, logits, len(best)

    def insert(self, state_id: str, tokens: list[int], state: RecurrentState, logits: np.ndarray) -> None:
        entries = self.entries[state_id]
        entries[tuple(tokens)] = (state, logits.copy())
        entries.move_to_end(tuple(tokens))
        while len(entries) > self.capacity:
            entries.popitem(last=False)

    def clear(self, state_id: str | None = None) -> None:
        if state_id is None:
            self.entries.clear()
        else:
            self.entries.pop(state_id, None)


@dataclasses.dataclass
class Slot:
    job: object
    pending: list[int]  # tokens still to feed
    fed: list[int]  # tokens fed so far (the state is the state after them)
    prompt_done: bool = False
    logits: np.ndarray | None = None  # a cached prompt's logits: sample at once, nothing to feed
    submitted_at: float = 0.0  # time.perf_counter() when the job entered the queue
    last_token_at: float | None = None  # when its last token was sampled


class Waiting(typing.NamedTuple):
    """A queued job and when it was submitted (for the time to first token)."""
    job: object
    submitted_at: float  # time.perf_counter()


def host_row(state, b: int) -> RecurrentState:
    """Batch row b of an engine state as a batch-1 host state (Taichi states go through the host)."""
    return state.to_host().rows([b]) if hasattr(state, "to_host") else state.rows([b])


class Scheduler:
    """Slots, a bounded queue and the inference loop. `initial_states`: state id -> batch-1 host state."""

    def __init__(self, engine, max_batch: int = 8, token_chunk_size: int = 128, queue_size: int = 64,
                 initial_states: dict[str, RecurrentState] | None = None, default_state: RecurrentState | None = None,
                 request_states: int = 64):
        if max_batch < 1 or token_chunk_size < 1:
            raise ValueError("max_batch and token_chunk_size must be positive")
        self.engine = engine
        self.max_batch, self.token_chunk_size, self.queue_size = max_batch, token_chunk_size, queue_size
        self.initial_states = dict(initial_states or {})
        self.request_states: collections.OrderedDict = collections.OrderedDict()  # id -> state, registered by requests
        self.request_state_capacity = request_states
        self.default_state = default_state
        self.state = engine.new_state(max_batch)
        self.slots: list[Slot | None] = [None] * max_batch
        self.waiting: collections.deque = collections.deque()  # Waiting(job, submitted_at)
        self.calls: collections.deque = collections.deque()  # (fn, future): engine work between steps
        self.cache = PrefixCache()
        self.metrics = SchedulerMetrics()  # read by /metrics (ai00ref/server/metrics.py)
        self.wake = threading.Condition()
        self.running = True
        self.thread = threading.Thread(target=self.run, name="ai00ref-inference", daemon=True)
        self.thread.start()

    # ---- called from handlers (any thread) ----

    def submit(self, job) -> None:
        with self.wake:
            if not self.running:
                raise ApiError(503, "the server is shutting down", code="unavailable")
            if len(self.waiting) >= self.queue_size:
                raise ApiError(429, f"too many requests waiting ({self.queue_size}); retry later",
                               code="queue_full", type="rate_limit_error")
            self.waiting.append(Waiting(job, time.perf_counter()))
            self.wake.notify()

    def call(self, fn) -> concurrent.futures.Future:
        """Run `fn(engine)` on the inference thread between two steps (the engine is not thread-safe): for routes
        that need forward passes of their own (chooses, states, embeddings). `await asyncio.wrap_future(...)`."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self.wake:
            if not self.running:
                raise ApiError(503, "the server is shutting down", code="unavailable")
            self.calls.append((fn, future))
            self.wake.notify()
        return future

    def has_state(self, state_id: str) -> bool:
        return state_id in self.initial_states or state_id in self.request_states

    def register_state(self, state_id: str, state: RecurrentState) -> None:
        """A request's own initial state under its id (call it through `call`: on the inference thread). The id's
        prefix cache is dropped, since its entries grew from another state; the least recently registered go first."""
        self.request_states[state_id] = state
        self.request_states.move_to_end(state_id)
        self.cache.clear(state_id)
        while len(self.request_states) > self.request_state_capacity:
            dropped, _ = self.request_states.popitem(last=False)
            self.cache.clear(dropped)

    def busy(self) -> int:
        return sum(slot is not None for slot in self.slots)

    def waiting_count(self) -> int:
        return len(self.waiting)

    def close(self, timeout: float = 10.0) -> None:
        """Stop taking requests, fail what waits, let running slots stop at their next step, join the loop."""
        with self.wake:
            self.running = False
            waiting, self.waiting = list(self.waiting), collections.deque()
            self.wake.notify()
        for entry in waiting:
            entry.job.fail(ApiError(503, "the server is shutting down", code="unavailable"))
        self.thread.join(timeout)
        for _, future in self.calls:
            future.cancel()

    # ---- the loop ----

    def run(self) -> None:
        while True:
            with self.wake:
                while self.running and not self.waiting and not self.calls and not any(self.slots):
                    self.wake.wait()
                if not self.running:
                    break
                calls, self.calls = list(self.calls), collections.deque()
            for fn, future in calls:
                self.run_call(fn, future)
            try:
                self.step()
            except Exception as error:  # noqa: BLE001 - an engine failure fails its jobs, never the server
                log.exception("inference step failed")
                self.fail_all(ApiError(500, f"inference failed: {error}", code="engine_error"))
        self.fail_all(ApiError(503, "the server is shutting down", code="unavailable"))

    def run_call(self, fn, future: concurrent.futures.Future) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn(self.engine))
        except BaseException as error:  # noqa: BLE001 - handed to the caller
            future.set_exception(error)

    def fail_all(self, error: ApiError) -> None:
        for b, slot in enumerate(self.slots):
            if slot is not None:
                slot.job.fail(error)
                self.slots[b] = None

    def step(self) -> None:
        self.admit()
        self.drop_cancelled()
        for b, slot in enumerate(self.slots):  # cached prompts: their logits are known already
            if slot is not None and slot.logits is not None:
                logits, slot.logits = slot.logits, None
                self.sample(b, slot, logits)
        take = self.share_budget()
        if not any(take):
            return
        rows = [slot.pending[:n] if slot else [] for slot, n in zip(self.slots, take)]
        logits, _ = self.engine.forward(rows, self.state, inplace=True)
        for b, (slot, n) in enumerate(zip(self.slots, take)):
            if slot is None or n == 0:
                continue
            if not slot.prompt_done:
                self.metrics.prefilled_tokens.inc(n)
            slot.fed += slot.pending[:n]
            slot.pending = slot.pending[n:]
            if not slot.pending:
                if not slot.prompt_done:
                    slot.prompt_done = True
                    self.cache_prompt(b, slot, logits[b])
                self.sample(b, slot, logits[b])

    def admit(self) -> None:
        """Move waiting jobs into free slots, each starting from its longest cached prefix or its initial state."""
        for b in range(self.max_batch):
            if self.slots[b] is not None:
                continue
            with self.wake:
                entry = self.waiting.popleft() if self.waiting else None
            if entry is None:
                return
            job = entry.job
            if job.cancelled:
                continue
            cached, logits, skip = self.cache.checkout(job.state_id, job.prompt)
            self.count_admitted(len(job.prompt), skip)
            self.state.assign_row(b, cached if cached is not None else self.start_state(job.state_id))
            slot = Slot(job, pending=list(job.prompt[skip:]), fed=list(job.prompt[:skip]),
                        submitted_at=entry.submitted_at)
            if not slot.pending:
                slot.prompt_done, slot.logits = True, logits
            self.slots[b] = slot
            job.started()

    def count_admitted(self, prompt_tokens: int, cached_tokens: int) -> None:
        self.metrics.prompt_tokens.inc(prompt_tokens)
        self.metrics.cache_lookups.inc()
        if cached_tokens:
            self.metrics.cache_hits.inc()
            self.metrics.cache_hit_tokens.inc(cached_tokens)

    def start_state(self, state_id: str) -> RecurrentState:
        state = self.initial_states.get(state_id, self.request_states.get(state_id, self.default_state))
        if state is None:
            state = host_row(self.engine.new_state(1), 0)
        return state

    def drop_cancelled(self) -> None:
        for b, slot in enumerate(self.slots):
            if slot is not None and slot.job.cancelled:
                self.slots[b] = None  # the client left: the slot is free at once, nothing is cached

    def share_budget(self) -> list[int]:
        """Tokens each slot feeds this step: at most token_chunk_size in all, shared fairly (decode steps first)."""
        take, budget = [0] * self.max_batch, self.token_chunk_size
        while budget > 0:
            active = [b for b, s in enumerate(self.slots) if s is not None and len(s.pending) > take[b]]
            if not active:
                break
            share = max(1, budget // len(active))
            for b in sorted(active, key=lambda b: len(self.slots[b].pending)):
                n = min(share, len(self.slots[b].pending) - take[b], budget)
                take[b] += n
                budget -= n
                if budget == 0:
                    break
        return take

    def sample(self, b: int, slot: Slot, logits: np.ndarray) -> None:
        job = slot.job
        try:
            token = job.next_token(logits)
            self.count_token(slot)  # before accept, which may end the reply: a client then sees it counted
            reason = job.accept(token)
        except Exception as error:  # noqa: BLE001 - one job's failure is its own, not its neighbours'
            log.exception("sampling failed")
            job.fail(ApiError(500, f"sampling failed: {type(error).__name__}: {error}", code="sampler_error"))
            self.slots[b] = None
            return
        if reason is None:
            slot.pending = [token]
            return
        if reason == "stop":  # the state after every fed token (the last sampled one was never fed)
            self.cache.insert(job.state_id, slot.fed, host_row(self.state, b), logits)
        self.slots[b] = None

    def count_token(self, slot: Slot) -> None:
        """A sampled token: the time to first token (from the queue) or since the previous token."""
        now = time.perf_counter()
        if slot.last_token_at is None:
            self.metrics.time_to_first_token.observe(now - slot.submitted_at)
        else:
            self.metrics.inter_token_latency.observe(now - slot.last_token_at)
        slot.last_token_at = now
        self.metrics.generated_tokens.inc()

    def cache_prompt(self, b: int, slot: Slot, logits: np.ndarray) -> None:
        prompt = slot.job.prompt
        if len(prompt) > CACHE_PROMPTS_LONGER_THAN and slot.fed == list(prompt):
            self.cache.insert(slot.job.state_id, list(prompt), host_row(self.state, b), logits)
