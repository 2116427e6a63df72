"""One Vulkan device of our own, for replaying Taichi's compiled tasks from recorded command buffers
(spec/kernels.md §8).

Taichi 1.7 records every dispatch of every launch anew on the host (a descriptor set per task, an argument buffer per
launch) and submits when it has been pending 2 ms; a decode step of a 24-layer model spends more time recording than
the GPU spends running it (BENCHMARKS.md). Here the same SPIR-V runs from a command buffer recorded once per pass
shape, on a device created with the same features Taichi enables, so Taichi compiles the same code for it
(`taichi_caps`).
"""
from __future__ import annotations

import dataclasses

import vulkan as vk

SOFTWARE = vk.VK_PHYSICAL_DEVICE_TYPE_CPU
_PREFERENCE = (vk.VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU, vk.VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU,
               vk.VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU, vk.VK_PHYSICAL_DEVICE_TYPE_OTHER, SOFTWARE)
# Extensions Taichi 1.7 enables when the device has them (taichi/rhi/vulkan/vulkan_device_creator.cpp)
_EXTENSIONS = ("VK_EXT_shader_atomic_float", "VK_EXT_shader_atomic_float2", "VK_KHR_shader_atomic_int64",
               "VK_KHR_variable_pointers", "VK_KHR_shader_float16_int8", "VK_KHR_8bit_storage",
               "VK_KHR_16bit_storage")
WHOLE_SIZE = (1 << 64) - 1  # VK_WHOLE_SIZE, which the binding gives as -1
HOST = vk.VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | vk.VK_MEMORY_PROPERTY_HOST_COHERENT_BIT
DEVICE = vk.VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT
STORAGE = (vk.VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | vk.VK_BUFFER_USAGE_TRANSFER_SRC_BIT
           | vk.VK_BUFFER_USAGE_TRANSFER_DST_BIT)


@dataclasses.dataclass
class Buffer:
    handle: object  # VkBuffer
    memory: object  # VkDeviceMemory
    size: int
    mapped: object = None  # a cffi buffer over the memory, for host-visible buffers


