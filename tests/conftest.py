"""Shared test set-up: hypothesis profiles and small random models from the project's generator."""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

# Under lavapipe (the CI's software Vulkan) each kernel launch and compile is ~10-20x slower than on x64, where the
# same properties run 25 examples each: the Vulkan run checks the SPIR-V path with 10 (tolerances are the same).
ON_LAVAPIPE = os.environ.get("AI00REF_TAICHI_ARCH") == "vulkan"
settings.register_profile("ci", derandomize=True, deadline=None, max_examples=10 if ON_LAVAPIPE else 25,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, max_examples=200)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def taichi_arch():
    """The Taichi arch under test (env AI00REF_TAICHI_ARCH, default cpu), started once: see tests/taichi_arch.py."""
    import taichi_arch

    return taichi_arch.start()
