"""Arrays on our Vulkan device (`VkContext`), with the part of Taichi's `Ndarray` interface the engine uses."""
from __future__ import annotations

import numpy as np

from kernels.arrays import NUMPY


class VkArray:
    """A dense row-major array in one device-local buffer."""

    def __init__(self, context, dtype, shape: tuple[int, ...]):
        self.context, self.dtype, self.shape = context, dtype, tuple(int(n) for n in shape)
        self.numpy_dtype = np.dtype(NUMPY[dtype])
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.numpy_dtype.itemsize
        self.buffer = context.buffer(self.nbytes)
        self.host_copy, self.host_copy_at = None, -1  # see `shadow`

    def from_numpy(self, host: np.ndarray) -> None:
        host = np.ascontiguousarray(host, dtype=self.numpy_dtype)
        if host.shape != self.shape:
            raise ValueError(f"array of shape {host.shape} into a device array of shape {self.shape}")
        self.context.upload(self.buffer, host.data)

    def write_row(self, index: int, host: np.ndarray) -> None:
        """Overwrite entry `index` of the leading axis with `host` (of the remaining axes' shape)."""
        host = np.ascontiguousarray(host, dtype=self.numpy_dtype)
        if host.shape != self.shape[1:] or not 0 <= index < self.shape[0]:
            raise ValueError(f"row {index} of shape {host.shape} into a device array of shape {self.shape}")
        self.context.upload(self.buffer, host.data, offset=index * host.nbytes)

    def to_numpy(self) -> np.ndarray:
        count = self.nbytes // self.numpy_dtype.itemsize
        if self.host_copy is not None and self.host_copy_at == self.context.submits:
            # copied at the end of the last pass (CommandReplay): one copy out of the mapped memory
            return np.frombuffer(self.host_copy.mapped, self.numpy_dtype, count).reshape(self.shape).copy()
        data = self.context.download(self.buffer, self.nbytes)
        return np.frombuffer(data, self.numpy_dtype, count).reshape(self.shape)

    def shadow(self):
        """A host-visible buffer of this array's size, which a pass can copy the array into as its last command."""
        if self.host_copy is None:
            self.host_copy = self.context.buffer(self.nbytes, host=True, read=True)
        return self.host_copy

    def copy_from(self, other: "VkArray") -> None:
        if other.shape != self.shape or other.dtype != self.dtype:
            raise ValueError("copy between device arrays of different shapes or types")
        self.context.copy(other.buffer, self.buffer, self.nbytes)

    def __del__(self):
        try:
            self.context.free(self.buffer)
            if self.host_copy is not None:
                self.context.free(self.host_copy)
        except Exception:  # interpreter shutdown: the device may be gone already
            pass
