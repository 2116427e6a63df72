"""Conformance of the Taichi engine: the official `rwkv` 0.8.32 fixtures replayed with `backend="taichi"`.

The arch is the one under test (env AI00REF_TAICHI_ARCH, tests/taichi_arch.py). One fixture per variant (the small
L2 C64 shapes; v7 also the C128 one, whose 128 channels fill whole GPU workgroups), each written as every file type
(on lavapipe one: FP32_FILES), at precision fp32 (tolerance 1e-4) and fp16 (1e-2; not on lavapipe: CASES):
`conformance/runner.py` TOLERANCES. The full table: `python -m conformance --backend taichi --arch cpu`
(conformance/README.md).
"""
from __future__ import annotations

import importlib

import pytest

import taichi_arch
from conformance import runner

pytestmark = [pytest.mark.taichi, pytest.mark.conformance]

FIXTURES = [p for p in runner.fixture_paths() if "_L2_" in p.stem]
# lavapipe is slow (a software device). The file readers are the same for every backend and every file holds the same
# numbers, so there fp32 runs the fp32 .pth (with init_file), and fp16 does not run (CASES)
SLOW = taichi_arch.SLOW
FP32_FILES = ("pth-fp32",) if SLOW else runner.FILE_TYPES


def test_one_fixture_per_variant():
    variants = {runner.load_fixture(p).spec.variant for p in FIXTURES}
    assert variants == {"v4", "v5.0", "v5.1", "v5.2", "v6", "v7"}
    assert all(any(p.stem.startswith(name) for p in FIXTURES) for name in WHOLE_PROMPT)


def kernel_module(variant: str):
    """kernels/v4.py ... v7.py; a module not written yet skips its fixtures, except under CI."""
    name = f"kernels.{variant[:2]}"
    try:
        return importlib.import_module(name)
    except ImportError as e:
        if taichi_arch.IN_CI:
            raise
        pytest.skip(f"{name} does not import yet: {e}")


# (fixture, precision); on lavapipe fp32 only, and not v5.1's. An fp16 case differs from its fp32 one only in the
# weights' dtype, and fp16 whole models run there in tests/test_kernels_engine.py (v4, v5.2, v6, v7, against the
# reference, on weights fp16 must round), test_kernels_v4_v6.py (v5.0) and test_kernels_common_v7.py; v5.1 runs v5.2's
# kernels (spec/v5.md §1: read as v5.2), its fixture checking the loader, which is the same for every backend (30-50 s
# a case saved, most of CI's time being lavapipe compiling kernels); the x64 suite runs every case
CASES = [pytest.param(p, precision, id=f"{p.stem}-{precision}") for precision in ("fp32", "fp16") for p in FIXTURES
         if not SLOW or (precision == "fp32" and not p.stem.startswith("v5.1_"))]
# On lavapipe the 24-token prompt goes in one pass (tile 32: gpu_gemm's BATCH shapes) only in the fp32 cases of
# WHOLE_PROMPT, each the test of one tile-32 layer code (v6's layer holds v5's parts; v7's C128 fixture fills whole
# workgroups); the other cases take it in passes of at most 16 positions (tiles 1 and 8). Compiling a version's
# tile-32 layer kernels is most of a case's time there (--durations, cold: v6 111 s, v5.0 69 s at fp32, 32-41 s in
# passes of 16). v5.x run v6's layer without the data-dependent parts (v5.0: nor the gate), whose tile-32 and tile-64
# tasks their own tests take (v5.2 among them); v7's C64 fixture runs the C128 one's code; and the fp16 cases differ
# only in the weights' dtype, which the tiled products' own tests take as f16 (tests/test_kernels_lanes.py,
# test_kernels_v7_tasks.py, test_kernels_v56_tasks.py, test_kernels_quant.py). The x64 suite runs every case whole.
WHOLE_PROMPT = ("v4_L2_C64_", "v6_L2_C64_", "v7_L2_C128_")  # fixture names' starts


def pass_options(path, precision: str) -> dict:
    """The engine's token_chunk_size for a case: the default, or on lavapipe 16 outside WHOLE_PROMPT's fp32 cases."""
    if not SLOW or (precision == "fp32" and path.stem.startswith(WHOLE_PROMPT)):
        return {}
    return {"token_chunk_size": 16}


@pytest.mark.parametrize("path, precision", CASES)
def test_taichi_matches_official(path, precision, taichi_arch):
    fixture = runner.load_fixture(path)
    kernel_module(fixture.spec.variant)
    files = FP32_FILES if precision == "fp32" else runner.FILE_TYPES
    rows = runner.check_fixture(fixture, backend="taichi", dtype="float32", file_types=files, arch=taichi_arch,
                                precision=precision, **pass_options(path, precision))
    assert rows and all(r.tol == runner.TOLERANCES[f"taichi-{precision}"] for r in rows)
    failed = [r for r in rows if not r.passed]
    assert not failed, "\n" + runner.format_table(failed)
    skipped = [r for r in rows if r.skipped]  # a skip here means a missing engine API: not acceptable
    assert not skipped, "\n" + runner.format_table(skipped)
    assert any(r.check == "init_state" for r in rows) == (fixture.spec.variant != "v4")