class VkContext:
    """Instance, device, compute queue, command pool and a fence; buffers and one-off transfers."""

    def __init__(self, allow_software: bool = True):
        app = vk.VkApplicationInfo(pApplicationName="ai00ref", apiVersion=vk.VK_MAKE_VERSION(1, 2, 0))
        self.instance = vk.vkCreateInstance(vk.VkInstanceCreateInfo(pApplicationInfo=app), None)
        self.physical = _choose_physical(self.instance, allow_software)
        self.properties = vk.vkGetPhysicalDeviceProperties(self.physical)
        self.name = self.properties.deviceName
        self.family = _compute_family(self.physical)
        self.subgroup_size = subgroup_properties(self.physical).subgroupSize  # the lanes of kernels/lanes.py
        self.caps, create_info = _device_features(self.physical, self.properties.apiVersion)
        queue = vk.VkDeviceQueueCreateInfo(queueFamilyIndex=self.family, queueCount=1, pQueuePriorities=[1.0])
        self.device = vk.vkCreateDevice(self.physical, vk.VkDeviceCreateInfo(
            pNext=create_info["next"], pQueueCreateInfos=[queue], ppEnabledExtensionNames=create_info["extensions"],
            pEnabledFeatures=create_info["features"]), None)
        # storage buffers of a recorded command buffer's descriptor sets may be rebound before a submit (replay.py)
        self.update_after_bind = create_info["update_after_bind"]
        self.queue = vk.vkGetDeviceQueue(self.device, self.family, 0)
        self.pool = vk.vkCreateCommandPool(self.device, vk.VkCommandPoolCreateInfo(
            flags=vk.VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT, queueFamilyIndex=self.family), None)
        self.fence = vk.vkCreateFence(self.device, vk.VkFenceCreateInfo(), None)
        self.memory_types = vk.vkGetPhysicalDeviceMemoryProperties(self.physical)
        self._staging: Buffer | None = None
        self.submits = 0  # command buffers run so far: a host copy made by the last one is still current
        self._transfer = self.command_buffer()

    # --- buffers -----------------------------------------------------------------------------------------------
    def buffer(self, size: int, usage: int = STORAGE, host: bool = False, read: bool = False) -> Buffer:
        """A buffer in device-local memory, or with `host` in host-visible memory mapped for the host; `read`: one the
        host reads from, cached on the host where the device offers such memory (uncached reads are slow)."""
        size, handle = max(int(size), 16), None
        try:
            handle = vk.vkCreateBuffer(self.device, vk.VkBufferCreateInfo(
                size=size, usage=usage, sharingMode=vk.VK_SHARING_MODE_EXCLUSIVE), None)
            needs = vk.vkGetBufferMemoryRequirements(self.device, handle)
            wanted = [HOST | vk.VK_MEMORY_PROPERTY_HOST_CACHED_BIT] * read + [HOST] if host else [DEVICE]
            memory = vk.vkAllocateMemory(self.device, vk.VkMemoryAllocateInfo(
                allocationSize=needs.size, memoryTypeIndex=self._memory_type(needs.memoryTypeBits, *wanted)), None)
        except vk.VkError as e:
            if handle is not None:
                vk.vkDestroyBuffer(self.device, handle, None)
            where = "host-visible" if host else "device"
            raise MemoryError(f"Vulkan device {self.name}: cannot allocate {size / 2**20:.1f} MiB of {where} memory "
                              f"({type(e).__name__})") from e
        vk.vkBindBufferMemory(self.device, handle, memory, 0)
        mapped = vk.vkMapMemory(self.device, memory, 0, size, 0) if host else None
        return Buffer(handle, memory, size, mapped)

    def free(self, buffer: Buffer) -> None:
        if buffer.mapped is not None:
            vk.vkUnmapMemory(self.device, buffer.memory)
        vk.vkDestroyBuffer(self.device, buffer.handle, None)
        vk.vkFreeMemory(self.device, buffer.memory, None)

    def _memory_type(self, allowed: int, *preferences: int) -> int:
        """The first memory type with all the flags of the first preference that any type meets."""
        for flags in preferences:
            for i in range(self.memory_types.memoryTypeCount):
                if allowed & (1 << i) and (self.memory_types.memoryTypes[i].propertyFlags & flags) == flags:
                    return i
        raise RuntimeError(f"Vulkan device {self.name} has no memory type with flags {preferences[-1]:#x}")

    # --- transfers (each waits for the queue) ------------------------------------------------------------------
    STAGING_BYTES = 32 << 20

    def staging(self) -> Buffer:
        if self._staging is None:
            self._staging = self.buffer(self.STAGING_BYTES, host=True)
        return self._staging

    def upload(self, target: Buffer, data: bytes | memoryview, offset: int = 0) -> None:
        """Host bytes -> `target` at `offset`, through the staging buffer in pieces."""
        view, staging = memoryview(data).cast("B"), self.staging()
        for start in range(0, len(view), self.STAGING_BYTES):
            piece = view[start:start + self.STAGING_BYTES]
            staging.mapped[:len(piece)] = piece
            self.copy(staging, target, len(piece), 0, offset + start)

    def download(self, source: Buffer, size: int, offset: int = 0) -> bytearray:
        out, staging = bytearray(size), self.staging()
        for start in range(0, size, self.STAGING_BYTES):
            n = min(self.STAGING_BYTES, size - start)
            self.copy(source, staging, n, offset + start, 0)
            out[start:start + n] = staging.mapped[:n]
        return out

    def copy(self, source: Buffer, target: Buffer, size: int, source_offset: int = 0, target_offset: int = 0) -> None:
        if size == 0:
            return
        self.run_once(lambda cb: vk.vkCmdCopyBuffer(cb, source.handle, target.handle, 1, [vk.VkBufferCopy(
            srcOffset=source_offset, dstOffset=target_offset, size=size)]))

    def run_once(self, record) -> None:
        """Record `record(command_buffer)` between full barriers, submit it and wait."""
        cb = self._transfer
        vk.vkResetCommandBuffer(cb, 0)
        vk.vkBeginCommandBuffer(cb, vk.VkCommandBufferBeginInfo(flags=vk.VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT))
        full_barrier(cb)
        record(cb)
        full_barrier(cb)
        vk.vkEndCommandBuffer(cb)
        self.submit(cb)

    # --- command buffers ---------------------------------------------------------------------------------------
    def command_buffer(self):
        return vk.vkAllocateCommandBuffers(self.device, vk.VkCommandBufferAllocateInfo(
            commandPool=self.pool, level=vk.VK_COMMAND_BUFFER_LEVEL_PRIMARY, commandBufferCount=1))[0]

    def submit(self, command_buffer) -> None:
        """Run one recorded command buffer and wait for it."""
        self.submits += 1
        vk.vkQueueSubmit(self.queue, 1, [vk.VkSubmitInfo(pCommandBuffers=[command_buffer])], self.fence)
        vk.vkWaitForFences(self.device, 1, [self.fence], vk.VK_TRUE, 0xFFFFFFFFFFFFFFFF)
        vk.vkResetFences(self.device, 1, [self.fence])

    def taichi_caps(self) -> list[str]:
        """The capabilities Taichi 1.7 would give this device, as `ti.aot.Module(caps=...)` takes them."""
        return [f"{name}={value}" for name, value in sorted(self.caps.items())]


