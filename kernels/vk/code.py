"""A Taichi kernel as the SPIR-V tasks Taichi's Vulkan runtime would dispatch, with their bindings and argument layout.

Taichi compiles the kernel ahead of time (`ti.aot.Module`) for the capabilities of our device (`VkContext.taichi_caps`),
which are the ones its own runtime would give the same device; the module's metadata says, per task, which buffer
sits at which binding and how many workgroups to dispatch, and where each argument sits in the argument buffer.
"""
from __future__ import annotations

import dataclasses
import json
import os
import struct
import tempfile

from taichi.aot.utils import produce_injected_args_from_template
from taichi.lang import impl

# taichi/codegen/spirv/kernel_utils.h: TaskAttributes::BufferType
ROOT, GLOBAL_TMPS, ARGS, RETS, LIST_GEN, EXT_ARR, ARG_PACK = range(7)
# taichi/inc/data_type.inc.h: the primitive types' ids, as the argument layout names them
_PRIMITIVE = {0: "e", 1: "f", 5: "i", 10: "I"}


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    spirv: bytes
    bindings: tuple[tuple[int, int, int], ...]  # (binding, buffer type, argument index for EXT_ARR else -1)
    groups: int  # workgroups along x, as Taichi computes them (GfxRuntime::launch_kernel)


@dataclasses.dataclass(frozen=True)
class Argument:
    """Where one kernel argument's values go in the argument buffer: (byte offset, struct format char) per value;
    an array's values are its shape."""
    index: int
    is_array: bool
    slots: tuple[tuple[int, str], ...]


@dataclasses.dataclass(frozen=True)
class KernelCode:
    name: str
    tasks: tuple[Task, ...]
    arguments: tuple[Argument, ...]
    args_bytes: int

    def write_arguments(self, values: list, out) -> None:
        """Every argument into the argument buffer `out` (a writable buffer of at least `args_bytes`): `values` has one
        per kernel argument, an array's shape, a scalar, or a vector."""
        for argument in self.arguments:
            self.write_argument(argument, values[argument.index], out)

    def write_argument(self, argument: Argument, value, out) -> None:
        items = tuple(value) if isinstance(value, (tuple, list)) else (value,)
        if len(items) != len(argument.slots):
            raise ValueError(f"{self.name}: argument {argument.index} has {len(items)} values, "
                             f"its layout {len(argument.slots)}")
        for (offset, fmt), item in zip(argument.slots, items):
            struct.pack_into("<" + fmt, out, offset, int(item) if fmt in "iI" else float(item))


def compile_kernel(kernel, examples: list, caps: list[str]) -> KernelCode:
    """`kernel` (a `ti.kernel`) instantiated for `examples` (one per parameter: a Taichi ndarray of the array's dtype
    and dimensions, or None for scalars and vectors) and compiled for a device with `caps`."""
    primal = kernel._primal
    templates = {a.name: ex for a, ex in zip(primal.arguments, examples) if ex is not None}
    # what ti.aot.Module.add_kernel and .save do, with a builder per kernel (a process may make one Module only)
    runtime = impl.get_runtime()
    builder = runtime.prog.make_aot_module_builder(impl.current_cfg().arch, caps)
    primal.ensure_compiled(*produce_injected_args_from_template(primal, templates))
    builder.add(kernel.__name__, primal.kernel_cpp)
    with tempfile.TemporaryDirectory() as folder:
        builder.dump(folder, "")
        with open(os.path.join(folder, "metadata.json")) as f:
            metadata = json.load(f)
        (attributes,) = metadata["kernels"]
        tasks = []
        for task in attributes["tasks_attribs"]:
            with open(os.path.join(folder, task["name"] + ".spv"), "rb") as f:
                tasks.append(_task(task, f.read()))
    context = attributes["ctx_attribs"]
    return KernelCode(attributes["name"], tuple(tasks), _arguments(context), context["args_bytes_"])


def _task(task: dict, spirv: bytes) -> Task:
    if task["task_type"] not in (0, 1):  # serial, range_for; ndarray kernels have no struct-for or list-gen
        raise NotImplementedError(f"Taichi task {task['name']} of type {task['task_type']}")
    bindings = []
    for bind in task["buffer_binds"]:
        kind = bind["buffer"]["type"]
        if kind not in (GLOBAL_TMPS, ARGS, EXT_ARR):
            raise NotImplementedError(f"Taichi task {task['name']} binds a buffer of type {kind}")
        index = bind["buffer"]["root_id"][0] if kind == EXT_ARR else -1
        bindings.append((bind["binding"], kind, index))
    per_group = task["advisory_num_threads_per_group"]
    groups = (task["advisory_total_num_threads"] + per_group - 1) // per_group
    return Task(task["name"], spirv, tuple(sorted(bindings)), groups)


def _arguments(context: dict) -> tuple[Argument, ...]:
    attributes = {entry["key"][0]: entry["value"] for entry in context["arg_attribs_vec_"]}
    layout = {int(e["name"].split("_")[1]): e for e in context["args_type_"]["content"]["elements_"]}
    arguments = []
    for index, attribute in sorted(attributes.items()):
        entry = layout[index]
        if attribute["is_array"]:
            shape = next(e for e in entry["type"]["content"]["elements_"] if e["name"] == "shape")
            slots = _slots(shape["type"], entry["offset"] + shape["offset"])
        else:
            slots = _slots(entry["type"], entry["offset"])
        arguments.append(Argument(index, bool(attribute["is_array"]), slots))
    return tuple(arguments)


def _slots(kind: dict, base: int) -> tuple[tuple[int, str], ...]:
    """(offset, format) of each primitive inside a layout type: a primitive or a struct of primitives."""
    if kind["type_kind"] == 0:
        primitive = kind["content"]["type"]
        if primitive not in _PRIMITIVE:
            raise NotImplementedError(f"kernel argument of Taichi primitive type {primitive}")
        return ((base, _PRIMITIVE[primitive]),)
    if kind["type_kind"] == 3:
        return tuple(slot for e in kind["content"]["elements_"] for slot in _slots(e["type"], base + e["offset"]))
    raise NotImplementedError(f"kernel argument of Taichi type kind {kind['type_kind']}")
