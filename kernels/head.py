"""The output head, a pass's last launch: logits = W_head LN_out(x[picks]) for the positions whose logits are asked
for (kernels/engine.py `picks`). Must match ref.common.layer_norm (ln_out) and ref.common.linear (head)."""
import functools

import taichi as ti

from kernels.common import ACT_NONE
from kernels.lanes import linear_task
from kernels.layer_norms import gather_norm_task
from kernels.launch import kernel


@functools.cache
def head_kernel(tile: int):
    """logits (n, V) = W_head LN_out(x[picks]); `tile` as a layer's (engine.pass_tile of the n picks)."""

    @kernel
    def head(x: ti.types.ndarray(), picks: ti.types.ndarray(), ln: ti.types.ndarray(), W: ti.types.ndarray(),
             chosen: ti.types.ndarray(), logits: ti.types.ndarray(), eps: ti.f32):
        gather_norm_task(x, picks, ln, eps, chosen)
        linear_task(W, 0, 0, W.shape[1], W.shape[2], chosen, 0, logits, 0, ACT_NONE, False, tile)

    return head