def full_barrier(cb) -> None:
    """Every earlier transfer or compute write is visible to every later transfer or compute access (the barrier
    Taichi records after each dispatch: VulkanCommandList::memory_barrier)."""
    access = (vk.VK_ACCESS_TRANSFER_READ_BIT | vk.VK_ACCESS_TRANSFER_WRITE_BIT | vk.VK_ACCESS_SHADER_READ_BIT
              | vk.VK_ACCESS_SHADER_WRITE_BIT | vk.VK_ACCESS_HOST_READ_BIT | vk.VK_ACCESS_HOST_WRITE_BIT)
    stages = (vk.VK_PIPELINE_STAGE_TRANSFER_BIT | vk.VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT
              | vk.VK_PIPELINE_STAGE_HOST_BIT)
    vk.vkCmdPipelineBarrier(cb, stages, stages, 0, 1, [vk.VkMemoryBarrier(srcAccessMask=access, dstAccessMask=access)],
                            0, None, 0, None)


def compute_barrier(cb) -> None:
    """Every earlier shader write is visible to every later shader access: between two dispatches of a pass, where no
    transfer or host access comes between (the pass's first and last barriers are `full_barrier`s)."""
    vk.vkCmdPipelineBarrier(cb, vk.VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, vk.VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 0, 1,
                            [vk.VkMemoryBarrier(srcAccessMask=vk.VK_ACCESS_SHADER_WRITE_BIT,
                                                dstAccessMask=vk.VK_ACCESS_SHADER_READ_BIT
                                                | vk.VK_ACCESS_SHADER_WRITE_BIT)], 0, None, 0, None)


def _choose_physical(instance, allow_software: bool):
    devices = vk.vkEnumeratePhysicalDevices(instance)
    kinds = {device: vk.vkGetPhysicalDeviceProperties(device).deviceType for device in devices}
    for device in sorted(devices, key=lambda d: _PREFERENCE.index(kinds[d])):
        if kinds[device] != SOFTWARE or allow_software:
            return device
    raise RuntimeError("no Vulkan device" + ("" if not devices else " other than a software rasterizer"))


def _compute_family(physical) -> int:
    families = vk.vkGetPhysicalDeviceQueueFamilyProperties(physical)
    for i, family in enumerate(families):  # a compute queue; Taichi prefers one with graphics too, as does this
        if family.queueFlags & vk.VK_QUEUE_COMPUTE_BIT and family.queueFlags & vk.VK_QUEUE_GRAPHICS_BIT:
            return i
    for i, family in enumerate(families):
        if family.queueFlags & vk.VK_QUEUE_COMPUTE_BIT:
            return i
    raise RuntimeError("the Vulkan device has no compute queue")


