"""Replay the official-package fixtures against an `ai00ref` backend (no torch needed).

For every fixture: rebuild the random model from its spec, check the digest, write it as fp32/fp16/bf16
`.pth` and fp16 `.st`, load each file with `ai00ref.load_model(path, backend=..., dtype=..., **extra)` and run:

- prefill:    logits of every token of the prompt from a zero state (`full_output=True`);
- state:      the state after the prefill and after the steps, in the official list layout;
- steps:      4 single-token calls continuing from the engine's own prefill state;
- batch:      one ragged batch of two prefixes of the prompt (rows must equal the unbatched logits);
- init_state: a prompt run from the state-tuning state (`random_state_tensors`) in the official layout;
- init_file:  the same, with the `time_state` tensors inside an fp32 `.pth` that the engine loads (v5-v7).

Metrics per check: max over rows of ‖Δ‖₂/‖ref‖₂ (the pass criterion) and max|Δ|/std(ref) (scale-free).
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ai00ref.weights.random_model import RandomModelSpec, random_model_tensors, random_state_tensors, tensors_digest

FORMAT_VERSION = 1
FIXTURES = Path(__file__).resolve().parent / "fixtures"
REPOSITORY = FIXTURES.parent.parent  # trained fixtures name their model file relative to it
REGENERATE = ".venv-oracle/bin/python -m conformance.generate"
FILE_TYPES = ("pth-fp32", "pth-fp16", "pth-bf16", "st-fp16")
# (variant, file type) pairs where the official package defines no reference: Ai00's converter keeps v5.0's
# log-u `time_first` in the `.st` and Ai00 uses it raw, while the package uses exp(time_first) (rwkv-math §2.2, §11.3)
NOT_APPLICABLE = {("v5.0", "st-fp16"): "n/a: .st keeps v5.0 log(u) time_first, Ai00 uses it raw; pkg uses exp"}
# trained models hold fp16 values (the .st they ship as), which bf16 cannot hold: a bf16 file is another model
TRAINED_NOT_APPLICABLE = {"pth-bf16": "n/a: trained weights are fp16 values, not exact in bf16"}
# max relative L2 error per backend (or "backend-precision"); a later engine adds its own keys here
TOLERANCES = {"ref": 1e-5, "taichi-fp32": 1e-4, "taichi-fp16": 1e-2}


class FixtureError(Exception):
    """A fixture that cannot be used as it is; the message says how to regenerate it."""


@dataclass
class Fixture:
    path: Path
    meta: dict
    arrays: dict[str, np.ndarray]

    @property
    def spec(self) -> RandomModelSpec:
        return RandomModelSpec(**self.meta["spec"])

    @property
    def trained(self) -> dict | None:
        """{"file": path from the repository root, "sha256": ...} for a trained model's fixture; None if random."""
        return self.meta.get("trained")

    def tensors(self) -> dict[str, np.ndarray]:
        """The model's tensors under `.pth` names: the random model of `spec`, or the trained model's file."""
        return trained_tensors(self) if self.trained else random_model_tensors(self.spec)

    @property
    def shape(self) -> str:
        s = self.spec
        if self.trained:
            return f"trained L{s.n_layer} C{s.n_embd} N{s.head_size}"
        return f"L{s.n_layer} C{s.n_embd} N{s.head_size} V{s.n_vocab}"

    def states(self, prefix: str) -> list[np.ndarray]:
        n = sum(k.startswith(prefix + ".") for k in self.arrays)
        return [self.arrays[f"{prefix}.{i}"] for i in range(n)]


@dataclass
class Row:
    variant: str
    shape: str
    file: str
    check: str
    rel_l2: float
    dev: float  # max|Δ| / std(ref)
    tol: float
    note: str = ""

    @property
    def not_applicable(self) -> bool:
        return self.note.startswith("n/a")

    @property
    def skipped(self) -> bool:
        return bool(np.isnan(self.rel_l2)) and not self.not_applicable

    @property
    def passed(self) -> bool:  # skipped (missing engine API) and n/a rows are reported, not failed
        return self.not_applicable or self.skipped or bool(self.rel_l2 <= self.tol)


# ---- fixtures ----

def fixture_paths() -> list[Path]:
    return sorted(FIXTURES.glob("*.npz"))


