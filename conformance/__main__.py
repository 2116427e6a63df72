"""`python -m conformance --backend ref [--dtype float32] [--variant v7 ...] [--files pth-fp32 st-fp16] [--arch cpu ...]`

Prints one table row per (fixture, file type, check); exits 0 only if every check passes (a skip
is not a pass). Options the runner
does not know (e.g. `--arch vulkan --precision fp16`) are passed to `ai00ref.load_model` as keyword arguments.
"""
from __future__ import annotations

import argparse
import sys

from conformance import runner

DESCRIPTION = ("Check an engine against the conformance fixtures (logits and states of the official rwkv package on "
               "the project's random models, conformance/README.md): one table row per fixture, file type and "
               "check; exit 0 only if every check passes (a skip is not a pass). Options the runner does not know "
               "(e.g. --arch vulkan --precision fp16) go to ai00ref.load_model as keyword arguments.")


def parse_extra(extra: list[str]) -> dict[str, str]:
    """`--arch cpu --precision fp16` -> {"arch": "cpu", "precision": "fp16"}."""
    if len(extra) % 2 or not all(k.startswith("--") for k in extra[::2]):
        sys.exit(f"extra load_model options must come as `--name value` pairs, got {extra}")
    return {k[2:].replace("-", "_"): v for k, v in zip(extra[::2], extra[1::2])}


def main(argv=None, prog: str = "python -m conformance") -> int:
    ap = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    ap.add_argument("--backend", default="ref", help="ref (NumPy) or taichi (default: %(default)s)")
    ap.add_argument("--dtype", default="float32", help="ref: float32 or float64 (default: %(default)s)")
    ap.add_argument("--variant", nargs="*", help="only these variants (v4 v5.0 v5.1 v5.2 v6 v7)")
    ap.add_argument("--files", nargs="*", default=list(runner.FILE_TYPES), choices=runner.FILE_TYPES,
                    help="the file types to load each fixture's model from (default: all)")
    args, extra = ap.parse_known_args(argv)
    kwargs = parse_extra(extra)
    rows, errors = [], []
    for path in runner.fixture_paths():
        try:
            fx = runner.load_fixture(path)
        except runner.FixtureError as e:
            errors.append(str(e))
            continue
        if not args.variant or fx.spec.variant in args.variant:
            rows += runner.check_fixture(fx, args.backend, args.dtype, args.files, **kwargs)
    print(runner.format_table(rows))
    print("\nSummary per variant and file type\n" + runner.format_summary(rows))
    failed = [r for r in rows if not r.passed]
    skipped = [r for r in rows if r.skipped]
    n_a = [r for r in rows if r.not_applicable]
    print(f"\n{len(rows) - len(failed) - len(skipped) - len(n_a)} passed, {len(failed)} failed, "
          f"{len(skipped)} skipped, {len(n_a)} n/a "
          f"(backend {args.backend}, dtype {args.dtype}{''.join(f', {k} {v}' for k, v in kwargs.items())}); "
          f"metric: max over rows of |Δ|₂/|ref|₂")
    for e in errors:
        print("ERROR:", e, file=sys.stderr)
    return 1 if failed or skipped or errors or not rows else 0


if __name__ == "__main__":
    sys.exit(main())
