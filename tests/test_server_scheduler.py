"""The scheduler on its own: fair token budgets, the prefix cache, the bounded queue, engine failures, `call`."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import ai00ref
from ai00ref.server.errors import ApiError
from ai00ref.server.scheduler import PrefixCache, Scheduler, Slot
from ai00ref.weights.random_model import RandomModelSpec, write_random_model

NIL = "00000000-0000-0000-0000-000000000000"


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    path = write_random_model(RandomModelSpec("v7", n_layer=1, n_embd=32, n_vocab=64, head_size=16, seed=3),
                              tmp_path_factory.mktemp("m") / "m.st")
    return ai00ref.load_model(path)


class GreedyJob:
    """Takes the argmax `n` times, then finishes with `reason`."""

    def __init__(self, prompt, n=4, reason="length", state_id=NIL):
        self.prompt, self.n, self.reason, self.state_id = list(prompt), n, reason, state_id
        self.cancelled, self.tokens, self.errors = False, [], []
        self.done = threading.Event()

    def started(self):
        pass

    def next_token(self, logits):
        return int(np.argmax(logits))

    def accept(self, token):
        self.tokens.append(token)
        if len(self.tokens) >= self.n:
            self.done.set()
            return self.reason
        return None

    def fail(self, error):
        self.errors.append(error)
        self.done.set()


def run_all(scheduler, jobs, timeout=30):
    for job in jobs:
        scheduler.submit(job)
    for job in jobs:
        assert job.done.wait(timeout)
    scheduler.call(lambda engine: None).result(timeout)  # the step that finished them is over (cache written)
    return [job.tokens for job in jobs]


def direct_greedy(engine, prompt, n):
    """The same decoding without the scheduler."""
    logits, state = engine.forward([prompt], engine.new_state(1))
    tokens = []
    for _ in range(n):
        tokens.append(int(np.argmax(logits[0])))
        logits, state = engine.forward([[tokens[-1]]], state)
    return tokens


def test_outputs_equal_direct_decoding_whatever_runs_together(engine):
    scheduler = Scheduler(engine, max_batch=3, token_chunk_size=5)
    try:
        prompts = [[1, 2, 3, 4, 5, 6, 7, 8, 9], [10], [11, 12], [13, 14, 15, 16]]
        got = run_all(scheduler, [GreedyJob(p, n=6) for p in prompts])
        assert got == [direct_greedy(engine, p, 6) for p in prompts]
        assert scheduler.busy() == 0
    finally:
        scheduler.close()


def test_budget_is_shared_fairly(engine):
    scheduler = Scheduler(engine, max_batch=3, token_chunk_size=16)
    try:
        scheduler.slots = [Slot(None, pending=list(range(100)), fed=[]), Slot(None, pending=[1], fed=[]),
                           Slot(None, pending=[2], fed=[])]
        assert scheduler.share_budget() == [14, 1, 1]
        scheduler.slots = [Slot(None, pending=list(range(20)), fed=[]), None, Slot(None, pending=list(range(20)),
                                                                                   fed=[])]
        assert scheduler.share_budget() == [8, 0, 8]
    finally:
        scheduler.slots = [None] * 3
        scheduler.close()


def test_prefix_cache_longest_prefix_and_lru():
    cache = PrefixCache(capacity=2)
    state = object()  # states are opaque to the cache
    cache.insert("a", [1, 2], state, np.zeros(3))
    cache.insert("a", [1, 2, 3, 4], state, np.ones(3))
    _, logits, n = cache.checkout("a", [1, 2, 3, 4, 5])
    assert n == 4 and logits[0] == 1
    assert cache.checkout("a", [1, 2, 9])[2] == 2
    assert cache.checkout("b", [1, 2])[2] == 0  # ids do not share entries
    cache.checkout("a", [1, 2])  # [1, 2] is now the most recent
    cache.insert("a", [7], state, np.zeros(3))  # evicts [1, 2, 3, 4]
    assert cache.checkout("a", [1, 2, 3, 4])[2] == 2


def test_a_stopped_generation_is_cached_and_continued_exactly(engine):
    scheduler = Scheduler(engine, max_batch=2, token_chunk_size=8)
    try:
        first = GreedyJob([5, 6, 7], n=3, reason="stop")
        run_all(scheduler, [first])
        fed = [5, 6, 7] + first.tokens[:-1]  # the last sampled token was never fed
        assert tuple(fed) in scheduler.cache.entries[NIL]
        follow = fed + [first.tokens[-1], 9]
        second = GreedyJob(follow, n=4)
        run_all(scheduler, [second])
        assert second.tokens == direct_greedy(engine, follow, 4)
        again = GreedyJob(fed, n=2)  # the whole prompt is cached: sampled from the cached logits
        run_all(scheduler, [again])
        assert again.tokens == direct_greedy(engine, fed, 2)
    finally:
        scheduler.close()


def test_long_prompts_are_cached_after_prefill(engine):
    scheduler = Scheduler(engine, max_batch=1, token_chunk_size=8)
    try:
        prompt = list(range(1, 41))
        run_all(scheduler, [GreedyJob(prompt, n=2)])
        assert tuple(prompt) in scheduler.cache.entries[NIL]
        short = list(range(1, 20))
        run_all(scheduler, [GreedyJob(short, n=2)])
        assert tuple(short) not in scheduler.cache.entries[NIL]  # 32 tokens or fewer: not cached
    finally:
        scheduler.close()


class GatedEngine:
    """The engine, but every forward waits for `gate` (to hold slots busy) and may raise."""

    def __init__(self, engine):
        self.engine, self.info, self.gate, self.fail = engine, engine.info, threading.Event(), False

    def new_state(self, batch):
        return self.engine.new_state(batch)

    def forward(self, *args, **kwargs):
        self.gate.wait(30)
        if self.fail:
            raise RuntimeError("device lost")
        return self.engine.forward(*args, **kwargs)


def test_a_full_queue_answers_429_and_nothing_is_lost(engine):
    gated = GatedEngine(engine)
    scheduler = Scheduler(gated, max_batch=1, token_chunk_size=8, queue_size=2)
    try:
        jobs = [GreedyJob([1, 2], n=2) for _ in range(3)]
        scheduler.submit(jobs[0])
        while scheduler.busy() == 0:  # the first job holds the slot; the engine waits at the gate
            threading.Event().wait(0.01)
        scheduler.submit(jobs[1])
        scheduler.submit(jobs[2])
        with pytest.raises(ApiError) as refused:
            scheduler.submit(GreedyJob([1], n=1))
        assert refused.value.status == 429
        gated.gate.set()
        for job in jobs:
            assert job.done.wait(30) and job.tokens == direct_greedy(engine, [1, 2], 2)
    finally:
        gated.gate.set()
        scheduler.close()


def test_an_engine_failure_fails_its_jobs_and_the_loop_goes_on(engine):
    gated = GatedEngine(engine)
    gated.gate.set()
    scheduler = Scheduler(gated, max_batch=2, token_chunk_size=8)
    try:
        gated.fail = True
        broken = GreedyJob([1, 2], n=2)
        run_all(scheduler, [broken])
        assert broken.errors and broken.errors[0].status == 500
        gated.fail = False
        fine = GreedyJob([1, 2], n=2)
        run_all(scheduler, [fine])
        assert fine.tokens == direct_greedy(engine, [1, 2], 2) and not fine.errors
    finally:
        scheduler.close()


def test_call_runs_on_the_inference_thread(engine):
    scheduler = Scheduler(engine, max_batch=1)
    try:
        future = scheduler.call(lambda e: (threading.current_thread().name, e.info.n_layer))
        assert future.result(10) == ("ai00ref-inference", 1)
        with pytest.raises(ZeroDivisionError):
            scheduler.call(lambda e: 1 / 0).result(10)
    finally:
        scheduler.close()
    with pytest.raises(ApiError):
        scheduler.call(lambda e: None)
