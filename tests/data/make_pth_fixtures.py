"""Makes the small torch checkpoints in tests/data with real torch.save (run once; outputs are committed).

    .venv-oracle/bin/python tests/data/make_pth_fixtures.py

torch_{fp32,fp16,bf16}.pth: views of one storage (full, transposed, sliced, a row, an expanded
    stride-0 view, a permuted 3-d tensor), a 0-d and an empty tensor.
torch_wrapped.pth: {"state_dict": {fp64, int64, nn.Parameter}, "epoch": 3}.
torch_legacy.pth: the same tiny dict saved with _use_new_zipfile_serialization=False (must be refused).
expected.npz: for every fixture tensor "<file stem>/<name>", the values read_pth must return
    (bf16 upcast to float32, views made contiguous).
"""
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).parent


def views(dtype: torch.dtype) -> dict:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(3, 4, generator=g).to(dtype)
    return {"full": base, "transposed": base.t(), "sliced": base[1:, ::2], "row": base[2],
            "expanded": base[:, :1].expand(3, 2), "permuted": torch.randn(2, 3, 2, generator=g).to(dtype).permute(2, 0, 1),
            "scalar": torch.tensor(-1.5, dtype=dtype), "empty": torch.zeros(0, 2, dtype=dtype)}


def as_expected(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    return (t.float() if t.dtype == torch.bfloat16 else t).contiguous().numpy()


def main() -> None:
    expected = {}
    for stem, dtype in [("torch_fp32", torch.float32), ("torch_fp16", torch.float16), ("torch_bf16", torch.bfloat16)]:
        state = views(dtype)
        torch.save(state, HERE / f"{stem}.pth")
        expected.update({f"{stem}/{k}": as_expected(v) for k, v in state.items()})
    inner = {"w64": torch.arange(6, dtype=torch.float64).reshape(2, 3) / 3, "ids": torch.tensor([-1, 2**40]),
             "param": torch.nn.Parameter(torch.tensor([0.5, 2.0]))}
    torch.save({"state_dict": inner, "epoch": 3}, HERE / "torch_wrapped.pth")
    expected.update({f"torch_wrapped/{k}": as_expected(v) for k, v in inner.items()})
    torch.save({"w": torch.ones(2)}, HERE / "torch_legacy.pth", _use_new_zipfile_serialization=False)
    np.savez_compressed(HERE / "expected.npz", **expected)
    print(f"torch {torch.__version__}: wrote", sorted(p.name for p in HERE.glob("*.pth")))


if __name__ == "__main__":
    main()
