"""TaichiModel: the reference's engine interface (spec/engine.md), run by Taichi kernels.

One pass concatenates every batch row's tokens into T positions (row by row), runs each layer's kernels
over all of them (the recurrences walk each row's own segment), and reads back only the logits asked for.
States live on the device (`TaichiState`); `forward` copies the state it is given, so it is never mutated.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import taichi as ti

import kernels
from ai00ref.ref.common import LN_EPS
from ai00ref.ref.model import check_tokens
from ai00ref.ref.state import RecurrentState, V7State, to_official, zero_state
from ai00ref.weights.canonical import Weights
from ai00ref.weights.quant import QuantizedMatrix
from kernels import arrays, gpu_gemm, quant
from kernels.embed import GRAPH_IDS, embed_from_argument, embed_from_array
from kernels.head import head_kernel
from kernels.lanes import TOKEN_TILE
from kernels.launch import pass_replay, recording
from kernels.readback import read_rows

PRECISIONS = {"fp32": ti.f32, "fp16": ti.f16}
DECODE_POSITIONS = 4  # passes of at most this many positions read each weight row once per position (tile 1)
GEMM_POSITIONS = 128  # GPU passes of at least this many positions: matrices by gpu_gemm (tile PASS_TILE)
BATCH_POSITIONS = 24  # GPU passes of at least this many (and fewer than GEMM_POSITIONS): gpu_gemm's BATCH_TILE


# Weight matrices: stored in the precision's dtype. Everything else (vectors, decays, bonuses, r_k, norms) stays f32.
MATRICES = {"key", "value", "receptance", "gate", "output", "head", "w1", "w2", "a1", "a2", "v1", "v2", "g1", "g2",
            "maa_w1", "maa_w2", "decay_w1", "decay_w2"}


def to_device(value, matrix_dtype, name: str = ""):
    """Canonical weights -> the same dataclasses holding Taichi ndarrays (MATRICES in `matrix_dtype`, the rest f32)."""
    if value is None:
        return None
    if isinstance(value, QuantizedMatrix):  # v4's matrices, one by one (v5-v7 stack theirs: kernels/stacking.py)
        return quant.upload(value)
    if dataclasses.is_dataclass(value):
        return dataclasses.replace(value, **{f.name: to_device(getattr(value, f.name), matrix_dtype, f.name)
                                             for f in dataclasses.fields(value) if f.name != "info"})
    if isinstance(value, tuple):
        return tuple(to_device(v, matrix_dtype) for v in value)
    return _on_device(value, matrix_dtype if name in MATRICES else ti.f32)


def device_bytes(value) -> int:
    """Bytes of every device array in `value` (an array, or dataclasses, tuples and LayerGroups holding them)."""
    if arrays.is_array(value):
        return int(np.prod(value.shape)) * np.dtype(arrays.NUMPY[value.dtype]).itemsize
    if isinstance(value, (tuple, list)):
        return sum(device_bytes(v) for v in value)
    if dataclasses.is_dataclass(value):
        return sum(device_bytes(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name != "info")
    return 0


def pass_tile(T: int) -> int:
    """Positions sharing each weight read in a pass of T positions: 1 (decode), TOKEN_TILE, or on a GPU
    gpu_gemm.BATCH_TILE from BATCH_POSITIONS on and gpu_gemm.PASS_TILE from GEMM_POSITIONS on (the matrices as
    tiled products of two workgroup shapes; lane tasks stay at TOKEN_TILE)."""
    if T <= DECODE_POSITIONS:
        return 1
    if kernels.is_gpu() and T >= BATCH_POSITIONS:
        return gpu_gemm.PASS_TILE if T >= GEMM_POSITIONS else gpu_gemm.BATCH_TILE
    return TOKEN_TILE


class Workspace:
    """Scratch buffers, allocated once per (name, shape): Taichi allocations cost ~0.2 ms each."""

    def __init__(self):
        self._buffers: dict[tuple, ti.Ndarray] = {}

    def buffer(self, name: str, shape: tuple, dtype=ti.f32) -> ti.Ndarray:
        key = (name, tuple(shape), dtype)
        if key not in self._buffers:
            self._buffers[key] = arrays.new(dtype, tuple(shape))
        return self._buffers[key]


@dataclasses.dataclass
class Pass:
    """Where each row's tokens sit among the T positions of one pass."""
    T: int
    row: ti.Ndarray  # (T,) i32 batch row of each position
    first: ti.Ndarray  # (T,) i32 1 at each row's first position
    start: ti.Ndarray  # (B,) i32 first position of each row
    length: ti.Ndarray  # (B,) i32 positions of each row
    last: ti.Ndarray  # (B,) i32 last position of each row
    lengths_host: tuple[int, ...]
    packed: ti.Ndarray  # (5, max(T, B)) i32: row, first, start, length, last (kernels/lanes.py ROW ... LAST)

    @classmethod
    def plan(cls, lengths: tuple[int, ...]) -> "Pass":
        """Rows may have no tokens in a pass (a chunk that others fill): their `last` is -1."""
        lengths = np.array(lengths, np.int32)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int32)
        row = np.repeat(np.arange(len(lengths), dtype=np.int32), lengths)
        first = np.zeros(int(lengths.sum()), np.int32)
        first[starts[lengths > 0]] = 1
        last = np.where(lengths > 0, starts + lengths - 1, -1).astype(np.int32)
        packed = np.zeros((5, max(len(row), len(lengths))), np.int32)
        for i, a in enumerate((row, first, starts, lengths, last)):
            packed[i, :len(a)] = a
        return cls(int(lengths.sum()), *(_upload(a) for a in (row, first, starts, lengths, last)),
                   tuple(int(n) for n in lengths), _upload(packed))


