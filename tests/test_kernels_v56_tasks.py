"""The layer tasks of `kernels/v6.py` (RWKV-6, and RWKV-5 through the same kernel), each against the lines of
`ai00ref/ref/v6.py`, `v5.py` (and `v4.py`'s channel mix) it mirrors.
Tolerances, arch and shapes as tests/test_kernels_lanes.py; each test runs the layer kernel built with only the
tasks under test.
"""

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import taichi_arch

ti = taichi_arch.import_taichi()


from ai00ref.ref import common as ref  # noqa: E402
from ai00ref.ref import v4 as ref_v4  # noqa: E402
from ai00ref.ref import v5 as ref_v5  # noqa: E402
from ai00ref.ref import v6 as ref_v6  # noqa: E402
from test_kernels_common_v7 import (assert_close, dev, make_plan, normal, plans,  # noqa: E402
                                    f64, rng_of, seeds, segments)

pytestmark = [pytest.mark.taichi, pytest.mark.usefixtures("taichi_arch")]  # Taichi started first


# ---- kernels/v6.py (RWKV-6, and RWKV-5 through the same kernel) ----
# Each test runs the real layer kernel with only the tasks under test (`layer_kernel(shape, tile, tasks)`) on
# weights packed by `device_blocks` from random canonical blocks, so the load-time packing (v6's r, k, v, g, w block
# order, v5's 1 - mix) is checked with each task. With f16 the matrices are rounded to f16 first: the kernel and the
# reference then see the same numbers.

VERSIONS_5_6 = ("v6", "v5.2", "v5.0")  # v5.1 is read as v5.2 (spec/v5.md §1)


def v56_blocks(rng, version, H, N, F, Dm, Dd, f16, L=2):
    """L random canonical blocks of `version` (only what each version has: v5.0 no gate, v5 no LoRAs)."""
    from ai00ref.weights.canonical import Block, ChannelMix, LayerNorm, V5TimeMix, V6TimeMix

    C = H * N

    def mat(*shape, gain=1.0):  # a matrix the device keeps in the matrix dtype
        m = normal(rng, *shape, scale=gain * shape[-1] ** -0.5)
        return m.astype(np.float16).astype(np.float32) if f16 else m

    def unit(*shape):
        return rng.uniform(0, 1, shape).astype(np.float32)

    def norm():
        return LayerNorm(rng.uniform(0.6, 1.4, C).astype(np.float32), normal(rng, C, scale=0.1))

    blocks = []
    for _ in range(L):
        ffn = ChannelMix(mix_k=unit(C), mix_r=unit(C), key=mat(F, C), value=mat(C, F), receptance=mat(C, C))
        bonus = rng.uniform(-1, 1, (H, N)).astype(np.float32)
        if version == "v6":
            att = V6TimeMix(maa_x=unit(C), maa_wkvrg=unit(5, C), maa_w1=mat(5 * Dm, C, gain=2.0),
                            maa_w2=mat(5, C, Dm), decay=rng.uniform(-4, 1, C).astype(np.float32),
                            decay_w1=mat(Dd, C), decay_w2=mat(C, Dd), bonus=bonus, key=mat(C, C), value=mat(C, C),
                            receptance=mat(C, C), gate=mat(C, C), output=mat(C, C), ln_x=norm())
        else:
            gated = version != "v5.0"
            att = V5TimeMix(mix_k=unit(C), mix_v=unit(C), mix_r=unit(C), mix_g=unit(C) if gated else None,
                            decay=np.exp(-np.exp(rng.uniform(-4, 1, (H, N)))).astype(np.float32), bonus=bonus,
                            key=mat(C, C), value=mat(C, C), receptance=mat(C, C),
                            gate=mat(C, C) if gated else None, output=mat(C, C), ln_x=norm())
        blocks.append(Block(ln1=norm(), att=att, ln2=norm(), ffn=ffn))
    return blocks


def quantized_blocks(blocks, scheme, dequantize=False):
    """The blocks with weights.canonical's QUANTIZED_MATRICES quantized (or quantized and dequantized back)."""
    import dataclasses

    from ai00ref.weights.quant import quantize

    def part(module, names):
        done = {n: quantize(getattr(module, n), scheme) for n in names if getattr(module, n, None) is not None}
        return dataclasses.replace(module, **{n: q.dequantize() if dequantize else q for n, q in done.items()})

    return [dataclasses.replace(b, att=part(b.att, ("key", "value", "receptance", "gate", "output")),
                                ffn=part(b.ffn, ("key", "value", "receptance"))) for b in blocks]