def load_fixture(path: Path) -> Fixture:
    """Read a fixture and check its format version and that the project generator still makes the same model."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    found = int(arrays.pop("format_version", -1))
    if found != FORMAT_VERSION:
        raise FixtureError(f"{path.name}: format_version {found}, runner expects {FORMAT_VERSION}. "
                           f"HINT: regenerate with `{REGENERATE}`")
    fixture = Fixture(path, json.loads(str(arrays.pop("meta"))), arrays)
    if fixture.trained:
        check_trained_file(fixture)
        fixture.arrays = expand_columns(arrays)
    else:
        check_digest(fixture, tensors_digest(random_model_tensors(fixture.spec)))
    return fixture


# ---- trained models (assets/models): fixtures keep only the logit columns of trained rows ----

def check_trained_file(fixture: Fixture) -> None:
    import hashlib

    path = REPOSITORY / fixture.trained["file"]
    if not path.is_file():
        raise FixtureError(f"{fixture.path.name}: the trained model {fixture.trained['file']} is missing "
                           "(it ships in the repository; a wheel install has no assets/models)")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != fixture.trained["sha256"]:
        raise FixtureError(f"{fixture.path.name}: {fixture.trained['file']} has sha256 {digest[:16]}…, the fixture "
                           f"was made from {fixture.trained['sha256'][:16]}…. HINT: regenerate with "
                           f"`{REGENERATE} trained` (oracle venv) and commit the new fixture")


def expand_columns(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Logits stored for `columns` only (the generator checked every other logit is exactly 0) -> full rows."""
    columns = arrays.pop("columns")
    n_vocab = int(arrays.pop("n_vocab"))
    for name in [k for k in arrays if k.endswith("_logits")]:
        full = np.zeros(arrays[name].shape[:-1] + (n_vocab,), np.float32)
        full[..., columns] = arrays[name]
        arrays[name] = full
    return arrays


def trained_tensors(fixture: Fixture) -> dict[str, np.ndarray]:
    """The trained `.st` back under `.pth` names, fp32 (for v7 Ai00's conversion is its own inverse: no renames
    apply, and it swaps the same two axes)."""
    from ai00ref.weights.convert import pth_to_st_tensors
    from ai00ref.weights.safetensors_io import read_safetensors

    st = read_safetensors(REPOSITORY / fixture.trained["file"])
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in pth_to_st_tensors(st).items()}


def check_digest(fixture: Fixture, digest: str) -> None:
    if digest != fixture.meta["digest"]:
        raise FixtureError(
            f"{fixture.path.name}: the random model of spec {fixture.meta['spec']} has digest {digest[:16]}…, "
            f"the fixture was made from {fixture.meta['digest'][:16]}…: ai00ref/weights/random_model.py changed. "
            f"HINT: regenerate with `{REGENERATE} {fixture.spec.variant}` (oracle venv) and commit the new fixtures")


# ---- metrics ----

def rel_l2(out: np.ndarray, ref: np.ndarray) -> float:
    """Max over rows (last axis = one row) of ‖out − ref‖₂ / ‖ref‖₂."""
    out, ref = np.atleast_2d(out).astype(np.float64), np.atleast_2d(ref).astype(np.float64)
    if out.shape != ref.shape:
        return float("inf")
    num = np.linalg.norm((out - ref).reshape(-1, ref.shape[-1]), axis=-1)
    den = np.linalg.norm(ref.reshape(-1, ref.shape[-1]), axis=-1)
    return float(np.max(num / np.maximum(den, 1e-30)))


def deviation(out: np.ndarray, ref: np.ndarray) -> float:
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    if out.shape != ref.shape:
        return float("inf")
    return float(np.max(np.abs(out - ref)) / max(ref.std(), 1e-30))


def tolerance(backend: str, precision: str | None = None) -> float:
    return TOLERANCES.get(f"{backend}-{precision}", TOLERANCES.get(backend, 1e-5))


# ---- model files ----

