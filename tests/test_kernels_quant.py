"""Quantized matrices on the Taichi engine (kernels/quant.py, kernels/lanes.py `dot_tile`): the u32 device rows hold
QuantizedMatrix's bytes, and a quantized `linear_task` matches ref.common.linear with the QuantizedMatrix (x times
the dequantized float32 matrix) to spec/tolerances.md §Quantized. Arch: env AI00REF_TAICHI_ARCH.

Few compiled variants (each costs ~10-60 s to compile here): scheme × tile, one activation, accumulating.
"""

import functools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import taichi_arch

ti = taichi_arch.import_taichi()

from kernels.launch import kernel  # noqa: E402  (a test kernel runs on the runtime in use, as the engine's do)

from ai00ref.ref import common as ref  # noqa: E402
from ai00ref.weights.quant import SCHEMES, quantize  # noqa: E402
from test_kernels_common_v7 import assert_close, dev, normal, rng_of, seeds  # noqa: E402

pytestmark = [pytest.mark.taichi, pytest.mark.usefixtures("taichi_arch")]  # Taichi started first


def u32(array):
    from kernels import arrays

    return arrays.upload(array, ti.u32)


@functools.cache
def quantized_linear_runner(scheme: str, tile: int):
    from kernels.common import ACT_NONE
    from kernels.lanes import linear_task

    @kernel
    def run(W: ti.types.ndarray(), layer: ti.i32, w_row: ti.i32, n_out: ti.i32, n_in: ti.i32,
            X: ti.types.ndarray(), x_col: ti.i32, Y: ti.types.ndarray(), y_col: ti.i32):
        linear_task(W, layer, w_row, n_out, n_in, X, x_col, Y, y_col, ACT_NONE, True, tile, storage=scheme)
    return run


@functools.cache
def quantized_split_runner(scheme: str, n_out: int, n_in: int):
    """`linear_task` at tile 1 with its sizes known when it compiles, so that long rows split (`lanes.row_split`)."""
    from kernels.common import ACT_NONE
    from kernels.lanes import linear_task

    @kernel
    def run(W: ti.types.ndarray(), X: ti.types.ndarray(), Y: ti.types.ndarray()):
        linear_task(W, 0, 0, n_out, n_in, X, 0, Y, 0, ACT_NONE, True, 1, storage=scheme)
    return run


@functools.cache
def half_runner():
    from kernels.quant import half_to_f32

    @kernel
    def run(bits: ti.types.ndarray(), out: ti.types.ndarray()):
        for i in range(bits.shape[0]):
            out[i] = half_to_f32(bits[i])
    return run


def test_half_to_f32_is_exact_for_every_finite_half():
    halves = np.arange(1 << 16, dtype=np.uint32)
    finite = np.isfinite(halves.astype(np.uint16).view(np.float16))
    out = dev(np.zeros(int(finite.sum()), np.float32))
    half_runner()(u32(halves[finite]), out)
    expected = halves[finite].astype(np.uint16).view(np.float16).astype(np.float32)
    np.testing.assert_array_equal(out.to_numpy().view(np.uint32), expected.view(np.uint32))  # -0.0 included


@given(scheme=st.sampled_from(SCHEMES), R=st.integers(1, 5), K=st.integers(1, 300), seed=seeds)
def test_device_rows_are_the_matrix_bytes(scheme, R, K, seed):
    """Row r = codes[r]'s bytes, then scales[r]'s (spec/quant.md §4), padded to whole words."""
    from kernels.quant import code_words, device_rows, row_words

    q = quantize(normal(rng_of(seed), R, K), scheme)
    rows = device_rows(q)
    assert rows.dtype == np.uint32 and rows.shape == (R, row_words(scheme, K))
    as_bytes = rows.view(np.uint8).reshape(R, -1)
    n_code_bytes = 4 * code_words(scheme, K)
    np.testing.assert_array_equal(as_bytes[:, :n_code_bytes], q.codes)
    scale_bytes = q.scales.reshape(R, -1).view(np.uint8)
    np.testing.assert_array_equal(as_bytes[:, n_code_bytes:n_code_bytes + scale_bytes.shape[1]], scale_bytes)
    assert not as_bytes[:, n_code_bytes + scale_bytes.shape[1]:].any()  # at most one zero half of padding