def v56_layers(version, blocks, f16):
    from kernels import v5, v6

    stacked = (v6 if version == "v6" else v5).device_blocks(blocks, ti.f16 if f16 else ti.f32)
    assert len(stacked.groups) == 1  # a small model is one group: weight slot == layer
    return stacked.groups[0]


def run_v56(layers, tasks, layer, plan, tile=1, x=None, att_x=None, S=None, ffn_x=None, sc=None):
    """The layer kernel holding only `tasks`, once; returns the host arrays x, att_x, S, ffn_x, sc after it."""
    from kernels import v6
    from kernels.stacking import layer_arrays

    s = layers.shape
    T, B = plan.T, len(plan.lengths_host)
    defaults = (np.zeros((T, s.C)), np.zeros((B, 2, s.C)), np.zeros((B, 2, s.H, s.N, s.N)), np.zeros((B, 2, s.C)),
                np.zeros((T, s.WIDTH)))
    arrays = [dev(a if a is not None else d) for a, d in zip((x, att_x, S, ffn_x, sc), defaults)]
    x_d, att_x_d, S_d, ffn_x_d, sc_d = arrays
    v6.layer_kernel(s, tile, tuple(tasks), layers.storage)(x_d, *layer_arrays(layers), att_x_d, S_d, ffn_x_d,
                                                           plan.packed, sc_d, layer, layer)
    return [a.to_numpy() for a in arrays]


def block_of(array, start, C):
    return f64(array[:, start:start + C])


# Sizes (H, N, F, Dm, Dd) from a fixed pool: each distinct size compiles the layer kernel anew (its Shape is a
# compile-time argument: several seconds on lavapipe), so the pool holds the edge cases (one head of one channel;
# sizes that fill no lane group evenly; several heads, wide FFN and LoRAs) and hypothesis varies the values, plans,
# versions, precisions and layers within them.
V56_SIZES = ((1, 1, 1, 1, 1), (3, 12, 20, 6, 6), (2, 5, 7, 2, 3))
v56_case = dict(version=st.sampled_from(VERSIONS_5_6), sizes=st.sampled_from(V56_SIZES), f16=st.booleans(),
                layer=st.integers(0, 1), seed=seeds)


@given(lengths=plans(max_rows=3, max_len=5), tile=st.sampled_from([1, 8]), **v56_case)
def test_v6_token_shift_mixes(lengths, tile, version, sizes, f16, layer, seed):
    """Tasks shift_mix, maa_lora, data_mix vs ref.v6.token_shift_mixes on z = layer_norm(x; ln1) and its token
    shift, per row (v5: its static mixes, ref lerp_current); the state gets z at each row's last position. In a GPU
    decode pass (v6) the three are two tasks (kernels/norm_linear.py: folded_maa_task stages xxx in workgroup memory
    and leaves z in MIXED's first block)."""
    check_v6_token_shift_mixes(lengths, tile, version, sizes, f16, layer, seed)


@pytest.mark.parametrize("tile", [32, 64])
def test_v6_token_shift_mixes_as_tiled_products(tile):
    """A GPU batch (tile 32) or prefill (tile 64) pass: data_mix as a tiled product (kernels/gpu_gemm.py) of five
    route blocks, each reading its own columns of the same W2 rows, all gated by DELTA (C = 32: the blocks start on
    multiples of the workgroups' rows); maa_lora (30 rows) split over its inputs in 2 workgroups of one step each (F
    = 60 columns of partial sums: `gpu_gemm.low_rank_shape`); 70 positions in three rows."""
    import kernels
    from kernels import gpu_gemm, v6, v6_layout

    sizes = (2, 16, 60, 6, 6)
    if kernels.is_gpu():
        assert gpu_gemm.takes(tile, 5 * 32, v6.data_mix_route(v6_layout.Shape(32, 2, 60, 6, 6, True)))
        assert gpu_gemm.low_rank_shape(tile, 30, 60).splits == 2
    check_v6_token_shift_mixes((30, 12, 28), tile, "v6", sizes, True, 1, 3)