def write_model_file(spec: RandomModelSpec, kind: str, directory: Path, tensors: dict | None = None) -> Path:
    """Write the model (`tensors`, else the random model of `spec`) as one of FILE_TYPES with the project's writers
    (ImportError if not there yet)."""
    suffix, dtype = kind.split("-")
    path = directory / f"model-{dtype}.{suffix}"
    if suffix == "pth":
        from ai00ref.weights.pth import write_pth

        write_pth(path, random_model_tensors(spec) if tensors is None else tensors, dtype=dtype)
        return path
    if tensors is None:
        from ai00ref.weights.random_model import write_random_model

        return write_random_model(spec, path, dtype=dtype)
    from ai00ref.weights.convert import ST_METADATA, pth_to_st_tensors
    from ai00ref.weights.safetensors_io import write_safetensors

    halves = {k: np.ascontiguousarray(v).astype(np.float16) for k, v in pth_to_st_tensors(tensors).items()}
    write_safetensors(path, halves, metadata=ST_METADATA)
    return path


# ---- engine adapter (the contract of ai00ref.load_model; see README) ----

def load_model(path: Path, backend: str, dtype: str, **extra):
    import ai00ref

    return ai00ref.load_model(str(path), backend=backend, dtype=dtype, **extra)


def to_official(state, b: int = 0) -> list[np.ndarray]:
    if hasattr(state, "to_official"):
        return [np.asarray(s) for s in state.to_official(b)]
    from ai00ref.ref.state import to_official as ref_to_official  # the ref engine's function form

    return [np.asarray(s) for s in ref_to_official(state, b)]


def from_official(model, tensors: list[np.ndarray]):
    if hasattr(model, "state_from_official"):
        return model.state_from_official(tensors)
    from ai00ref.ref.state import from_official as ref_from_official

    return ref_from_official(model.info, tensors, dtype=getattr(model, "dtype", "float32"))


def official_init_state(spec: RandomModelSpec) -> list[np.ndarray]:
    """The state the generator started from: shift states 0; WKV = time_state^T (v5/v6) or as is (v7)."""
    zeros, state = np.zeros(spec.n_embd, np.float32), []
    for ts in random_state_tensors(spec).values():
        state += [zeros, ts if spec.variant == "v7" else np.ascontiguousarray(ts.transpose(0, 2, 1)), zeros]
    return state


def prefill(model, tokens: list[int]):
    """Logits of every token (T, V), or only the last one (1, V) if the engine has no full_output."""
    try:
        logits, state = model.forward([tokens], model.new_state(1), full_output=True)
        return np.asarray(logits[0]), state, "all rows"
    except TypeError:
        logits, state = model.forward([tokens], model.new_state(1))
        return np.asarray(logits)[:1], state, "last row only: no full_output"


# ---- checks ----

def run_checks(model, fx: Fixture) -> list[tuple[str, np.ndarray | list, np.ndarray | list, str]]:
    """(check, output, reference, note) for every check of one loaded model."""
    p, a = fx.meta["prompts"], fx.arrays
    out, state, note = prefill(model, p["prefill"])
    ref = a["prefill_logits"] if out.shape[0] > 1 else a["prefill_logits"][-1:]
    results = [("prefill", out, ref, note)]
    states = [(to_official(state), fx.states("prefill_state"))]
    steps = []
    for tok in p["steps"]:
        logits, state = model.forward([[tok]], state)
        steps.append(np.asarray(logits)[0])
    results.append(("steps", np.stack(steps), a["steps_logits"], ""))
    states.append((to_official(state), fx.states("steps_state")))
    results.append(("state", *zip(*states), "prefill and steps; per tensor"))
    k = len(p["prefill"]) // 3
    logits, _ = model.forward([p["prefill"], p["prefill"][:k]], model.new_state(2))
    results.append(("batch", np.asarray(logits), a["prefill_logits"][[-1, k - 1]], "ragged B=2"))
    if "init_state_logits" in a:
        results.append(init_state_check(model, fx))
    return results


def init_state_check(model, fx: Fixture):
    try:
        state = from_official(model, official_init_state(fx.spec))
    except (ImportError, AttributeError) as e:
        return ("init_state", None, None, f"skipped: no state import ({e})")
    logits, _ = model.forward([fx.meta["prompts"]["init_state"]], state, full_output=True)
    return ("init_state", np.asarray(logits[0]), fx.arrays["init_state_logits"], "")


