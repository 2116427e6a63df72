"""Which Taichi arch to run on, and starting Taichi on it without its silent CPU fallback.

Taichi's `ti.init(arch=ti.vulkan)` quietly falls back to the CPU when Vulkan is missing; `enable_fallback=False`
makes it raise, and the arch is checked again after init. To tell a real GPU from a software rasterizer,
`vulkan_devices()` asks the Vulkan loader itself (through ctypes) for each physical device's type.
"""
from __future__ import annotations

import ctypes
import os

VK_DEVICE_TYPES = {0: "other", 1: "integrated-gpu", 2: "discrete-gpu", 3: "virtual-gpu", 4: "cpu"}
_PROPERTIES_BYTES = 4096  # VkPhysicalDeviceProperties is ~800 bytes; deviceType sits at byte 16, deviceName at 20


class _InstanceCreateInfo(ctypes.Structure):
    _fields_ = [("sType", ctypes.c_int), ("pNext", ctypes.c_void_p), ("flags", ctypes.c_uint32),
                ("pApplicationInfo", ctypes.c_void_p), ("enabledLayerCount", ctypes.c_uint32),
                ("ppEnabledLayerNames", ctypes.c_void_p), ("enabledExtensionCount", ctypes.c_uint32),
                ("ppEnabledExtensionNames", ctypes.c_void_p)]


def vulkan_devices() -> list[tuple[str, str]]:
    """(name, type) of every Vulkan physical device, or [] when there is no loader or no driver."""
    try:
        vk = ctypes.CDLL("libvulkan.so.1")
    except OSError:
        return []
    instance = ctypes.c_void_p()
    info = _InstanceCreateInfo(sType=1)  # VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO
    if vk.vkCreateInstance(ctypes.byref(info), None, ctypes.byref(instance)) != 0:
        return []
    try:
        count = ctypes.c_uint32()
        vk.vkEnumeratePhysicalDevices(instance, ctypes.byref(count), None)
        handles = (ctypes.c_void_p * count.value)()
        vk.vkEnumeratePhysicalDevices(instance, ctypes.byref(count), handles)
        devices = []
        for handle in handles:
            props = ctypes.create_string_buffer(_PROPERTIES_BYTES)
            vk.vkGetPhysicalDeviceProperties(ctypes.c_void_p(handle), props)
            kind = int.from_bytes(props.raw[16:20], "little")
            name = props.raw[20:276].split(b"\0", 1)[0].decode(errors="replace")
            devices.append((name, VK_DEVICE_TYPES.get(kind, "other")))
        return devices
    finally:
        vk.vkDestroyInstance(instance, None)


def has_hardware_vulkan() -> bool:
    return any(kind != "cpu" for _, kind in vulkan_devices())


def has_cuda() -> bool:
    for name in ("libcuda.so.1", "libcuda.so"):
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def choose_arch(arch: str) -> str:
    """"auto" -> hardware Vulkan, else CUDA, else cpu. Explicit arches are taken as asked."""
    if arch != "auto":
        return arch
    if has_hardware_vulkan():
        return "vulkan"
    if has_cuda():
        return "cuda"
    return "cpu"


def start_taichi(arch: str) -> None:
    import taichi as ti

    target = {"vulkan": ti.vulkan, "cuda": ti.cuda, "cpu": ti.x64}[arch]
    try:
        ti.init(arch=target, enable_fallback=False, log_level=ti.WARN,  # unrolling_limit=0: no warning about the
                offline_cache=True, offline_cache_file_path=_cache_dir(),  # unrolled loads we mean (layer_norms.row_stats)
                unrolling_limit=0)
    except RuntimeError as e:
        raise RuntimeError(f"Taichi cannot start on {arch}: {e}"
                           + (" (no Vulkan device: install a Vulkan driver and libvulkan1)" if arch == "vulkan" else ""))
    actual = ti.lang.impl.current_cfg().arch
    if actual != target:
        raise RuntimeError(f"Taichi started on {actual} instead of {arch}")


def subgroup_size(arch: str) -> int:
    """Lanes of one subgroup: 32 on CUDA, the device's on Vulkan (NVIDIA 32, lavapipe 4-16), 1 on the CPU."""
    import taichi as ti

    if arch == "cpu":
        return 1
    if arch == "cuda":
        return 32

    def query(out: ti.types.ndarray()):
        for _ in range(1):
            out[0] = ti.simt.subgroup.group_size()

    query.__annotations__ = {"out": ti.types.ndarray()}  # this module's annotations are strings (__future__)
    out = ti.ndarray(ti.i32, (1,))
    ti.kernel(query)(out)
    return int(out.to_numpy()[0])


def _cache_dir() -> str:
    return os.path.join(os.path.expanduser("~"), ".cache", "ai00ref", "taichi")