def _device_features(physical, api_version: int) -> tuple[dict, dict]:
    """(Taichi's capability values, what vkCreateDevice needs to enable them), mirroring Taichi 1.7's device creator:
    no physical storage buffers (Taichi 1.7 never enables them), every other feature the device offers."""
    caps = {"spirv_version": 0x10500 if api_version >= vk.VK_MAKE_VERSION(1, 2, 0) else 0x10300}
    names = {e.extensionName
             for e in vk.vkEnumerateDeviceExtensionProperties(physical, None)}
    extensions = [e for e in _EXTENSIONS if e in names]
    supported = vk.vkGetPhysicalDeviceFeatures(physical)
    features = vk.VkPhysicalDeviceFeatures(shaderInt16=supported.shaderInt16, shaderInt64=supported.shaderInt64,
                                           shaderFloat64=supported.shaderFloat64)
    for flag, cap in (("shaderInt16", "spirv_has_int16"), ("shaderInt64", "spirv_has_int64"),
                      ("shaderFloat64", "spirv_has_float64")):
        if getattr(supported, flag):
            caps[cap] = 1
    subgroup = subgroup_properties(physical)
    for bit, cap in ((vk.VK_SUBGROUP_FEATURE_BASIC_BIT, "spirv_has_subgroup_basic"),
                     (vk.VK_SUBGROUP_FEATURE_VOTE_BIT, "spirv_has_subgroup_vote"),
                     (vk.VK_SUBGROUP_FEATURE_ARITHMETIC_BIT, "spirv_has_subgroup_arithmetic"),
                     (vk.VK_SUBGROUP_FEATURE_BALLOT_BIT, "spirv_has_subgroup_ballot")):
        if subgroup.supportedOperations & bit:
            caps[cap] = 1
    chain = [vk.VkPhysicalDeviceVariablePointersFeatures(), vk.VkPhysicalDeviceShaderFloat16Int8Features(),
             vk.VkPhysicalDevice8BitStorageFeatures(), vk.VkPhysicalDevice16BitStorageFeatures(),
             vk.VkPhysicalDeviceDescriptorIndexingFeatures()]  # ours, not Taichi's: kernels/vk/replay.py
    if "VK_EXT_shader_atomic_float" in extensions:
        chain.append(vk.VkPhysicalDeviceShaderAtomicFloatFeaturesEXT())
    if "VK_EXT_shader_atomic_float2" in extensions:
        chain.append(vk.VkPhysicalDeviceShaderAtomicFloat2FeaturesEXT())
    for item in chain:  # each queried alone, then all chained into the device's create info as they came back
        vk.vkGetPhysicalDeviceFeatures2(physical, vk.VkPhysicalDeviceFeatures2(pNext=item))
    variable, f16_i8 = chain[0], chain[1]
    if variable.variablePointers and variable.variablePointersStorageBuffer:
        caps["spirv_has_variable_ptr"] = 1
    if f16_i8.shaderFloat16:
        caps["spirv_has_float16"] = 1
    if f16_i8.shaderInt8:
        caps["spirv_has_int8"] = 1
    for item in chain[5:]:
        caps.update(_atomic_float_caps(item))
    for earlier, later in zip(chain, chain[1:]):
        earlier.pNext = vk.ffi.addressof(later)
    update_after_bind = bool(chain[4].descriptorBindingStorageBufferUpdateAfterBind)
    return caps, {"next": chain[0], "extensions": extensions, "features": features, "chain": chain,
                  "update_after_bind": update_after_bind}


def subgroup_properties(physical):
    subgroup = vk.VkPhysicalDeviceSubgroupProperties()
    vk.vkGetPhysicalDeviceProperties2(physical, vk.VkPhysicalDeviceProperties2(pNext=subgroup))
    return subgroup


def _atomic_float_caps(item) -> dict:
    pairs = {"shaderBufferFloat32AtomicAdd": "spirv_has_atomic_float_add",
             "shaderBufferFloat64AtomicAdd": "spirv_has_atomic_float64_add",
             "shaderBufferFloat32Atomics": "spirv_has_atomic_float",
             "shaderBufferFloat64Atomics": "spirv_has_atomic_float64",
             "shaderBufferFloat16AtomicAdd": "spirv_has_atomic_float_add",
             "shaderBufferFloat16AtomicMinMax": "spirv_has_atomic_float16_minmax",
             "shaderBufferFloat16Atomics": "spirv_has_atomic_float16",
             "shaderBufferFloat32AtomicMinMax": "spirv_has_atomic_float_minmax",
             "shaderBufferFloat64AtomicMinMax": "spirv_has_atomic_float64_minmax"}
    return {cap: 1 for field, cap in pairs.items() if hasattr(item, field) and getattr(item, field)}
