"""Taichi kernels for RWKV v4-v7: the fast engine, checked against `ai00ref.ref` (spec/tolerances.md).

`init(arch)` is the only place `ti.init` is called; nothing runs at import. The arch is chosen once per
process: "auto" takes a hardware Vulkan GPU, then CUDA, then the x64 CPU backend, and never a software
Vulkan device (Mesa lavapipe/llvmpipe), which an explicit "vulkan" may still use (that is how CI tests it).
"""
from __future__ import annotations

import logging

ARCHES = ("auto", "vulkan", "cuda", "cpu")
log = logging.getLogger("ai00ref.kernels")
_current: str | None = None
_lanes = 1


def lane_count() -> int:
    """Threads that share one row in the lane kernels (kernels/lanes.py): the subgroup (warp) size on a GPU, 1 on
    the CPU. Known after `init`."""
    return _lanes


def current_arch() -> str | None:
    """The arch `init` settled on ("vulkan", "cuda" or "cpu"), or None before `init`."""
    return _current


def is_gpu() -> bool:
    return _current in ("vulkan", "cuda")


def init(arch: str = "auto") -> str:
    """Initialize Taichi once; return the arch actually in use. A second call must agree with the first."""
    global _current, _lanes
    if arch not in ARCHES:
        raise ValueError(f"unknown arch {arch!r}; expected one of {', '.join(ARCHES)}")
    if _current is not None:
        if arch not in ("auto", _current):
            raise RuntimeError(f"Taichi already runs on {_current}; one process uses one arch (asked: {arch})")
        return _current
    from kernels.device import choose_arch, start_taichi, subgroup_size

    chosen = choose_arch(arch)
    start_taichi(chosen)
    _current = chosen
    _lanes = subgroup_size(chosen)
    from kernels import lanes
    lanes.LANES = _lanes
    log.info("Taichi engine on arch=%s (%d lanes per row)", chosen, _lanes)
    return chosen