@given(scheme=st.sampled_from(SCHEMES), tile=st.sampled_from([1, 8, 64]),
       T=st.one_of(st.integers(1, 12), st.sampled_from([4, 5, 8, 9, 17])),
       n_in=st.one_of(st.integers(1, 70), st.sampled_from([63, 64, 65, 127, 128, 129, 200, 256, 300])),
       n_out=st.integers(1, 40), offsets=st.tuples(st.integers(0, 3), st.integers(0, 5), st.integers(0, 4)),
       f16_input=st.booleans(), seed=seeds, data=st.data())
def test_quantized_linear_task(scheme, tile, T, n_in, n_out, offsets, f16_input, seed, data):
    """Y[:, y_col:] += X[:, x_col:x_col+in] Ŵ[layer, w_row:w_row+out]ᵀ vs ref.common.linear(X, QuantizedMatrix), in
    float64: K not a multiple of the block, the rows of several matrices stacked by layer, inputs past n_in in X
    (the padding's codes must not reach them). `f16_input`: matrices exact in fp16, as Ai00's files. Tile 64 on a
    GPU: kernels/gpu_gemm.py, each staged weight decoded from its words (`gpu_rows.element_value`)."""
    L = data.draw(st.integers(1, 3), label="L")
    layer = data.draw(st.integers(0, L - 1), label="layer")
    check_quantized_linear_task(scheme, tile, T, n_in, n_out, offsets, f16_input, seed, L, layer)


@pytest.mark.parametrize("scheme, tile, T", [("int8", 1, 2), ("nf4", 8, 11), ("sf4", 1, 1)])
def test_quantized_linear_task_whole_steps_and_the_rest(scheme, tile, T):
    """n_in = 1100 (not a whole number of blocks): several whole (unconditional) steps of words on any subgroup size
    up to 32, then the guarded rest with the padding's codes."""
    check_quantized_linear_task(scheme, tile, T, 1100, 21, (2, 1, 0), True, 5, 2, 1)


@pytest.mark.parametrize("scheme, tile", [(scheme, 64) for scheme in SCHEMES] + [("nf4", 32)])
def test_quantized_tiled_products(scheme, tile):
    """Tile 64 (on a GPU kernels/gpu_gemm.py's PREFILL shape; tile 32: BATCH, whose thread groups decode their own
    steps' weights): 70 positions and 40 rows, several workgroups each way; n_in = 1100, whole groups, then (32
    lanes, NF4/SF4) a short last group, the last block partly padding."""
    check_quantized_linear_task(scheme, tile, 70, 1100, 40, (1, 2, 3), True, 11, 2, 1)


@functools.cache
def v7_projections_runner(shape, scheme: str):
    from kernels import v7

    @kernel
    def run(mats: ti.types.ndarray(), low: ti.types.ndarray(), sc: ti.types.ndarray(), layer: ti.i32):
        v7.projections_task(shape, mats, low, layer, sc, 64, scheme)
    return run


def test_v7_quantized_projections_as_tiled_products():
    """A quantized group's r, k, v (u32 `mats`) and first stages (dense `low`, from row 0) at tile 64: on a GPU
    gpu_gemm's two routes (test_kernels_v7_tasks.py's dense case, C = 64, 70 positions), against the dequantized
    rows."""
    from kernels.quant import stack_rows
    from test_kernels_v7_tasks import assert_v7_projections, v7_case

    dims_low, layer = (16, 16, 16, 16), 1
    s, _, mats, _, sc = v7_case(rng_of(5), 70, 4, 16, dims_low)
    quantized = [quantize(m[:s.FIRST], "nf4") for m in mats]  # every quantizable row: K = C
    out = dev(sc)
    v7_projections_runner(s, "nf4")(u32(np.stack([stack_rows([q]) for q in quantized])),
                                    dev(np.ascontiguousarray(mats[:, s.FIRST:])), out, layer)
    W_hat = np.concatenate([quantized[layer].dequantize(), mats[layer, s.FIRST:]]).astype(np.float64)
    assert_v7_projections(s, sc, out.to_numpy(), W_hat, dims_low)