def split_passes(lengths: Sequence[int], chunk: int) -> list[tuple[int, ...]]:
    """Token counts per row for each pass of at most `chunk` tokens, sharing each pass fairly among the rows
    that still have tokens (as web-rwkv's RnnIter does), so long prompts interleave with short ones."""
    remaining, passes = list(lengths), []
    while any(remaining):
        take, budget = [0] * len(remaining), chunk
        while budget > 0:
            active = [b for b, left in enumerate(remaining) if left > take[b]]
            if not active:
                break
            share = max(1, budget // len(active))
            for b in active:
                n = min(share, remaining[b] - take[b], budget)
                take[b] += n
                budget -= n
                if budget == 0:
                    break
        passes.append(tuple(take))
        remaining = [left - n for left, n in zip(remaining, take)]
    return passes


class PassCache:
    """Plans (and their compiled graphs) by row lengths: decode repeats the same few shapes."""

    def __init__(self, size: int = 64):
        self.size, self.plans, self.replays = size, {}, {}

    def get(self, lengths: tuple[int, ...]) -> Pass:
        if lengths not in self.plans:
            if len(self.plans) >= self.size:
                evicted = next(iter(self.plans))
                self.plans.pop(evicted)
                self.replays = {k: v for k, v in self.replays.items() if k[0] != evicted}
            self.plans[lengths] = Pass.plan(lengths)
        return self.plans[lengths]


def _stacked(arrays, dtype) -> ti.Ndarray:
    """Host arrays stacked on a new leading axis, on the device in `dtype` (f16 or f32)."""
    return _on_device(np.stack([np.asarray(a, np.float32) for a in arrays]), dtype)


def _on_device(array, dtype) -> ti.Ndarray:
    """A host array on the device in `dtype` (f16 or f32)."""
    return arrays.upload(np.asarray(array, np.float32), dtype)


def _upload(array: np.ndarray) -> ti.Ndarray:
    return arrays.upload(array, ti.i32)


def device_transposed(host_class) -> tuple[str, ...]:
    """Fields stored with their last two axes swapped: v7's wkv on a GPU, for coalesced access (kernels/v7.py: cell)."""
    return ("wkv",) if host_class is V7State and kernels.is_gpu() else ()


def _device_layout(host_class, name: str, array: np.ndarray) -> np.ndarray:
    """Host layout <-> device layout (the swap is its own inverse)."""
    return np.swapaxes(array, -1, -2) if name in device_transposed(host_class) else array


class TaichiState:
    """A batch of states on the device, with the reference state's fields (ai00ref/ref/state.py)."""

    def __init__(self, host_class, arrays: dict[str, ti.Ndarray]):
        self.host_class = host_class
        self.fields = arrays
        for name, array in arrays.items():
            setattr(self, name, array)

    @classmethod
    def from_host(cls, state: RecurrentState) -> "TaichiState":
        fields = {}
        for name, value in state.arrays().items():
            fields[name] = arrays.upload(_device_layout(type(state), name, value), ti.f32)
        return cls(type(state), fields)

    def to_host(self) -> RecurrentState:
        return self.host_class(**{name: np.ascontiguousarray(_device_layout(self.host_class, name, a.to_numpy()))
                                  for name, a in self.fields.items()})

    @property
    def batch(self) -> int:
        return next(iter(self.fields.values())).shape[0]

    def copy(self) -> "TaichiState":
        copies = {name: arrays.new(ti.f32, a.shape) for name, a in self.fields.items()}
        for name, a in self.fields.items():
            copies[name].copy_from(a)
        return TaichiState(self.host_class, copies)

    def assign_row(self, b: int, row: RecurrentState) -> None:
        """Overwrite batch row b with the batch-1 host state `row` (for admissions only): on our Vulkan device the row
        alone is uploaded; a Taichi ndarray makes a round trip of the whole batch through the host."""
        for name, array in self.fields.items():
            value = np.ascontiguousarray(_device_layout(self.host_class, name, row.arrays()[name][0]), np.float32)
            if hasattr(array, "write_row"):
                array.write_row(b, value)
                continue
            host = array.to_numpy()
            host[b] = value
            array.from_numpy(np.ascontiguousarray(host, dtype=np.float32))

    def rows(self, index) -> "TaichiState":
        return TaichiState.from_host(self.to_host().rows(index))

    @classmethod
    def concat(cls, states: list["TaichiState"]) -> "TaichiState":
        return cls.from_host(states[0].host_class.concat([s.to_host() for s in states]))

    def to_official(self, row: int = 0) -> list[np.ndarray]:
        return to_official(self.to_host(), row)


def version_module(version: str):
    """kernels/v4.py ... v7.py; v6 and v5 share the matrix-state kernels."""
    import importlib
    return importlib.import_module(f"kernels.{version}")


class TaichiModel:
    """The fast engine. `arch`: auto | vulkan | cuda | cpu; `precision`: fp32 | fp16 (weights; f32 arithmetic).

    `graph=True` records each pass shape once and replays it as a compiled `ti.graph` (kernels/launch.py);
    `graph=False` launches every kernel from Python (slower, same results). `runtime` (kernels/__init__.py): on
    Vulkan, "commands" (the default) runs recorded passes as command buffers of our own (kernels/vk), "taichi" as
    `ti.graph`s. A forward runs in passes of at most `token_chunk_size` tokens over all rows together
    (`split_passes`).
    """

    backend = "taichi"

    def __init__(self, weights: Weights, arch: str = "auto", precision: str = "fp32",
                 initial_state: RecurrentState | None = None, graph: bool = True, token_chunk_size: int = 256,
                 runtime: str = "auto"):
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
        if token_chunk_size < 1:
            raise ValueError(f"token_chunk_size must be positive, got {token_chunk_size}")
        self.token_chunk_size = token_chunk_size
        self.arch = kernels.init(arch, runtime)
        self.runtime = kernels.runtime()
        self.precision = precision
        self.info = weights.info
        dtype = PRECISIONS[precision]
        # The embedding table on the device in the precision's dtype; LN0 runs on each pass's rows (kernels/embed.py)
        self.embedding = _on_device(weights.emb, dtype)  # (V, C)
        self.ln0 = _stacked([np.stack([weights.ln0.weight, weights.ln0.bias])], ti.f32)  # (1, 2, C)
        module = version_module(self.info.version)
        self.blocks = module.device_blocks(weights.blocks, dtype)
        self.run_blocks = module.run_blocks
        self.head_norm = _stacked([np.stack([weights.ln_out.weight, weights.ln_out.bias])], ti.f32)  # (1, 2, C)
        self.head_matrix = _stacked([weights.head], dtype)  # (1, V, C)
        # what this engine holds on the device, the embedding table included (spec/quant.md §5)
        self.info = dataclasses.replace(self.info, weight_bytes=self.weight_device_bytes())
        self.initial_state = initial_state
        self.workspace = Workspace()
        self.passes = PassCache()
        self.graph = graph

    def warm_up(self) -> None:
        """Compile now the kernels of every kind of pass a server runs (`pass_tile`: a decode step, a short batch or
        prompt, and on a GPU a batch of BATCH_POSITIONS and a prefill chunk of GEMM_POSITIONS), each on a scratch
        state, so its first requests do not wait for Taichi's compiler (minutes for a 1.6B model on a fresh cache;
        Taichi's offline cache keeps the kernels for later runs). The server calls it while loading
        (`start_runtime(warm_up=True)`)."""
        kinds = {1: 1, TOKEN_TILE: DECODE_POSITIONS + 1, gpu_gemm.BATCH_TILE: BATCH_POSITIONS,
                 gpu_gemm.PASS_TILE: GEMM_POSITIONS}
        for tile, n in kinds.items():
            if n <= self.token_chunk_size and pass_tile(n) == tile:
                self.forward([[0] * n], self.new_state(1))

    def weight_device_bytes(self) -> int:
        """Bytes of the device arrays holding weights: the embedding table and LN0, the layers (quantized rows, float
        matrices in the precision's dtype, f32 vectors), the output norm and the head."""
        return device_bytes((self.embedding, self.ln0, self.blocks, self.head_norm, self.head_matrix))

    def new_state(self, batch: int = 1) -> TaichiState:
        if self.initial_state is None:
            return TaichiState.from_host(zero_state(self.info, batch))
        return TaichiState.from_host(type(self.initial_state).concat([self.initial_state] * batch))

    def forward(self, tokens: Sequence[Sequence[int]], state, full_output: bool = False, inplace: bool = False):
        """Ragged batch -> (logits (B, V) float32, or a list of (T_b, V) with full_output; new state).

        `inplace=True` updates and returns the given device state instead of a copy (for owners of the state).
        """
        if not isinstance(state, TaichiState):
            state = TaichiState.from_host(state)
        elif not inplace:
            state = state.copy()
        rows = check_tokens(tokens, state.batch, self.info.n_vocab)
        done = [0] * len(rows)  # tokens of each row consumed so far
        last_logits = None  # (B, V): a decode pass's read-back itself, else filled row by row from zeros
        every_logits = [[] for _ in rows]
        for take in split_passes([len(r) for r in rows], self.token_chunk_size):
            plan = self.passes.get(take)
            ids = np.concatenate([r[d:d + n] for r, d, n in zip(rows, done, take)])
            done = [d + n for d, n in zip(done, take)]
            finishing = [b for b, n in enumerate(take) if n and done[b] == len(rows[b])]
            logits = self.run_pass(ids, state, plan, full_output)
            if full_output:
                host, bounds = read_rows(logits), np.cumsum((0,) + take)
                for b, (a, z) in enumerate(zip(bounds[:-1], bounds[1:])):
                    every_logits[b].append(host[a:z])
            elif finishing:
                host = read_rows(logits)
                if last_logits is None and len(finishing) == len(rows) == host.shape[0]:
                    last_logits = host  # every row ends in this pass: its read-back is the answer
                    continue
                if last_logits is None:
                    last_logits = np.zeros((len(rows), self.info.n_vocab), np.float32)
                last_logits[finishing] = host[finishing]
        if full_output:
            return [np.concatenate(parts) for parts in every_logits], state
        if last_logits is None:  # no row had tokens
            last_logits = np.zeros((len(rows), self.info.n_vocab), np.float32)
        return last_logits, state

    def run_pass(self, ids: Sequence[int], state, plan: Pass, full_output: bool):
        """One pass over `plan.T` positions: every kernel, from the embedding lookup to the head. Returns the logits
        buffer. Up to GRAPH_IDS token ids travel as a kernel argument; more are uploaded (kernels/embed.py)."""
        if plan.T <= GRAPH_IDS:
            inputs = ti.Vector([int(i) for i in ids] + [0] * (GRAPH_IDS - plan.T))
        else:
            inputs = self.workspace.buffer("ids", (plan.T,), ti.i32)
            inputs.from_numpy(np.asarray(ids, np.int32))
        return (self.replay_pass if self.graph else self.launch_pass)(inputs, state, plan, full_output)

    def replay_pass(self, inputs, state, plan: Pass, full_output: bool):
        """`launch_pass` recorded once per (row lengths, full_output) and replayed as a graph."""
        key = (tuple(plan.lengths_host), full_output)
        if key not in self.passes.replays:
            with recording() as calls:
                logits = self.launch_pass(inputs, state, plan, full_output)
            roles = {id(a): f"state_{name}" for name, a in state.fields.items()}  # passed anew on every run
            roles[id(inputs)] = "ids"
            self.passes.replays[key] = (pass_replay(calls, roles, outputs=(logits,)), logits)
        replay, logits = self.passes.replays[key]
        replay.run(ids=inputs, **{f"state_{name}": a for name, a in state.fields.items()})
        return logits

    def launch_pass(self, inputs, state, plan: Pass, full_output: bool):
        """Every kernel of one pass, in order: the embedding lookup (`inputs`: the ids as a vector argument or an
        array), the blocks, the head. Returns the logits."""
        x = self.workspace.buffer("x", (plan.T, self.info.n_embd))
        embed = embed_from_argument if isinstance(inputs, ti.Matrix) else embed_from_array
        embed(inputs, self.embedding, self.ln0, LN_EPS, x)
        self.run_blocks(self.blocks, self.info, x, state, plan, self.workspace, pass_tile(plan.T))
        return self.head(x, None if full_output else plan.last)

    def head(self, x, picks):
        """logits = W_head LN_out(x) for the picked positions (an i32 ndarray; None: all): (n, V) buffer."""
        ws = self.workspace
        if picks is None:
            picks = ws.buffer("all_positions", (x.shape[0],), ti.i32)
            picks.from_numpy(np.arange(x.shape[0], dtype=np.int32))
        chosen = ws.buffer("head_x", (picks.shape[0], self.info.n_embd))
        logits = ws.buffer("logits", (picks.shape[0], self.info.n_vocab))
        tile = pass_tile(picks.shape[0])
        head_kernel(tile)(x, picks, self.head_norm, self.head_matrix, chosen, logits, LN_EPS)
        return logits
