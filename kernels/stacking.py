"""Per-layer weights stacked on a leading layer axis, on the device (kernels/v6.py and kernels/v7.py).

A fused layer kernel reads every layer's weights from a few stacked arrays (one compiled kernel for all layers).
Taichi indexes an ndarray with 32-bit integers, so one array holds fewer than 2^31 elements: a v6 or v7 model past
~3B parameters (C 4096, 32 layers) needs more. Layers are therefore stacked in groups of consecutive layers, each
group's arrays under the limit (spec/kernels.md §4): a launch gets its group's arrays, the weight index `w` within
the group, and the model's layer index (the state's row, and v7's layer-0 rule). A group also never mixes
quantized and dense layers (or two schemes): each storage has its own compiled kernel (kernels/quant.py).
"""
import bisect
import dataclasses
from typing import Callable, Sequence

import numpy as np
import taichi as ti

from kernels import arrays
from kernels.launch import kernel
from kernels.quant import DENSE

MAX_ELEMENTS = 2 ** 31 - 1


class StackTooLarge(ValueError):
    """One layer's array alone is past Taichi's 32-bit index range."""


@dataclasses.dataclass(frozen=True)
class LayerGroups:
    """A model's layers as groups of consecutive layers: groups[g] is the version's stacked-weights dataclass
    (V6Layers, V7Layers) of layers first[g] .. first[g] + (its layer count) - 1. A group holds at most `size` layers,
    and one storage (dense, or one quantization scheme: `quant = N` quantizes only layers 0..N-1), so each group
    runs one compiled kernel."""
    groups: tuple
    first: tuple[int, ...]  # the model layer of each group's slot 0
    size: int
    n_layer: int

    @property
    def shape(self):
        return self.groups[0].shape

    def locate(self, layer: int) -> tuple[object, int]:
        """Model layer -> (its group's weights, its index `slot` in them)."""
        g = bisect.bisect_right(self.first, layer) - 1
        return self.groups[g], layer - self.first[g]


def group_size(n_layer: int, elements_per_layer: Sequence[int], limit: int | None = None) -> int:
    """The most consecutive layers whose stack of each array stays within `limit` elements (all arrays alike)."""
    limit = MAX_ELEMENTS if limit is None else limit
    worst = max(elements_per_layer)
    if worst > limit:
        raise StackTooLarge(f"one layer's weights need an array of {worst} elements, past Taichi's 2^31 index limit "
                            f"(spec/kernels.md §4); load this model with backend='ref' ([adapter] engine = \"ref\")")
    return max(1, min(n_layer, limit // worst))


def runs(keys: Sequence) -> list[range]:
    """Maximal runs of consecutive equal keys, as ranges of indices: [a, a, b] -> [range(0, 2), range(2, 3)]."""
    starts = [i for i in range(len(keys)) if i == 0 or keys[i] != keys[i - 1]]
    return [range(a, z) for a, z in zip(starts, starts[1:] + [len(keys)])]


def stack_in_groups(blocks: Sequence, elements_per_layer: Sequence[int], stack: Callable[[Sequence, str], object],
                    storage: Sequence[str] | None = None, limit: int | None = None) -> LayerGroups:
    """Canonical blocks -> LayerGroups, `stack(blocks of one group, their storage)` making each group's dataclass.
    `storage[i]`: layer i's matrix storage (kernels/quant.py storage_of); a group never mixes two.
    `elements_per_layer`: the dense layer's arrays (a quantized layer's are smaller)."""
    storage = list(storage) if storage is not None else [DENSE] * len(blocks)
    size = group_size(len(blocks), elements_per_layer, limit)
    bounds = [(first, min(first + size, run.stop)) for run in runs(storage) for first in range(run.start, run.stop, size)]
    groups = tuple(stack([blocks[i] for i in range(a, z)], storage[a]) for a, z in bounds)
    return LayerGroups(groups=groups, first=tuple(a for a, _ in bounds), size=size, n_layer=len(blocks))


def upload(per_layer, dtype) -> ti.Ndarray:
    """Per-layer host arrays -> one stacked device array in `dtype` (np.float16, np.float32, or np.uint32 for
    quantized rows, kernels/quant.py)."""
    host = np.stack([np.asarray(a, np.uint32 if dtype == np.uint32 else np.float32) for a in per_layer]).astype(dtype)
    assert host.size <= MAX_ELEMENTS, "stack_in_groups keeps every stack within Taichi's index range"
    return arrays.upload(host, {np.float16: ti.f16, np.float32: ti.f32, np.uint32: ti.u32}[dtype])


def layer_launch(body, storage: str):
    """The kernel of one fused layer for a group of `storage`: `body` is the version's ti.func over (x, vec, mats,
    low, second, ffn_value, att_x, S, ffn_x, plan, sc, layer, slot). A dense group's kernel takes 11 arrays (its
    `mats` holds the low-rank rows too); a quantized group's takes `low` as a twelfth (kernels/quant.py)."""
    if storage == DENSE:
        @kernel
        def layer(x: ti.types.ndarray(), vec: ti.types.ndarray(), mats: ti.types.ndarray(),
                  second: ti.types.ndarray(), ffn_value: ti.types.ndarray(), att_x: ti.types.ndarray(),
                  S: ti.types.ndarray(), ffn_x: ti.types.ndarray(), plan: ti.types.ndarray(), sc: ti.types.ndarray(),
                  layer: ti.i32, slot: ti.i32):
            body(x, vec, mats, mats, second, ffn_value, att_x, S, ffn_x, plan, sc, layer, slot)

        return layer

    @kernel
    def quantized_layer(x: ti.types.ndarray(), vec: ti.types.ndarray(), mats: ti.types.ndarray(),
                        low: ti.types.ndarray(), second: ti.types.ndarray(), ffn_value: ti.types.ndarray(),
                        att_x: ti.types.ndarray(), S: ti.types.ndarray(), ffn_x: ti.types.ndarray(),
                        plan: ti.types.ndarray(), sc: ti.types.ndarray(), layer: ti.i32, slot: ti.i32):
        body(x, vec, mats, low, second, ffn_value, att_x, S, ffn_x, plan, sc, layer, slot)

    return quantized_layer


def layer_arrays(group) -> tuple:
    """A group's weight arrays in its layer kernel's order (a quantized group's kernel also takes `low`)."""
    if group.storage == DENSE:
        return group.vec, group.mats, group.second, group.ffn_value
    return group.vec, group.mats, group.low, group.second, group.ffn_value