def check_v6_token_shift_mixes(lengths, tile, version, sizes, f16, layer, seed):
    from kernels import norm_linear
    from kernels import v6_layout as layout

    rng = rng_of(seed)
    H, N, F, Dm, Dd = sizes
    blocks = v56_blocks(rng, version, H, N, F, Dm, Dd, f16)
    layers, att = v56_layers(version, blocks, f16), blocks[layer].att
    s, C, plan = layers.shape, H * N, make_plan(lengths)
    x, att_x0 = normal(rng, plan.T, C), normal(rng, len(lengths), 2, C)
    _, att_x, _, _, sc = run_v56(layers, ("shift_mix", "maa_lora", "data_mix"), layer, plan, tile, x=x, att_x=att_x0)
    ln1 = blocks[layer].ln1
    expected_att_x = f64(att_x0).copy()
    for b, (a, z) in enumerate(segments(lengths)):
        normed = ref.layer_norm(f64(x[a:z]), ln1.weight, ln1.bias)
        prev = ref.previous_tokens(normed, f64(att_x0[b, layer]))
        expected_att_x[b, layer] = normed[-1]
        got = lambda m: sc[a:z, s.MIXED + m * C:s.MIXED + (m + 1) * C]  # noqa: E731
        if version != "v6":
            mixes = ((layout.MIX_R, att.mix_r), (layout.MIX_K, att.mix_k), (layout.MIX_V, att.mix_v),
                     (layout.MIX_G, att.mix_g))
            for m, mix in mixes[:4 if s.gated else 3]:
                assert_close(got(m), ref.lerp_current(normed, prev, f64(mix)), np.abs(normed) + np.abs(prev))
            continue
        delta = np.abs(prev - normed)
        xxx = ref.lerp_previous(normed, prev, f64(att.maa_x))
        if norm_linear.takes(tile):  # folded: xxx stays in workgroup memory, z is kept
            assert_close(got(layout.MIX_X), normed)
        else:
            assert_close(got(layout.MIX_X), xxx, np.abs(normed) + np.abs(prev))
        expected = ref_v6.token_shift_mixes(normed, prev, att)  # (5, T, C) in the reference's w, k, v, r, g order
        W1 = f64(att.maa_w1).reshape(5, Dm, C)
        lora = np.tanh(xxx @ f64(att.maa_w1).T).reshape(-1, 5, Dm)
        for m, r in enumerate(layout.REF_ORDER):  # kernel block 1 + m is the reference's mix r
            W2 = np.abs(f64(att.maa_w2[r]))
            terms = np.abs(normed) + delta * (f64(att.maa_wkvrg[r]) + np.abs(lora[:, r]) @ W2.T
                                              + ((np.abs(normed) + np.abs(prev)) @ np.abs(W1[r]).T) @ W2.T)
            assert_close(got(layout.MIX_R + m), expected[r], terms)
    assert_close(att_x, expected_att_x)


@given(T=st.integers(1, 11), tile=st.sampled_from([1, 8]), **v56_case)
def test_v6_projections_and_decay(T, tile, version, sizes, f16, layer, seed):
    """Tasks projections (and decay, v6) vs the linear lines of ref.v6/v5.time_mix, and ref.v6.decay on x_w."""
    check_v6_projections_and_decay(T, tile, version, sizes, f16, layer, seed)


@pytest.mark.parametrize("version, tile", [("v5.2", 64), ("v6", 64), ("v6", 32)])
def test_v6_projections_as_tiled_products(version, tile):
    """C = 64: the projections' route fits gpu_gemm's workgroups (PREFILL's 32 rows, BATCH's 16), so a GPU runs them
    as one tiled product, and v6's decay_w1 (16 rows) split over its inputs in 4 workgroups of one step each (F = 64
    columns of partial sums: `gpu_gemm.low_rank_shape`); 70 positions: several workgroups of positions, the last
    part-filled;
    several input steps (BATCH: shared by its groups)."""
    import kernels
    from kernels import gpu_gemm
    if kernels.is_gpu():
        assert gpu_gemm.low_rank_shape(tile, 16, 64).splits == 4
    check_v6_projections_and_decay(70, tile, version, (4, 16, 64, 4, 16), True, 1, 3)


