"""Per-layer weights stacked on a leading layer axis, on the device (kernels/v6.py and kernels/v7.py).

A fused layer kernel reads every layer's weights from a few stacked arrays, indexed by the layer (one compiled kernel
for all layers). Taichi indexes an ndarray with 32-bit integers, so one array holds fewer than 2^31 elements: the
largest stacked matrix array of a v6 or v7 model past ~3B parameters (C 4096, 32 layers) does not fit, and such a
model does not load on the Taichi engine (spec/kernels.md §4; the reference engine loads it). Splitting the stack
into groups of layers is the way past it, not done yet.
"""
import numpy as np
import taichi as ti

MAX_ELEMENTS = 2 ** 31 - 1


class StackTooLarge(ValueError):
    """A stacked layer array past Taichi's 32-bit index range."""


def upload(per_layer, dtype) -> ti.Ndarray:
    """Per-layer host arrays -> one stacked device array in `dtype` (np.float16 or np.float32)."""
    elements = len(per_layer) * int(np.prod(np.shape(per_layer[0])))
    if elements > MAX_ELEMENTS:
        raise StackTooLarge(f"the model's stacked layer weights need an array of {elements} elements, past Taichi's "
                            f"2^31 index limit: this model is too large for the Taichi engine's fused layers "
                            f"(spec/kernels.md §4); load it with backend='ref' ([adapter] engine = \"ref\")")
    host = np.stack([np.asarray(a, np.float32) for a in per_layer]).astype(dtype)
    device = ti.ndarray(ti.f16 if dtype == np.float16 else ti.f32, host.shape)
    device.from_numpy(host)
    return device
