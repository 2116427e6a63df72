"""Taichi kernels for RWKV v4, v5 (5.0/5.1/5.2) and v6 (kernels/v4.py, v5.py, v6.py) against the reference.

(a) whole models: ragged batch, then single-token steps; logits per row within spec/tolerances.md (fp32 ≤ 1e-4,
fp16 ≤ 1e-2 relative L2), states too; v5 and v6 run one launch per layer. (b) hypothesis: v4's recurrent kernel
against its ref function (the v5/v6 layer kernel's tasks: tests/test_kernels_v56_tasks.py).
Arch: env AI00REF_TAICHI_ARCH (tests/taichi_arch.py), one per process.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ai00ref
from ai00ref.ref import v4 as ref_v4
from ai00ref.ref.state import to_official
from ai00ref.weights.random_model import RandomModelSpec, write_random_model
from taichi_arch import SLOW
from test_kernels_engine import SMALL

pytestmark = pytest.mark.taichi

TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}
VARIANTS = ("v4", "v5.0", "v5.1", "v5.2", "v6")
READ_AS = {"v5.1": "v5.2"}  # per-head decay broadcast to (H, N) at load: a v5.2 model (spec/v5.md §1)


def rel_l2(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(ours - ref) / max(np.linalg.norm(ref), 1e-12))


def device(array: np.ndarray):
    import taichi as ti
    from kernels import arrays

    return arrays.upload(array, ti.f32)


def plan_for(lengths):
    from kernels.engine import Pass

    return Pass.plan(tuple(lengths))


# ---- (a) whole models ----

@pytest.fixture(scope="module")
def model_paths(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models_v4_v6")
    paths = {}
    for variant in VARIANTS:  # the conformance fixtures' shape, whose kernels those tests compiled (test_kernels_engine)
        spec = RandomModelSpec(variant, n_layer=2, **SMALL)
        suffix = "pth" if variant == "v5.0" else "st"  # a v5.0 .st reads as v5.2 by design (spec/v5.md §1)
        paths[variant] = write_random_model(spec, folder / f"{variant}.{suffix}")
    return paths


# On lavapipe only v5.0 at fp16: the other cases' kernels (these small models') run there in the conformance cases
# (fp32, every version: the official fixtures) and in test_kernels_engine.py's fp16 test (v4, v5.2, v6; v5.1 reads as
# v5.2), and compiling them again in another test process cost CI 30-75 s a case
MODEL_CASES = [(v, p) for p in ("fp32", "fp16") for v in VARIANTS if not SLOW or (v, p) == ("v5.0", "fp16")]


@pytest.mark.parametrize("variant, precision", MODEL_CASES)
def test_model_matches_reference(taichi_arch, model_paths, variant, precision):
    ref = ai00ref.load_model(model_paths[variant])
    ours = ai00ref.load_model(model_paths[variant], backend="taichi", arch=taichi_arch, precision=precision)
    assert ours.info.variant == ref.info.variant == READ_AS.get(variant, variant)
    tol, V = TOLERANCE[precision], ref.info.n_vocab
    tokens = [[1, 5, 9, 3, 7], [2], [11, 4, 8]]
    full_ref, s_ref = ref.forward(tokens, ref.new_state(3), full_output=True)
    full_ours, s_ours = ours.forward(tokens, ours.new_state(3), full_output=True)
    for a, b in zip(full_ours, full_ref):
        assert max(rel_l2(a[t], b[t]) for t in range(len(b))) <= tol
    for step in range(3):
        tokens = [[(7 * step + 13 * b + 1) % V] for b in range(3)]
        logits_ref, s_ref = ref.forward(tokens, s_ref)
        logits_ours, s_ours = ours.forward(tokens, s_ours)
        assert max(rel_l2(logits_ours[b], logits_ref[b]) for b in range(3)) <= tol, f"step {step}"
    for b in range(3):
        for a, r in zip(s_ours.to_official(b), to_official(s_ref, b)):
            assert rel_l2(a, r) <= tol


@pytest.mark.parametrize("variant", ["v5.0", "v5.2", "v6"])
def test_one_launch_per_layer(taichi_arch, model_paths, variant):
    """v5 and v6 run each layer as one kernel launch (kernels/v6.py), after one for the embedding lookup and before
    one for the head."""
    import taichi as ti

    from kernels.embed import GRAPH_IDS
    from kernels.launch import recording

    model = ai00ref.load_model(model_paths[variant], backend="taichi", arch=taichi_arch, graph=False)
    state, plan = model.new_state(2), model.passes.get((3, 1))
    with recording() as calls:
        model.launch_pass(ti.Vector([1] * GRAPH_IDS), state, plan, False)
    assert len(calls) == 1 + model.info.n_layer + 1


# ---- (b) kernels against their reference functions ----

@st.composite
def ragged(draw, max_rows=3, max_len=4):
    """Row lengths of a pass, a layer count and a layer index, and a numpy seed."""
    lengths = draw(st.lists(st.integers(1, max_len), min_size=1, max_size=max_rows))
    n_layer = draw(st.integers(1, 2))
    return lengths, n_layer, draw(st.integers(0, n_layer - 1)), draw(st.integers(0, 2**32 - 1))


@given(ragged(), st.integers(1, 8), st.booleans())
def test_v4_wkv_matches_wkv_step(taichi_arch, case, C, fresh):
    from kernels import v4

    lengths, L, layer, seed = case
    g, B, T = np.random.default_rng(seed), len(lengths), sum(lengths)
    k, v, r = g.normal(0, 2, (T, C)), g.normal(0, 1, (T, C)), g.uniform(0, 1, (T, C))
    aa, bb = g.normal(0, 1, (B, L, C)), g.uniform(0.1, 2, (B, L, C))
    pp = np.full((B, L, C), -1e30) if fresh else g.uniform(-3, 3, (B, L, C))
    decay, bonus = -np.exp(g.uniform(-3, 1, C)), g.normal(0, 1, C)
    k, v, r, aa, bb, pp, decay, bonus = (a.astype(np.float32) for a in (k, v, r, aa, bb, pp, decay, bonus))
    state = [device(a) for a in (aa, bb, pp)]
    plan, y = plan_for(lengths), device(np.zeros((T, C)))
    v4.wkv(device(r), device(k), device(v), *state, device(decay), device(bonus), layer, plan.start, plan.length, y)
    expect = np.empty((T, C), np.float32)
    for b, start in enumerate(np.cumsum([0] + lengths[:-1])):
        a_, b_, p_ = aa[b, layer], bb[b, layer], pp[b, layer]
        for t in range(start, start + lengths[b]):
            wkv, a_, b_, p_ = ref_v4.wkv_step(k[t], v[t], a_, b_, p_, decay, bonus)
            expect[t] = r[t] * wkv
        aa[b, layer], bb[b, layer], pp[b, layer] = a_, b_, p_
    np.testing.assert_allclose(y.to_numpy(), expect, rtol=1e-5, atol=1e-5)
    for ours, ref in zip(state, (aa, bb, pp)):
        np.testing.assert_allclose(ours.to_numpy(), ref, rtol=1e-5, atol=1e-5)
