"""A recorded pass (kernels/launch.py: `recording`) as one Vulkan command buffer, recorded once and submitted per run.

Each launch keeps its own argument buffer (host-visible, written once) and each task its own descriptor set, so a
run costs one submit and one wait. What changes between runs is patched in place: the vectors of a role (the token
ids) in the argument buffers, and the descriptors of a role's arrays (another state) when they are other buffers.

A descriptor set written after a command buffer bound it leaves that command buffer invalid, unless the set's
bindings were made for it (UPDATE_AFTER_BIND, from Vulkan 1.2's descriptor indexing). Lavapipe reads the rewritten
sets anyway; NVIDIA's driver ran the command buffer with the buffers it was recorded with, so a pass replayed for
another state read and wrote the first one's (BENCHMARKS.md). So the storage buffers' bindings are made
UPDATE_AFTER_BIND where the device offers it (`VkContext.update_after_bind`), and elsewhere a run whose arrays
changed records its command buffer again.
"""
from __future__ import annotations

import taichi as ti
import vulkan as vk

from kernels.vk.arrays import VkArray
from kernels.vk.code import ARGS, EXT_ARR, KernelCode, compile_kernel
from kernels.vk.context import WHOLE_SIZE, compute_barrier, full_barrier

GLOBAL_TMPS_BYTES = 1 << 20  # Taichi's kGtmpBufferSize


class Programs:
    """Compiled kernels and their pipelines on one context, by (kernel, array dtypes and dimensions)."""

    def __init__(self, context):
        self.context = context
        self.codes: dict[tuple, KernelCode] = {}
        self.pipelines: dict[tuple, tuple] = {}  # (id of code, task index) -> (set layout, pipeline layout, pipeline)
        self.global_tmps = context.buffer(GLOBAL_TMPS_BYTES)
        self._examples: dict[tuple, ti.Ndarray] = {}

    def code(self, kernel, args) -> KernelCode:
        signature = tuple((a.dtype, len(a.shape)) if isinstance(a, VkArray) else None for a in args)
        key = (kernel, signature)
        if key not in self.codes:
            examples = [None if s is None else self._example(*s) for s in signature]
            self.codes[key] = compile_kernel(kernel, examples, self.context.taichi_caps())
        return self.codes[key]

    def _example(self, dtype, ndim: int) -> ti.Ndarray:
        if (dtype, ndim) not in self._examples:
            self._examples[(dtype, ndim)] = ti.ndarray(dtype, (1,) * ndim)
        return self._examples[(dtype, ndim)]

    def pipeline(self, code: KernelCode, index: int) -> tuple:
        key = (id(code), index)
        if key not in self.pipelines:
            task, device = code.tasks[index], self.context.device
            bindings = [vk.VkDescriptorSetLayoutBinding(binding=binding, descriptorType=_descriptor_type(kind),
                                                        descriptorCount=1, stageFlags=vk.VK_SHADER_STAGE_COMPUTE_BIT)
                        for binding, kind, _ in task.bindings]
            if self.context.update_after_bind:  # array bindings rewritable after a command buffer binds them
                flags = vk.VkDescriptorSetLayoutBindingFlagsCreateInfo(pBindingFlags=[
                    0 if kind == ARGS else vk.VK_DESCRIPTOR_BINDING_UPDATE_AFTER_BIND_BIT
                    for _, kind, _ in task.bindings])
                info = vk.VkDescriptorSetLayoutCreateInfo(
                    pNext=flags, flags=vk.VK_DESCRIPTOR_SET_LAYOUT_CREATE_UPDATE_AFTER_BIND_POOL_BIT_EXT,
                    pBindings=bindings)
            else:
                info = vk.VkDescriptorSetLayoutCreateInfo(pBindings=bindings)
            set_layout = vk.vkCreateDescriptorSetLayout(device, info, None)
            layout = vk.vkCreatePipelineLayout(device, vk.VkPipelineLayoutCreateInfo(pSetLayouts=[set_layout]), None)
            module = vk.vkCreateShaderModule(device, vk.VkShaderModuleCreateInfo(
                codeSize=len(task.spirv), pCode=task.spirv), None)
            stage = vk.VkPipelineShaderStageCreateInfo(stage=vk.VK_SHADER_STAGE_COMPUTE_BIT, module=module,
                                                       pName="main")
            pipeline = vk.vkCreateComputePipelines(device, None, 1, [vk.VkComputePipelineCreateInfo(
                stage=stage, layout=layout)], None)[0]
            vk.vkDestroyShaderModule(device, module, None)
            self.pipelines[key] = (set_layout, layout, pipeline)
        return self.pipelines[key]


def _descriptor_type(kind: int) -> int:
    return vk.VK_DESCRIPTOR_TYPE_UNIFORM_BUFFER if kind == ARGS else vk.VK_DESCRIPTOR_TYPE_STORAGE_BUFFER


