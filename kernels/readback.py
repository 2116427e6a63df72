"""A pass's logits to the host, by the cheapest way each arch allows (benchmarks/gpu_probe.py --only readbacks).

Taichi's `Ndarray.to_numpy` launches its generic copy kernel on a host array and then synchronizes the runtime
once more. On the H100 after a graph run: Vulkan 2.0 ms, CUDA 0.34 ms; on this box's x64, 1-1.9 ms.
- Vulkan and x64: a kernel of our own writing straight into a NumPy array (Vulkan 1.4 ms, x64 0.2 ms): Taichi
  still waits for the device and copies the array out, but once.
- CUDA: a sync, then the driver's cuMemcpyDtoH from the array's device pointer (0.09 ms). Taichi's context is
  current in the thread that initialized it; anywhere the driver refuses the copy, the kernel is used from then on.
"""
import ctypes

import numpy as np
import taichi as ti

import kernels
from kernels.launch import kernel


@kernel
def _copy_rows(source: ti.types.ndarray(), host: ti.types.ndarray()):
    for t, v in ti.ndrange(source.shape[0], source.shape[1]):
        host[t, v] = source[t, v]


class _CudaDriver:
    """cuMemcpyDtoH through libcuda, or unusable (`ok` false) after its first refusal."""

    def __init__(self):
        try:
            self.library = ctypes.CDLL("libcuda.so.1")
            self.ok = True
        except OSError:
            self.ok = False

    def copy(self, source: ti.Ndarray, host: np.ndarray) -> bool:
        pointer = ti.lang.impl.get_runtime().prog.get_ndarray_data_ptr_as_int(source.arr)
        ti.sync()
        code = self.library.cuMemcpyDtoH_v2(ctypes.c_void_p(host.ctypes.data), ctypes.c_uint64(pointer),
                                            ctypes.c_size_t(host.nbytes))
        self.ok = code == 0
        return self.ok


_driver = None


def read_rows(source: ti.Ndarray) -> np.ndarray:
    """A (n, V) f32 device array -> a new NumPy array of the same values (after every launch before it)."""
    global _driver
    if kernels.runtime() == "commands":  # our own device: a copy through its staging buffer
        return source.to_numpy()
    host = np.empty(source.shape, np.float32)
    if kernels.current_arch() == "cuda":
        _driver = _driver or _CudaDriver()
        if _driver.ok and _driver.copy(source, host):
            return host
    _copy_rows(source, host)
    return host
