"""Every kernel launch goes through here: run it now, or record it into a `ti.graph`.

A decode step is hundreds of small launches, and each Python-side launch costs 40-100 us of host time
(anchors.md §3.4). Recording one forward pass and replaying it as a compiled graph costs ~1.4 us (x64) to
~13 us (Vulkan) per dispatch instead; in the "commands" runtime (kernels/vk) a recorded pass is one Vulkan command
buffer, recorded once, and a run costs one submit. Kernels are declared with `@kernel` (instead of `@ti.kernel`); their
arguments are ndarrays and i32/f32 scalars only (graphs take no template arguments: compile-time
switches are baked in by kernel factories).
"""
import functools
import time
from collections import defaultdict
from contextlib import contextmanager

import taichi as ti

import kernels
from kernels import arrays

_recording = None  # a list of (ti kernel, args) while recording, else None
_profile = None  # kernel name -> [launches, seconds] while profiling, else None


def kernel(fn):
    """`@ti.kernel` whose launches go through `launch`."""
    compiled = ti.kernel(fn)

    @functools.wraps(fn)
    def call(*args):
        if _recording is not None:
            _recording.append((compiled, args))
        elif _profile is not None:
            ti.sync()
            start = time.perf_counter()
            compiled(*args)
            ti.sync()
            entry = _profile[fn.__qualname__.split(".<locals>")[0] + "." + fn.__name__
                             if "<locals>" in fn.__qualname__ else fn.__name__]
            entry[0] += 1
            entry[1] += time.perf_counter() - start
        elif kernels.runtime() == "commands":
            _launch_commands(compiled, args)
        else:
            compiled(*args)

    call.compiled = compiled
    return call


@contextmanager
def recording():
    """Inside: launches are recorded, not run. Yields the list of (kernel, args)."""
    global _recording
    calls, _recording = [], []
    try:
        yield calls
    finally:
        calls.extend(_recording)
        _recording = None


@contextmanager
def profiling():
    """Inside: every launch is synchronized and timed. Yields {kernel name: [launches, seconds]}."""
    global _profile
    _profile = defaultdict(lambda: [0, 0.0])
    try:
        yield _profile
    finally:
        _profile = None


def _launch_commands(compiled, args) -> None:
    """One launch in the "commands" runtime: a pass of one call, run now."""
    replay = pass_replay([(compiled, args)], {})
    try:
        replay.run()
    finally:
        replay.close()


def pass_replay(calls: list, roles: dict[int, str], outputs: tuple = ()):
    """A recorded pass, compiled for the runtime in use: a `Replay` (ti.graph) or a `CommandReplay` (kernels/vk),
    which also copies `outputs` (arrays the host reads after a run) to host memory as its last command."""
    if kernels.runtime() == "commands":
        from kernels.vk.replay import CommandReplay
        return CommandReplay(_programs(), calls, roles, outputs)
    return Replay(calls, roles)


_shared_programs = None


def _programs():
    global _shared_programs
    if _shared_programs is None:
        from kernels.vk.replay import Programs
        _shared_programs = Programs(arrays.context())
    return _shared_programs


def kernel_name(compiled) -> str:
    return getattr(compiled, "func", compiled).__qualname__.replace(".<locals>", "")


def time_recorded(calls: list, repeats: int = 30) -> dict[str, tuple[int, float]]:
    """Device time per kernel of a recorded pass: {name: (launches in the pass, seconds per launch)}.

    Each distinct kernel's first call is replayed `repeats` times in one graph, so the figure includes the
    graph's per-dispatch cost but neither Python launch overhead nor a sync per launch.
    """
    first, counts = {}, defaultdict(int)
    for compiled, args in calls:  # one entry per kernel and argument shapes: the head is not a layer matrix
        shapes = [tuple(a.shape) for a in args if arrays.is_array(a)]
        name = f"{kernel_name(compiled)} {max(shapes, key=lambda s: (len(s), s), default=())}"
        counts[name] += 1
        first.setdefault(name, (compiled, args))
    table = {}
    for name, (compiled, args) in first.items():
        replay = pass_replay([(compiled, args)] * repeats, {})
        replay.run()
        ti.sync()
        start = time.perf_counter()
        replay.run()
        ti.sync()
        table[name] = (counts[name], (time.perf_counter() - start) / repeats)
        replay.close()
    return table


class Replay:
    """A recorded sequence of launches compiled into one graph. Ndarrays and vectors named in `roles` may be swapped
    per run."""

    def __init__(self, calls: list, roles: dict[int, str]):
        self.arguments: dict[str, object] = {}
        self.roles = roles  # id(ndarray) -> role name, for the arrays the caller passes anew on every run
        builder = ti.graph.GraphBuilder()
        for compiled, args in calls:
            builder.dispatch(compiled, *(self._symbol(a) for a in args))
        self.graph = builder.compile()

    def _symbol(self, value):
        if isinstance(value, ti.Ndarray):
            name = self.roles.get(id(value), f"nd{id(value)}")
            self.arguments.setdefault(name, value)
            return ti.graph.Arg(ti.graph.ArgKind.NDARRAY, name, value.dtype, ndim=len(value.shape))
        if isinstance(value, ti.Matrix):  # an i32 vector, passed anew on every run under its role
            name = self.roles.get(id(value), f"vec{id(value)}")
            self.arguments.setdefault(name, value)
            return ti.graph.Arg(ti.graph.ArgKind.MATRIX, name, ti.types.vector(value.n, ti.i32))
        if isinstance(value, bool) or isinstance(value, int):
            name, dtype = f"i32_{int(value)}", ti.i32
        elif isinstance(value, float):
            name, dtype = f"f32_{value!r}".replace(".", "p").replace("-", "m"), ti.f32
        else:
            raise TypeError(f"graph arguments must be ndarrays or int/float scalars, not {type(value).__name__}")
        self.arguments[name] = value
        return ti.graph.Arg(ti.graph.ArgKind.SCALAR, name, dtype)

    def run(self, **role_arrays) -> None:
        """Run the graph; `role_arrays` gives this run's array or vector for each role (the state's fields, the ids)."""
        self.arguments.update(role_arrays)
        self.graph.run(self.arguments)

    def close(self) -> None:
        """Nothing to free: the graph goes with the object."""