class CommandReplay:
    """`calls` (kernel, args) recorded once; arrays and vectors whose id is in `roles` may be passed anew per run."""

    def __init__(self, programs: Programs, calls: list, roles: dict[int, str], outputs: tuple = ()):
        self.programs, context = programs, programs.context
        self.context, device = context, context.device
        self.keep = [args for _, args in calls]  # the arrays must outlive the command buffer
        self.codes = [programs.code(kernel, args) for kernel, args in calls]
        self.args_buffers = [context.buffer(code.args_bytes, vk.VK_BUFFER_USAGE_UNIFORM_BUFFER_BIT, host=True)
                             for code in self.codes]
        tasks = sum(len(code.tasks) for code in self.codes)
        storage = sum(1 for code in self.codes for t in code.tasks for _, kind, _ in t.bindings if kind != ARGS)
        self.pool = vk.vkCreateDescriptorPool(device, vk.VkDescriptorPoolCreateInfo(
            flags=vk.VK_DESCRIPTOR_POOL_CREATE_UPDATE_AFTER_BIND_BIT_EXT if context.update_after_bind else 0,
            maxSets=max(tasks, 1), pPoolSizes=[
            vk.VkDescriptorPoolSize(type=vk.VK_DESCRIPTOR_TYPE_UNIFORM_BUFFER, descriptorCount=max(tasks, 1)),
            vk.VkDescriptorPoolSize(type=vk.VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, descriptorCount=max(storage, 1))]), None)
        self.role_vectors: dict[str, list] = {}  # role -> [(argument buffer, KernelCode, Argument)]: where it sits
        self.role_arrays: dict[str, list] = {}  # role -> [index in self.writes] of the bindings of the array
        self.bound: dict[str, object] = {}  # role -> the value now in place
        self.writes, self.dispatches, self.labels = [], [], []
        for code, (kernel, args), args_buffer in zip(self.codes, calls, self.args_buffers):
            self._prepare(code, args, args_buffer, roles, getattr(kernel, "__qualname__", code.name))
        self.outputs = outputs  # arrays copied to their host shadows at the end of each run
        self.record_on_rebind = False  # tests: record again when arrays change even where rebinding suffices
        self.command_buffer = context.command_buffer()
        self._record()

    def _prepare(self, code: KernelCode, args, args_buffer, roles, name: str) -> None:
        """One launch: its argument buffer written, a descriptor set and a dispatch per task."""
        values = [a.shape if isinstance(a, VkArray) else tuple(a) if isinstance(a, ti.Matrix) else a for a in args]
        args_buffer.mapped[:] = bytes(args_buffer.size)  # padding zeroed, as Taichi's argument buffers are
        code.write_arguments(values, args_buffer.mapped)
        for argument in code.arguments:
            role = roles.get(id(args[argument.index]))
            if role and not argument.is_array:
                self.role_vectors.setdefault(role, []).append((args_buffer, code, argument))
                self.bound[role] = args[argument.index]
        for index, task in enumerate(code.tasks):
            set_layout, layout, pipeline = self.programs.pipeline(code, index)
            descriptor = vk.vkAllocateDescriptorSets(self.context.device, vk.VkDescriptorSetAllocateInfo(
                descriptorPool=self.pool, pSetLayouts=[set_layout]))[0]
            for binding, kind, arg in task.bindings:
                self._bind(descriptor, binding, kind, args[arg] if kind == EXT_ARR else None, args_buffer, roles)
            self.dispatches.append((pipeline, layout, descriptor, task.groups))
            self.labels.append(f"{name.replace('.<locals>', '')} task {index}")

    def _bind(self, descriptor, binding: int, kind: int, array, args_buffer, roles) -> None:
        """The write of one binding of a task's descriptor set: the launch's argument buffer, Taichi's global
        temporaries, or an array (remembered under its role, if it has one)."""
        if kind == EXT_ARR:
            buffer = array.buffer
        elif kind == ARGS:
            buffer = args_buffer
        else:  # Taichi's global temporaries (code.py admits no other kind)
            buffer = self.programs.global_tmps
        info = vk.VkDescriptorBufferInfo(buffer=buffer.handle, offset=0, range=WHOLE_SIZE)
        self.writes.append(vk.VkWriteDescriptorSet(dstSet=descriptor, dstBinding=binding,
                                                   descriptorType=_descriptor_type(kind), pBufferInfo=[info]))
        role = roles.get(id(array)) if array is not None else None
        if role:
            self.role_arrays.setdefault(role, []).append(len(self.writes) - 1)
            self.bound[role] = array

    def _record(self) -> None:
        vk.vkUpdateDescriptorSets(self.context.device, len(self.writes), self.writes, 0, None)
        cb = self.command_buffer
        vk.vkBeginCommandBuffer(cb, vk.VkCommandBufferBeginInfo())
        self._record_dispatches(cb)
        for array in self.outputs:
            vk.vkCmdCopyBuffer(cb, array.buffer.handle, array.shadow().handle, 1, [vk.VkBufferCopy(
                srcOffset=0, dstOffset=0, size=array.nbytes)])
        full_barrier(cb)
        vk.vkEndCommandBuffer(cb)

    def _record_dispatches(self, cb, timestamps=None) -> None:
        """Every dispatch, each followed by a barrier as Taichi puts one after each task (shader writes before it are
        visible to shader accesses after it; the last is a full barrier for the transfers and the host); with a query
        pool, a timestamp after the first barrier and after each dispatch's."""
        full_barrier(cb)
        if timestamps is not None:
            vk.vkCmdWriteTimestamp(cb, vk.VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, timestamps, 0)
        for i, (pipeline, layout, descriptor, groups) in enumerate(self.dispatches):
            vk.vkCmdBindPipeline(cb, vk.VK_PIPELINE_BIND_POINT_COMPUTE, pipeline)
            vk.vkCmdBindDescriptorSets(cb, vk.VK_PIPELINE_BIND_POINT_COMPUTE, layout, 0, 1, [descriptor], 0, None)
            vk.vkCmdDispatch(cb, groups, 1, 1)
            (full_barrier if i == len(self.dispatches) - 1 else compute_barrier)(cb)
            if timestamps is not None:
                vk.vkCmdWriteTimestamp(cb, vk.VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, timestamps, i + 1)

    def dispatch_times(self, **role_values) -> list[tuple[str, float]]:
        """(kernel and task, seconds) of each dispatch in one run of the pass, from device timestamps (each includes
        its barrier), after a plain run that binds `role_values`."""
        self.run(**role_values)
        device, n = self.context.device, len(self.dispatches)
        pool = vk.vkCreateQueryPool(device, vk.VkQueryPoolCreateInfo(queryType=vk.VK_QUERY_TYPE_TIMESTAMP,
                                                                     queryCount=n + 1), None)
        cb = self.context.command_buffer()
        try:
            vk.vkBeginCommandBuffer(cb, vk.VkCommandBufferBeginInfo())
            vk.vkCmdResetQueryPool(cb, pool, 0, n + 1)
            self._record_dispatches(cb, pool)
            vk.vkEndCommandBuffer(cb)
            self.context.submit(cb)
            ticks = vk.ffi.new("uint64_t[]", n + 1)
            vk.vkGetQueryPoolResults(device, pool, 0, n + 1, 8 * (n + 1), ticks, 8,
                                     vk.VK_QUERY_RESULT_64_BIT | vk.VK_QUERY_RESULT_WAIT_BIT)
        finally:
            vk.vkFreeCommandBuffers(device, self.context.pool, 1, [cb])
            vk.vkDestroyQueryPool(device, pool, None)
        period = self.context.properties.limits.timestampPeriod * 1e-9
        return [(label, (ticks[i + 1] - ticks[i]) * period) for i, label in enumerate(self.labels)]

    def run(self, **role_values) -> None:
        """Submit the pass and wait for it; `role_values` gives this run's array or vector for each role."""
        changed = []
        for role, value in role_values.items():
            if role in self.role_vectors and value is not self.bound.get(role):
                self._patch_vector(role, value)
            elif role in self.role_arrays and value is not self.bound[role]:
                if value.shape != self.bound[role].shape or value.dtype != self.bound[role].dtype:
                    raise ValueError(f"role {role}: a {value.shape} array where the pass was recorded with "
                                     f"{self.bound[role].shape}")
                for i in self.role_arrays[role]:
                    self.writes[i].pBufferInfo[0].buffer = value.buffer.handle
                    changed.append(self.writes[i])
            self.bound[role] = value
        if changed and (self.record_on_rebind or not self.context.update_after_bind):  # the module docstring
            vk.vkResetCommandBuffer(self.command_buffer, 0)
            self._record()  # writes every descriptor, the changed ones included
        elif changed:
            vk.vkUpdateDescriptorSets(self.context.device, len(changed), changed, 0, None)
        self.context.submit(self.command_buffer)
        for array in self.outputs:
            array.host_copy_at = self.context.submits

    def _patch_vector(self, role: str, vector) -> None:
        values = tuple(vector)
        for args_buffer, code, argument in self.role_vectors[role]:
            code.write_argument(argument, values, args_buffer.mapped)

    def close(self) -> None:
        if self.command_buffer is None:
            return
        device = self.context.device
        vk.vkFreeCommandBuffers(device, self.context.pool, 1, [self.command_buffer])
        vk.vkDestroyDescriptorPool(device, self.pool, None)
        for buffer in self.args_buffers:
            self.context.free(buffer)
        self.command_buffer = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass
