"""Per-layer weights stacked on a leading layer axis, on the device (kernels/v6.py and kernels/v7.py).

A fused layer kernel reads every layer's weights from a few stacked arrays (one compiled kernel for all layers).
Taichi indexes an ndarray with 32-bit integers, so one array holds fewer than 2^31 elements: a v6 or v7 model past
~3B parameters (C 4096, 32 layers) needs more. Layers are therefore stacked in groups of consecutive layers, each
group's arrays under the limit (spec/kernels.md §4): a launch gets its group's arrays, the weight index `w` within
the group, and the model's layer index (the state's row, and v7's layer-0 rule).
"""
import dataclasses
from typing import Callable, Sequence

import numpy as np
import taichi as ti

MAX_ELEMENTS = 2 ** 31 - 1


class StackTooLarge(ValueError):
    """One layer's array alone is past Taichi's 32-bit index range."""


@dataclasses.dataclass(frozen=True)
class LayerGroups:
    """A model's layers as groups of `size` consecutive layers (the last may hold fewer): groups[g] is the
    version's stacked-weights dataclass (V6Layers, V7Layers) of layers g·size .. g·size + size - 1."""
    groups: tuple
    size: int
    n_layer: int

    @property
    def shape(self):
        return self.groups[0].shape

    def locate(self, layer: int) -> tuple[object, int]:
        """Model layer -> (its group's weights, its index `w` in them)."""
        return self.groups[layer // self.size], layer % self.size


def group_size(n_layer: int, elements_per_layer: Sequence[int], limit: int | None = None) -> int:
    """The most consecutive layers whose stack of each array stays within `limit` elements (all arrays alike)."""
    limit = MAX_ELEMENTS if limit is None else limit
    worst = max(elements_per_layer)
    if worst > limit:
        raise StackTooLarge(f"one layer's weights need an array of {worst} elements, past Taichi's 2^31 index limit "
                            f"(spec/kernels.md §4); load this model with backend='ref' ([adapter] engine = \"ref\")")
    return max(1, min(n_layer, limit // worst))


def stack_in_groups(blocks: Sequence, elements_per_layer: Sequence[int], stack: Callable[[Sequence], object],
                    limit: int | None = None) -> LayerGroups:
    """Canonical blocks -> LayerGroups, `stack(blocks of one group)` making each group's dataclass."""
    size = group_size(len(blocks), elements_per_layer, limit)
    groups = tuple(stack(blocks[first:first + size]) for first in range(0, len(blocks), size))
    return LayerGroups(groups=groups, size=size, n_layer=len(blocks))


def upload(per_layer, dtype) -> ti.Ndarray:
    """Per-layer host arrays -> one stacked device array in `dtype` (np.float16 or np.float32)."""
    host = np.stack([np.asarray(a, np.float32) for a in per_layer]).astype(dtype)
    assert host.size <= MAX_ELEMENTS, "stack_in_groups keeps every stack within Taichi's index range"
    device = ti.ndarray(ti.f16 if dtype == np.float16 else ti.f32, host.shape)
    device.from_numpy(host)
    return device