def init_file_check(fx: Fixture, directory: Path, backend: str, dtype: str, **load_kwargs):
    """The engine's own loader: `time_state` merged into an fp32 `.pth`, as the generator gave it to the package."""
    from ai00ref.weights.pth import write_pth

    path = directory / "model-with-state.pth"
    write_pth(path, {**random_model_tensors(fx.spec), **random_state_tensors(fx.spec)}, dtype="fp32")
    model = load_model(path, backend, dtype, **load_kwargs)
    logits, _ = model.forward([fx.meta["prompts"]["init_state"]], model.new_state(1), full_output=True)
    return ("init_file", np.asarray(logits[0]), fx.arrays["init_state_logits"], "time_state inside the .pth")


def score(out, ref) -> tuple[float, float]:
    """State checks compare lists of tensors: the worst tensor counts."""
    if isinstance(out, tuple):
        pairs = [(o, r) for outs, refs in zip(out, ref) for o, r in zip(outs, refs)]
        if any(len(outs) != len(refs) for outs, refs in zip(out, ref)):
            return float("inf"), float("inf")
        return max(rel_l2(o, r) for o, r in pairs), max(deviation(o, r) for o, r in pairs)
    return rel_l2(out, ref), deviation(out, ref)


def check_fixture(fx: Fixture, backend: str = "ref", dtype: str = "float32", file_types=FILE_TYPES,
                  **load_kwargs) -> list[Row]:
    """All rows of the table for one fixture."""
    tol = tolerance(backend, load_kwargs.get("precision") or {"float32": "fp32", "float16": "fp16"}.get(dtype))
    rows, tensors = [], fx.tensors() if fx.trained else None
    with tempfile.TemporaryDirectory() as tmp:
        for kind in file_types:
            not_applicable = (TRAINED_NOT_APPLICABLE.get(kind) if fx.trained
                              else NOT_APPLICABLE.get((fx.spec.variant, kind)))
            if not_applicable:
                rows.append(Row(fx.spec.variant, fx.shape, kind, "all", float("nan"), float("nan"), tol,
                                not_applicable))
                continue
            try:
                model = load_model(write_model_file(fx.spec, kind, Path(tmp), tensors), backend, dtype, **load_kwargs)
            except ImportError as e:  # a writer or reader of the project that is not there yet
                rows.append(Row(fx.spec.variant, fx.shape, kind, "load", float("nan"), float("nan"), tol,
                                f"skipped: {e}"))
                continue
            except Exception as e:  # the file does not load: one failing row, the other files still run
                rows.append(Row(fx.spec.variant, fx.shape, kind, "load", float("inf"), float("inf"), tol,
                                f"{type(e).__name__}: {str(e)[:150]}"))
                continue
            checks = run_checks(model, fx)
            if kind == "pth-fp32" and "init_state_logits" in fx.arrays:
                checks.append(init_file_check(fx, Path(tmp), backend, dtype, **load_kwargs))
            for check, out, ref, note in checks:
                if out is None:
                    rows.append(Row(fx.spec.variant, fx.shape, kind, check, float("nan"), float("nan"), tol, note))
                    continue
                rows.append(Row(fx.spec.variant, fx.shape, kind, check, *score(out, ref), tol, note))
    return rows


def format_table(rows: list[Row]) -> str:
    head = f"{'variant':7} {'shape':20} {'file':9} {'check':10} {'rel L2':>9} {'max|Δ|/std':>10} {'tol':>7}  result"
    lines = [head, "-" * len(head)]
    for r in rows:
        result = "n/a" if r.not_applicable else "skip" if r.skipped else ("PASS" if r.passed else "FAIL")
        lines.append(f"{r.variant:7} {r.shape:20} {r.file:9} {r.check:10} {r.rel_l2:9.2e} {r.dev:10.2e} "
                     f"{r.tol:7.0e}  {result} {r.note}".rstrip())
    return "\n".join(lines)


def format_summary(rows: list[Row]) -> str:
    """One line per (variant, file type): the worst relative L2 error over every fixture and check."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.variant, r.file), []).append(r)
    head = f"{'variant':7} {'file':9} {'checks':>6} {'worst rel L2':>12}  result"
    lines = [head, "-" * len(head)]
    for (variant, file), group in groups.items():
        run = [r for r in group if not r.not_applicable and not r.skipped]
        worst = max((r.rel_l2 for r in run), default=float("nan"))
        result = "n/a" if not run else "PASS" if all(r.passed for r in group) else "FAIL"
        lines.append(f"{variant:7} {file:9} {len(run):6} {worst:12.2e}  {result}")
    return "\n".join(lines)