def check_v6_projections_and_decay(T, tile, version, sizes, f16, layer, seed, scheme=None):
    """`scheme`: the blocks' quantizable matrices quantized (a quantized group: u32 `mats`, dense `low`), against
    the dequantized ones."""
    from kernels import v6_layout as layout

    rng = rng_of(seed)
    H, N, F, Dm, Dd = sizes
    blocks = v56_blocks(rng, version, H, N, F, Dm, Dd, f16)
    if scheme:
        blocks, dequantized = quantized_blocks(blocks, scheme), quantized_blocks(blocks, scheme, dequantize=True)
    layers, att = v56_layers(version, blocks, f16), (dequantized if scheme else blocks)[layer].att
    s, C = layers.shape, H * N
    sc0 = normal(rng, T, s.WIDTH)
    *_, sc = run_v56(layers, ("projections", "decay"), layer, make_plan([T]), tile, sc=sc0)
    mixed = lambda m: block_of(sc0, s.MIXED + m * C, C)  # noqa: E731
    matrices = ((layout.MIX_R, att.receptance), (layout.MIX_K, att.key), (layout.MIX_V, att.value),
                (layout.MIX_G, att.gate))
    for p, (m, W) in enumerate(matrices[:4 if s.gated else 3]):
        W = f64(W)
        assert_close(block_of(sc, s.PROJ + p * C, C), ref.linear(mixed(m), W), np.abs(mixed(m)) @ np.abs(W).T)
    if version != "v6":
        return
    x_w, Wd1, Wd2 = mixed(layout.MIX_W), f64(att.decay_w1), f64(att.decay_w2)
    hidden = np.tanh(ref.linear(x_w, Wd1))
    first_terms = np.abs(x_w) @ np.abs(Wd1).T
    assert_close(block_of(sc, s.DECAY_LOW, Dd), hidden, first_terms)
    w = ref_v6.decay(x_w, att)
    exponent_terms = np.abs(att.decay) + (np.abs(hidden) + first_terms) @ np.abs(Wd2).T
    assert_close(block_of(sc, s.W, C), w, w + w * np.exp(att.decay + hidden @ Wd2.T) * exponent_terms)


@given(lengths=plans(max_rows=3, max_len=5), tile=st.sampled_from([1, 8]), **v56_case)
@example(lengths=[5, 2], tile=64, version="v6", sizes=V56_SIZES[1], f16=False, layer=1, seed=4)  # prefill WKV
@example(lengths=[3, 4], tile=64, version="v5.2", sizes=V56_SIZES[2], f16=True, layer=0, seed=5)
@example(lengths=[70, 0, 33], tile=64, version="v6", sizes=V56_SIZES[2], f16=False, layer=0, seed=6)  # long rows
def test_v6_wkv_and_gate(lengths, tile, version, sizes, f16, layer, seed):
    """Tasks wkv and output_gate: ref.v5.wkv_step looped over each row of a ragged batch from a random state (v6
    with its per-token decay, the W column; v5 with the static one it was packed with), then group_norm(y; ln_x) ·
    silu(gate). On a GPU, tile 1 runs them as one task (wkv_gate_task), tile 8 as two (the WKV a thread per value
    column), tile 64 as two (the WKV a lane group per value column, lane_wkv_task)."""
    rng = rng_of(seed)
    H, N, F, Dm, Dd = sizes
    blocks = v56_blocks(rng, version, H, N, F, Dm, Dd, f16)
    layers, att = v56_layers(version, blocks, f16), blocks[layer].att
    s, C, plan, B = layers.shape, H * N, make_plan(lengths), len(lengths)
    T = plan.T
    sc0 = normal(rng, T, s.WIDTH)
    sc0[:, s.W:s.W + C] = rng.uniform(0, 1, (T, C))
    S0 = normal(rng, B, 2, H, N, N, scale=0.5)
    *_, S, _, sc = run_v56(layers, ("wkv", "output_gate"), layer, plan, tile, S=S0, sc=sc0)
    per_head = lambda start: block_of(sc0, start, C).reshape(T, H, N)  # noqa: E731
    r, k, v, w = (per_head(c) for c in (s.PROJ, s.PROJ + C, s.PROJ + 2 * C, s.W))
    expected_S, expected_y = f64(S0).copy(), np.zeros((T, C))
    for b, (start, stop) in enumerate(segments(lengths)):
        state = expected_S[b, layer]
        for t in range(start, stop):
            decay = w[t] if version == "v6" else f64(att.decay)
            y, state = ref_v5.wkv_step(r[t], k[t], v[t], state, decay, f64(att.bonus))
            expected_y[t] = y.reshape(C)
        expected_S[b, layer] = state
    assert_close(S, expected_S)
    normed = ref.group_norm(expected_y, H, f64(att.ln_x.weight), f64(att.ln_x.bias), ref.GN_EPS)
    gate = ref.silu(block_of(sc0, s.PROJ + 3 * C, C)) if version != "v5.0" else 1.0
    # the recurrence has no cheap |terms| (as test_v7_wkv_gate_task): y's, scaled up by GroupNorm's 1/σ per head
    spread = expected_y.reshape(T, H, N).std(-1, keepdims=True) + 1e-3
    y_scale = (np.abs(expected_y).sum() + 1.0) / expected_y.size ** 0.5
    terms = ((y_scale / spread + 1.0) * np.abs(f64(att.ln_x.weight)).reshape(H, N)).reshape(T, C) * np.abs(gate)
    assert_close(block_of(sc, s.Y, C), normed * gate, terms)


