"""Device arrays, on whichever runtime runs the kernels (`kernels.runtime()`): Taichi ndarrays, or arrays on our own
Vulkan device (kernels/vk) when recorded passes run as command buffers. Every device array the engine makes is made
here, so the choice is made once, at `kernels.init`.
"""
from __future__ import annotations

import numpy as np
import taichi as ti

import kernels

NUMPY = {ti.f16: np.float16, ti.f32: np.float32, ti.i32: np.int32, ti.u32: np.uint32}  # the device dtypes
_context = None


def context():
    """Our Vulkan device (kernels/vk/context.py), made on first use in the "commands" runtime."""
    global _context
    if _context is None:
        from kernels.vk.context import VkContext
        _context = VkContext(allow_software=True)
    return _context


def new(dtype, shape: tuple) -> object:
    """An uninitialized device array."""
    if kernels.runtime() == "commands":
        from kernels.vk.arrays import VkArray
        return VkArray(context(), dtype, tuple(shape))
    return ti.ndarray(dtype, tuple(shape))


def upload(host: np.ndarray, dtype) -> object:
    """A device array holding `host` converted to `dtype` (f16, f32, i32 or u32)."""
    host = np.ascontiguousarray(host, dtype=NUMPY[dtype])
    device = new(dtype, host.shape)
    device.from_numpy(host)
    return device


def is_array(value) -> bool:
    if isinstance(value, ti.Ndarray):
        return True
    from kernels.vk.arrays import VkArray
    return isinstance(value, VkArray)