@pytest.mark.parametrize("version, scheme", [("v6", "int8"), ("v5.2", "sf4")])
def test_v6_quantized_projections_as_tiled_products(version, scheme):
    """A quantized group's r, k, v, g (u32 `mats`) and v6's decay_w1 (dense `low`) at tile 64: on a GPU gpu_gemm's
    routes (test_kernels_v56_tasks.py's dense case), against the dequantized matrices."""
    from test_kernels_v56_tasks import check_v6_projections_and_decay

    check_v6_projections_and_decay(70, 64, version, (4, 16, 24, 4, 16), True, 1, 3, scheme)


def check_quantized_linear_task(scheme, tile, T, n_in, n_out, offsets, f16_input, seed, L, layer,
                                static_sizes=False):
    """`static_sizes`: sizes as compile-time constants (`quantized_split_runner`; tile 1, no offsets, layer 0)."""
    from kernels.quant import stack_rows

    w_row, x_col, y_col = offsets
    rng = rng_of(seed)
    dense = normal(rng, L, w_row + n_out + 2, n_in, scale=n_in ** -0.5)
    if f16_input:
        dense = dense.astype(np.float16).astype(np.float32)
    quantized = [quantize(m, scheme) for m in dense]
    W = np.stack([stack_rows([q]) for q in quantized])  # (L, rows, row_words)
    X, Y0 = normal(rng, T, x_col + n_in + 3), normal(rng, T, y_col + n_out + 2)
    Y = dev(Y0)
    if static_sizes:
        assert tile == 1 and offsets == (0, 0, 0) and layer == 0
        quantized_split_runner(scheme, n_out, n_in)(u32(W), dev(X), Y)
    else:
        quantized_linear_runner(scheme, tile)(u32(W), layer, w_row, n_out, n_in, dev(X), x_col, Y, y_col)
    used_X = np.asarray(X[:, x_col:x_col + n_in], np.float64)
    W_hat = np.asarray(quantized[layer].dequantize(), np.float64)[w_row:w_row + n_out]  # what linear() multiplies by
    expected = np.asarray(Y0, np.float64).copy()
    expected[:, y_col:y_col + n_out] += ref.linear(used_X, W_hat)
    terms = np.abs(expected)
    terms[:, y_col:y_col + n_out] = np.abs(used_X) @ np.abs(W_hat).T + np.abs(Y0[:, y_col:y_col + n_out])
    assert_close(Y.to_numpy(), expected, terms)


def test_quantized_split_rows():
    """NF4 rows of SPLIT_COLUMNS + 37 at one position: on a GPU two lane groups per row (`lanes.row_split`), each
    reading its half of the row's groups of words (the second also the short last group: 8 words at 32 lanes; at
    lavapipe's 8 lanes there is none), their sums added through shared memory. A part that starts at the row's
    first group fails it (max error 1.6 against 4e-4 on lavapipe)."""
    import kernels
    from kernels import lanes

    n_out, n_in = 16, lanes.SPLIT_COLUMNS + 37
    if kernels.is_gpu():
        assert lanes.row_split(1, n_out, n_in) == 2
    check_quantized_linear_task("nf4", 1, 3, n_in, n_out, (0, 0, 0), True, 5, 1, 0, static_sizes=True)


# ---- whole models: the Taichi engine vs the reference with the same quant settings ----
# (model, quant layers of 2, scheme, precision): some layers (a quantized group, then a dense one) or all of them, each
# scheme, fp16 once (the low-rank matrices and the head in f16; the quantized ones read exactly). Passes of at most
# DECODE_POSITIONS positions only (token tile 1): each compiled layer kernel costs ~15 s of CPU here, and the tile-8
# reader is the same `dot_tile` that test_quantized_linear_task checks with both tiles.
MODEL_CASES = [("v5.2", 1, "int8", "fp32"), ("v6", 2, "nf4", "fp16"), ("v7", 1, "sf4", "fp32"), ("v4", 1, "int8", "fp32")]
MODEL_TOLERANCE = {"fp32": 1e-5, "fp16": 1e-2}  # spec/tolerances.md §Quantized (relative L2 of each row's logits)


