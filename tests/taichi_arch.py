"""Which Taichi arch the `taichi`-marked tests run on, and starting it (one arch per process).

Taichi runs one arch per process (`kernels.init` raises on a second, different one), so the test command runs
the `-m taichi` tests once per arch, choosing it with the environment:

    AI00REF_TAICHI_ARCH=cpu    pytest -m taichi      # the default
    AI00REF_TAICHI_ARCH=vulkan pytest -m taichi      # Mesa lavapipe is enough (slow, but a real Vulkan device)

Outside CI a missing taichi or a missing Vulkan device skips those tests; in CI (`CI=true`) it fails them.
"""
from __future__ import annotations

import os

import pytest

ENV = "AI00REF_TAICHI_ARCH"
ARCH = os.environ.get(ENV, "cpu")
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
# The Vulkan suite runs on Mesa's lavapipe in CI: a software device (~20 ms a launch) that spends most of the suite's
# time compiling kernels, so the tests that compile whole models there take fewer cases (each test says which)
SLOW = ARCH == "vulkan"


def unavailable(reason: str):
    """Skip (a developer box without taichi/Vulkan) or fail (CI, where everything must run)."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the Taichi tests must run, not skip)", pytrace=False)
    pytest.skip(reason)


def start() -> str:
    """`kernels.init(ARCH)` once; returns the arch in use (cpu, vulkan or cuda)."""
    try:
        import taichi  # noqa: F401
    except ImportError as e:
        unavailable(f"taichi is not installed ({e}); pip install -e '.[taichi]'")
    import kernels

    if ARCH not in kernels.ARCHES:
        pytest.fail(f"{ENV}={ARCH!r}: expected one of {', '.join(kernels.ARCHES)}", pytrace=False)
    if ARCH == "vulkan":
        from kernels.device import vulkan_devices

        if not vulkan_devices():
            unavailable("no Vulkan device (apt-get install mesa-vulkan-drivers libvulkan1 gives lavapipe)")
    try:
        arch = kernels.init(ARCH)
    except RuntimeError as e:
        unavailable(f"Taichi cannot start on {ARCH}: {e}")
    if ARCH != "auto" and arch != ARCH:
        pytest.fail(f"asked for Taichi arch {ARCH}, got {arch}", pytrace=False)
    return arch


def import_taichi():
    """`import taichi` at a test module's top: a missing taichi skips the module (fails it in CI)."""
    try:
        import taichi
    except ImportError as e:
        if IN_CI:
            raise
        pytest.skip(f"taichi is not installed ({e})", allow_module_level=True)
    return taichi