@given(T=st.integers(1, 10), **v56_case)
def test_v6_output_gate_task(T, version, sizes, f16, layer, seed):
    """group_norm(y; ln_x) * silu(x_g W_gᵀ) (ref.v6.time_mix, ref.v5.time_mix; v5.0: no gate)."""
    rng = rng_of(seed)
    H, N, F, Dm, Dd = sizes
    blocks = v56_blocks(rng, version, H, N, F, Dm, Dd, f16)
    layers, att = v56_layers(version, blocks, f16), blocks[layer].att
    s, C = layers.shape, H * N
    sc0 = normal(rng, T, s.WIDTH)
    *_, sc = run_v56(layers, ("output_gate",), layer, make_plan([T]), sc=sc0)
    normed = ref.group_norm(block_of(sc0, s.Y, C), H, f64(att.ln_x.weight), f64(att.ln_x.bias), ref.GN_EPS)
    gate = ref.silu(block_of(sc0, s.PROJ + 3 * C, C)) if version != "v5.0" else 1.0
    assert_close(block_of(sc, s.Y, C), normed * gate)


@given(lengths=plans(max_rows=3, max_len=5), tile=st.sampled_from([1, 8]), **v56_case)
def test_v6_channel_mix(lengths, tile, version, sizes, f16, layer, seed):
    """Tasks ffn_shift_mix, ffn_key, ffn_receptance, ffn_value: x += ref.v6.channel_mix(layer_norm(x; ln2), ...)
    per row (v5: ref.v4.channel_mix); the state gets the normed x at each row's last position. At tile 1 on a GPU,
    ffn_key and ffn_receptance run as one task (kernels/v6.py ffn_in_task)."""
    rng = rng_of(seed)
    H, N, F, Dm, Dd = sizes
    blocks = v56_blocks(rng, version, H, N, F, Dm, Dd, f16)
    layers, block = v56_layers(version, blocks, f16), blocks[layer]
    C, plan, ffn = H * N, make_plan(lengths), block.ffn
    x0, ffn_x0 = normal(rng, plan.T, C), normal(rng, len(lengths), 2, C)
    x, _, _, ffn_x, _ = run_v56(layers, ("ffn_shift_mix", "ffn_key", "ffn_receptance", "ffn_value"), layer, plan,
                                tile, x=x0, ffn_x=ffn_x0)
    expected, terms, expected_ffn_x = f64(x0).copy(), np.abs(f64(x0)), f64(ffn_x0).copy()
    channel_mix = ref_v6.channel_mix if version == "v6" else ref_v4.channel_mix
    Wk, Wv, Wr = (np.abs(f64(W)) for W in (ffn.key, ffn.value, ffn.receptance))
    for b, (a, z) in enumerate(segments(lengths)):
        normed = ref.layer_norm(f64(x0[a:z]), block.ln2.weight, block.ln2.bias)
        out, expected_ffn_x[b, layer] = channel_mix(normed, f64(ffn_x0[b, layer]), ffn)
        expected[a:z] += out
        inputs = np.abs(normed) + np.abs(ref.previous_tokens(normed, f64(ffn_x0[b, layer])))  # bounds |x_k|, |x_r|
        key_terms = inputs @ Wk.T  # bounds |x_k W_kᵀ| and its summands
        # relu²'s value and its rounding (2|s|·δs) through W_v, then the receptance's rounding times |r·(k W_vᵀ)|
        terms[a:z] += (3 * key_terms ** 2) @ Wv.T + (inputs @ Wr.T) * np.abs(out)
    assert_close(x, expected, terms)
    assert_close(ffn_x, expected_ffn_x)