def rel_l2(got, expected) -> float:
    got, expected = np.atleast_2d(got), np.atleast_2d(expected)
    return float(np.max(np.linalg.norm(got - expected, axis=-1) / np.linalg.norm(expected, axis=-1)))


@pytest.mark.parametrize("variant, layers, scheme, precision", MODEL_CASES)
def test_quantized_model_matches_the_reference(taichi_arch, tmp_path, variant, layers, scheme, precision):
    """A ragged batch, then two decode steps, on a 2-layer model: logits and every state tensor."""
    import ai00ref
    from ai00ref.weights.random_model import RandomModelSpec, write_random_model

    path = write_random_model(RandomModelSpec(variant, n_layer=2, n_embd=32, n_vocab=64, head_size=16),
                              tmp_path / "m.st")
    quant = dict(quant=layers, quant_type=scheme)
    ref_model = ai00ref.load_model(path, **quant)
    fast = ai00ref.load_model(path, backend="taichi", arch=taichi_arch, precision=precision, **quant)
    assert (fast.info.quant_layers, fast.info.quant_type) == (layers, scheme)
    if variant != "v4":
        storages = [group.storage for group in fast.blocks.groups]
        assert storages == ([scheme] if layers == 2 else [scheme, "dense"])
    tolerance = MODEL_TOLERANCE[precision]
    rows = [[1, 2], [6], [7]]  # 4 positions: still the decode tile
    expected, expected_state = ref_model.forward(rows, ref_model.new_state(3))
    got, state = fast.forward(rows, fast.new_state(3))
    errors = [rel_l2(got, expected)]
    for step in ([[9], [10], [11]], [[12], [13], [14]]):
        expected, expected_state = ref_model.forward(step, expected_state)
        got, state = fast.forward(step, state)
        errors.append(rel_l2(got, expected))
    assert max(errors) <= tolerance, errors
    print(f"{variant} quant {layers} {scheme} {precision}: worst logits error {max(errors):.2e}")
    host = state.to_host().arrays()
    for name, array in expected_state.arrays().items():
        assert rel_l2(np.ravel(host[name]), np.ravel(array)) <= tolerance, name


@pytest.mark.parametrize("scheme, ratio", [("int8", 0.53), ("nf4", 0.30)])
def test_device_memory_of_quantized_weights(taichi_arch, tmp_path, scheme, ratio):
    """`info.weight_bytes` is the bytes of the engine's device arrays (read back from them), and the quantized
    matrices' u32 rows take codes + scales (spec/quant.md §5 ratios against their fp16 bytes). Loading compiles
    nothing: no forward here."""
    import ai00ref
    from ai00ref.weights.random_model import RandomModelSpec, write_random_model

    path = write_random_model(RandomModelSpec("v7", n_layer=3, n_embd=256, n_vocab=64, head_size=64),
                              tmp_path / "m.st")
    fast = ai00ref.load_model(path, backend="taichi", arch=taichi_arch, precision="fp16", quant=2, quant_type=scheme)
    dense = ai00ref.load_model(path, backend="taichi", arch=taichi_arch, precision="fp16")
    groups = fast.blocks.groups
    assert [g.storage for g in groups] == [scheme, "dense"]

    def nbytes(*arrays):
        return sum(a.to_numpy().nbytes for a in arrays)

    arrays = [a for g in groups for a in (g.vec, g.mats, g.second, g.ffn_value, g.low) if a is not None]
    assert fast.info.weight_bytes == nbytes(*arrays, fast.embedding, fast.ln0, fast.head_norm, fast.head_matrix)
    assert nbytes(groups[0].mats, groups[0].ffn_value) == fast.info.quantized_bytes  # C, F multiples of 128
    assert fast.info.quantized_bytes <= ratio * fast.info.quantized_bytes_fp16
    assert fast.info.weight_bytes < dense.info.weight_bytes
