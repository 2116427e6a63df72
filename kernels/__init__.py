"""Taichi kernels for RWKV v4-v7: the fast engine, checked against `ai00ref.ref` (spec/tolerances.md).

`init(arch)` is the only place `ti.init` is called; nothing runs at import. The arch is chosen once per
process: "auto" takes a hardware Vulkan GPU, then CUDA, then the x64 CPU backend, and never a software
Vulkan device (Mesa lavapipe/llvmpipe), which an explicit "vulkan" may still use (that is how CI tests it).
"""
from __future__ import annotations

import logging

ARCHES = ("auto", "vulkan", "cuda", "cpu")
RUNTIMES = ("auto", "taichi", "commands")
log = logging.getLogger("ai00ref.kernels")
_current: str | None = None
_runtime: str | None = None
_lanes = 1


def lane_count() -> int:
    """Threads that share one row in the lane kernels (kernels/lanes.py): the subgroup (warp) size on a GPU, 1 on
    the CPU. Known after `init`."""
    return _lanes


def current_arch() -> str | None:
    """The arch `init` settled on ("vulkan", "cuda" or "cpu"), or None before `init`."""
    return _current


def runtime() -> str | None:
    """What runs the kernels, fixed by `init`: "taichi" (Taichi's runtime: launches and `ti.graph`s) or "commands"
    (Vulkan only: Taichi compiles the kernels, and recorded passes run as command buffers on our own device,
    kernels/vk). None before `init`."""
    return _runtime


def is_gpu() -> bool:
    return _current in ("vulkan", "cuda")


def _start_runtime(arch: str, runtime: str) -> str:
    """The runtime for `arch`: "commands" on Vulkan unless "taichi" is asked for, or unless our Vulkan device cannot
    be made and "auto" was asked for (then Taichi's runtime, with a warning)."""
    if arch != "vulkan" or runtime == "taichi":
        return "taichi"
    try:
        from kernels import arrays
        arrays.context()
    except Exception as e:  # the `vulkan` package missing, or no device with what Taichi's code needs
        if runtime == "commands":
            raise RuntimeError(f"runtime 'commands' cannot start: {e} (pip install vulkan==1.3.275.1)") from e
        log.warning("Vulkan command buffers unavailable (%s): kernels run on Taichi's runtime", e)
        return "taichi"
    return "commands"


def init(arch: str = "auto", runtime: str = "auto") -> str:
    """Initialize Taichi once; return the arch actually in use. A second call must agree with the first.
    `runtime` "auto" is "commands" on Vulkan and "taichi" elsewhere (`runtime()`)."""
    global _current, _lanes, _runtime
    if arch not in ARCHES:
        raise ValueError(f"unknown arch {arch!r}; expected one of {', '.join(ARCHES)}")
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}")
    if _current is not None:
        if arch not in ("auto", _current):
            raise RuntimeError(f"Taichi already runs on {_current}; one process uses one arch (asked: {arch})")
        if runtime not in ("auto", _runtime):
            raise RuntimeError(f"the kernels already run on the {_runtime} runtime; one process uses one "
                               f"(asked: {runtime})")
        return _current
    from kernels.device import choose_arch, start_taichi, subgroup_size

    chosen = choose_arch(arch)
    if runtime == "commands" and chosen != "vulkan":
        raise ValueError(f"runtime 'commands' runs on Vulkan only, not on {chosen}")
    start_taichi(chosen)
    _runtime = _start_runtime(chosen, runtime)
    _current = chosen
    if _runtime == "commands":  # the device the kernels run on is ours (kernels/arrays.py), not Taichi's
        from kernels import arrays
        _lanes = arrays.context().subgroup_size
    else:
        _lanes = subgroup_size(chosen)
    from kernels import lanes
    lanes.LANES = _lanes
    log.info("Taichi engine on arch=%s, %s runtime (%d lanes per row)", chosen, _runtime, _lanes)
    return chosen
