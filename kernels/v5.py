"""RWKV-5 (v5.0, v5.1, v5.2). Must match `ai00ref/ref/v5.py` (spec/v5.md) to the tolerances of spec/tolerances.md.

v5 runs v6's layer kernel (kernels/v6.py; its layout, kernels/v6_layout.py) with its data-dependent parts compiled
out (`Shape.Dm = Dd = 0`): static token-shift mixes, the static decay w in place of the per-token one, and for v5.0
no gate (`Shape.gated`). What differs is only the load-time packing here:

packed                must match (ref/v5.py, ref/v4.py)
MIX rows r, k, v, g   lerp_current(x, prev, mix) = x + (prev-x)·(1-mix): rows hold 1 - mix (v6's convention)
FFN_MIX rows k, r     ref.v4.channel_mix's lerp_current, the same way
DECAY row             the static decay w = exp(-exp(time_decay)) (H, N), flattened
"""
import numpy as np

from kernels.stacking import LayerGroups
from kernels.v6 import run_blocks  # noqa: F401  (the engine calls module.run_blocks)
from kernels.v6_layout import (BONUS, DECAY, FFN_MIX, LN1, LN2, LNX, MIX, MIX_G, MIX_K, MIX_R, MIX_V, NV, Shape,
                               stack_layers)


def previous_weight(mix) -> np.ndarray:
    """v4/v5's weight of the current token -> v6/v7's weight of the previous one (spec/common.md §3)."""
    return 1.0 - np.asarray(mix, np.float64)


def _vectors(block, C: int) -> np.ndarray:
    att, ffn = block.att, block.ffn
    rows = np.zeros((NV, C), np.float64)  # maa_x's and w's mix rows stay unused
    rows[LN1], rows[LN1 + 1] = block.ln1.weight, block.ln1.bias
    rows[LN2], rows[LN2 + 1] = block.ln2.weight, block.ln2.bias
    for m, mix in ((MIX_R, att.mix_r), (MIX_K, att.mix_k), (MIX_V, att.mix_v), (MIX_G, att.mix_g)):
        if mix is not None:  # v5.0 has no gate
            rows[MIX + m] = previous_weight(mix)
    rows[FFN_MIX], rows[FFN_MIX + 1] = previous_weight(ffn.mix_k), previous_weight(ffn.mix_r)
    rows[DECAY], rows[BONUS] = np.ravel(att.decay), np.ravel(att.bonus)
    rows[LNX], rows[LNX + 1] = att.ln_x.weight, att.ln_x.bias
    return rows.astype(np.float32)


def device_blocks(blocks, matrix_dtype) -> LayerGroups:
    """Canonical v5 blocks -> V6Layers in groups (the load-time stacking; matrices in `matrix_dtype`, vectors f32)."""
    att = blocks[0].att
    C = att.key.shape[0]
    shape = Shape(C=C, H=att.decay.shape[0], F=blocks[0].ffn.key.shape[0], Dm=0, Dd=0, gated=att.gate is not None)
    gate = (lambda a: [a.gate]) if shape.gated else (lambda a: [])
    quantizable = [[b.att.receptance, b.att.key, b.att.value, *gate(b.att), b.att.output, b.ffn.key, b.ffn.receptance]
                   for b in blocks]
    unused = [np.zeros((shape.LOW_ROWS, C), np.float32) for _ in blocks]  # v5 has no low-rank matrices
    return stack_layers(shape, [_vectors(b, C) for b in blocks], quantizable, unused,
                        [np.zeros((C, shape.SECOND), np.float32) for _ in blocks], [b.ffn.value for b in blocks],
                        matrix_dtype)
