"""Oracle check of ai00ref.weights.pth against real torch (run once, not part of pytest).

    python3 -m venv .venv-oracle && .venv-oracle/bin/pip install torch==2.13.0 numpy safetensors
    .venv-oracle/bin/python tests/oracle/check_pth_roundtrip.py

Checks, for fp32/fp16/bf16 (and fp64/int64 on the torch side):
  ours -> torch: write_pth output is read by torch.load(weights_only=True), bit-exactly;
  torch -> ours: torch.save output (contiguous, transposed, sliced, shared-storage, 0-d, empty tensors,
                 nn.Parameter, a {"state_dict": ...} wrapper) is read by read_pth bit-exactly;
  bf16 rounding: float32_to_bf16_bits equals torch's .bfloat16() on special and random values.
Prints one line per check and exits non-zero on the first mismatch.
"""
from __future__ import annotations

import sys
import tempfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from ai00ref.weights.pth import float32_to_bf16_bits, read_pth, write_pth  # noqa: E402

TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def torch_to_numpy(t: torch.Tensor) -> np.ndarray:
    """What read_pth should return for a torch tensor: bf16 upcast to float32, the rest unchanged."""
    t = t.detach()
    return (t.float() if t.dtype == torch.bfloat16 else t).contiguous().numpy()


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-exact equality, shape and dtype included (NaNs compare by bits)."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def sample_arrays(rng) -> dict[str, np.ndarray]:
    special = np.array([0.0, -0.0, 1.0, -2.5, 65504.0, 7e4, 1e-8, 3e-39, np.inf, -np.inf, 1e38], np.float32)
    return {
        "blocks.0.att.key.weight": rng.standard_normal((4, 6)).astype(np.float32),
        "emb.weight": rng.standard_normal((10, 6)).astype(np.float64),
        "special": special,
        "scalar": np.array(3.25, np.float32),
        "empty": np.zeros((0, 3), np.float32),
        "half_input": rng.standard_normal(5).astype(np.float16),
        "ids": np.arange(-3, 4, dtype=np.int64),
        "big_ids": np.array([2**40, -(2**35)], np.int64),
    }


def check_ours_to_torch(tmp: Path, rng) -> None:
    arrays = sample_arrays(rng)
    for dtype, tdtype in TORCH_DTYPES.items():
        path = tmp / f"ours_{dtype}.pth"
        write_pth(path, arrays, dtype)
        loaded = torch.load(path, weights_only=True)
        assert list(loaded) == list(arrays), (list(loaded), list(arrays))
        for name, array in arrays.items():
            if array.dtype.kind == "f":
                expected = torch.from_numpy(np.array(array)).to(tdtype)
            else:
                expected = torch.from_numpy(np.array(array))
            got = loaded[name]
            assert got.dtype == expected.dtype and got.shape == expected.shape, (name, got, expected)
            assert torch.equal(got.view(-1).view(torch.uint8) if got.numel() else got,
                               expected.reshape(-1).view(torch.uint8) if got.numel() else expected), (dtype, name)
            assert same(read_pth(path)[name], torch_to_numpy(got)), (dtype, name)
        print(f"ok  ours -> torch.load(weights_only=True), {dtype}: {len(arrays)} tensors bit-exact")


def torch_state(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    base = torch.randn(4, 6).to(dtype)
    return OrderedDict(
        full=base, transposed=base.t(), sliced=base[1:3, ::2], row=base[2], column=base[:, 1],
        scalar=torch.tensor(1.5, dtype=dtype), empty=torch.zeros(0, 3, dtype=dtype),
        expanded=torch.randn(3, 1).to(dtype).expand(3, 4), permuted=torch.randn(2, 3, 4).to(dtype).permute(2, 0, 1),
    )


def check_torch_to_ours(tmp: Path) -> None:
    for dtype in [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64]:
        state = {k: (v * 7).to(dtype) if dtype == torch.int64 else v for k, v in torch_state(
            torch.float32 if dtype == torch.int64 else dtype).items()}
        path = tmp / f"torch_{dtype}.pth"
        torch.save(state, path)
        ours = read_pth(path)
        assert list(ours) == list(state)
        for name, t in state.items():
            assert same(ours[name], torch_to_numpy(t)), (dtype, name, ours[name], t)
        print(f"ok  torch.save -> read_pth, {dtype}: views, shared storage, 0-d and empty tensors bit-exact")


def check_wrappers(tmp: Path) -> None:
    weights = {"w": torch.randn(3, 2, dtype=torch.bfloat16)}
    torch.save({"state_dict": weights, "epoch": 3}, tmp / "wrapped.pth")
    assert same(read_pth(tmp / "wrapped.pth")["w"], torch_to_numpy(weights["w"]))
    torch.save(torch.nn.Linear(2, 3).state_dict(), tmp / "module.pth")  # has a _metadata attribute
    assert set(read_pth(tmp / "module.pth")) == {"weight", "bias"}
    p = torch.nn.Parameter(torch.randn(2, 2))
    torch.save({"p": p}, tmp / "param.pth")
    assert same(read_pth(tmp / "param.pth")["p"], torch_to_numpy(p))
    print("ok  state_dict wrapper, module state_dict with _metadata, nn.Parameter")


def check_bf16_rounding(rng) -> None:
    values = np.concatenate([
        rng.standard_normal(100_000) * 10.0 ** rng.integers(-45, 39, 100_000),
        np.array([np.nan, -np.nan, np.inf, -np.inf, 3.4e38, -3.4e38, 0.0, -0.0, 1e-45], np.float32),
        np.arange(0x3F800000, 0x3F810000, dtype=np.uint32).view(np.float32),  # every tie pattern near 1.0
    ]).astype(np.float32)  # (values above float32's range become inf here, on purpose)
    ours = float32_to_bf16_bits(values)
    theirs = torch.from_numpy(values).bfloat16().view(torch.int16).numpy().view(np.uint16)
    nan = np.isnan(values)
    assert np.array_equal(ours[~nan], theirs[~nan]), np.flatnonzero(ours != theirs)[:10]
    # NaN bits differ and don't matter: ours give 0x7FC0 (c10's documented choice), torch 2.13 on CPU 0xFFFF.
    assert np.all(ours[nan] == 0x7FC0) and np.all((theirs[nan] & 0x7FFF) > 0x7F80)
    print(f"ok  float32 -> bf16 round-to-nearest-even equals torch on {values.size} values "
          f"(NaN: ours 0x7FC0, torch {sorted({hex(v) for v in theirs[nan]})})")


def main() -> int:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        check_ours_to_torch(tmp, rng)
        check_torch_to_ours(tmp)
        check_wrappers(tmp)
        check_bf16_rounding(rng)
    print("all pth oracle checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
