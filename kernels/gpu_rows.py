"""Quantized row dot products on a GPU (LANES > 1 threads per row): kernels/lanes.py `dot_tile`'s quantized branch.

The same contract as `dot_tile`: this lane's share of W[layer, o, :n_in] · X[t0+u, x_col:x_col+n_in] for the `tile`
positions u, not yet summed over the lanes. Must match ai00ref.ref.common.linear with the QuantizedMatrix (its
`dequantize`) to spec/tolerances.md §Quantized.

The codes are in the GPU's order (spec/kernels.md §7; `quant.grouped_code_order` with groups of LANES words, applied
at upload by `quant.arch_order`): in group g, code slot e of lane l's word holds element g·S + e·LANES + l, S =
LANES·per_word elements. So for each slot the lanes read neighbouring inputs, one line per subgroup load as for dense
rows; in the natural order (slot e of word j is element per_word·j + e) each such load spread over per_word lines.

Block sizes and LANES are powers of two, so a group covers whole blocks or lies inside one: its slots fall into
`segments` runs of one block each. Each block's scale is decoded once per group (one word, the same for every
lane): Int8's is factored out of its run's sum (Σ w·x = lo·Σx + (hi − lo)/255·Σ q·x); NF4/SF4 multiply each code's
table value by its block's absmax.

NF4/SF4 codes are table entries, read in one of three ways (`lookup`). On CUDA by a warp shuffle: lane l holds
entries l, l + LANES, ... (`lane_table`), and code q is read from lane q mod LANES. On Vulkan from workgroup memory:
each thread writes the 16 entries into a column of its own (`workgroup_table`: entry q at q·TABLE_COLUMNS + column),
so it reads only what it wrote (no barrier) and a subgroup's reads fall in distinct banks (Taichi 1.7's SPIR-V code
generator has no subgroup shuffle); there lane s decodes the scale of the group's run s and the subgroup broadcasts
it (`broadcast_scales`). Where neither applies (the tiled products' staging on Vulkan), by `quant.code_value`'s tree
of 15 selects. A shuffle or broadcast needs every lane of the subgroup, so whole groups run in uniform control flow
(a row's lanes take the same groups; padding is masked on the element, never branched around). The short last group
of a row whose padded length is not a whole number of groups (G < LANES words, slot e of word l holding element
e·G + l) is read element by element.

Measured (benchmarks/quant_probe.py, H100, Vulkan, one position, µs for 2048×2048 / 7168×2048 / 2048×7168): the
select tree in a run-time loop over the slots 18.0 / 36.4 / 50.4; the workgroup table 11.0 / 19.6 / 26.5, and with the
scales broadcast 9.2 / 15.2 / 19.9, the slots unrolled or in a loop alike (fp16 rows: 8.6 / 15.0 / 18.5).
"""
import taichi as ti

import kernels
from kernels import quant

FULL_MASK = 0xFFFFFFFF
TABLE_SIZE = 16  # NF4/SF4 codes
TABLED = ("nf4", "sf4")  # schemes whose codes are table entries
TABLE_COLUMNS = 128  # a workgroup table's columns: lanes.GROUP, the threads of a lane task's workgroup


def lookup(scheme: str, staged: bool = False) -> str:
    """How the codes of `scheme` are read (module docstring): "shuffle" (CUDA), "workgroup" (Vulkan's lane rows),
    "select" (Vulkan's `staged` tiled products) or "none" (Int8). Called in ti.static."""
    if scheme not in TABLED:
        return "none"
    if kernels.current_arch() == "cuda":
        return "shuffle"
    return "select" if staged else "workgroup"


@ti.func
def lane_table(lane: ti.i32, lanes: ti.template(), scheme: ti.template()):
    """This lane's entries of the NF4/SF4 table for a "shuffle" `lookup`: entry i is table[lane + i·lanes] (entries
    past the table unused). Otherwise one unused zero."""
    entries = ti.Vector([0.0] * ti.static(-(-TABLE_SIZE // lanes) if lookup(scheme) == "shuffle" else 1))
    if ti.static(lookup(scheme) == "shuffle"):
        for i in ti.static(range(entries.n)):
            entries[i] = quant.code_value(ti.cast(ti.min(lane + i * lanes, TABLE_SIZE - 1), ti.u32), scheme)
    return entries


@ti.func
def workgroup_table(column: ti.i32, scheme: ti.template()):
    """A "workgroup" `lookup`'s table, for `table_value`: (TABLE_SIZE·TABLE_COLUMNS f32 of workgroup memory, column,
    stride), the 16 entries written into this thread's column (entry q at q·TABLE_COLUMNS + column)."""
    table = ti.simt.block.SharedArray((TABLE_SIZE * TABLE_COLUMNS,), ti.f32)
    for q in ti.static(range(TABLE_SIZE)):
        table[q * TABLE_COLUMNS + column] = quant.code_value(ti.u32(q), scheme)
    return table, column, TABLE_COLUMNS


@ti.func
def shared_table(thread: ti.i32, scheme: ti.template()):
    """A "workgroup" `lookup`'s table shared by a workgroup, for a task that passes a barrier before reading it (a
    folded task: kernels/norm_linear.py): threads 0-15 write the 16 entries, one each, into TABLE_SIZE f32 of
    workgroup memory, for `dot_tile`'s `table`. The entries lie in 16 banks: a subgroup's reads do not conflict.
    Other schemes leave it unwritten."""
    table = ti.simt.block.SharedArray((TABLE_SIZE,), ti.f32)
    if ti.static(lookup(scheme) == "workgroup"):
        if thread < TABLE_SIZE:
            table[thread] = quant.code_value(ti.cast(thread, ti.u32), scheme)
    return table, 0, 1


@ti.func
def table_value(entries: ti.template(), q: ti.u32, lanes: ti.template(), scheme: ti.template(),
                staged: ti.template()) -> ti.f32:
    """table[q] by `lookup(scheme, staged)`: "shuffle" from the lane holding it (`lane_table`; every lane of the warp
    must call this), "workgroup" from this thread's column (`workgroup_table`), else by the select tree."""
    value = 0.0
    if ti.static(lookup(scheme, staged) == "shuffle"):
        code = ti.cast(q, ti.i32)
        value = ti.simt.warp.shfl_sync_f32(ti.u32(FULL_MASK), entries[0], code % lanes)
        for i in ti.static(range(1, entries.n)):
            other = ti.simt.warp.shfl_sync_f32(ti.u32(FULL_MASK), entries[i], code % lanes)
            value = ti.select(code // lanes == i, other, value)
    elif ti.static(lookup(scheme, staged) == "workgroup"):
        value = entries[0][ti.cast(q, ti.i32) * entries[2] + entries[1]]  # (table, column, stride)
    else:
        value = quant.code_value(q, scheme)
    return value


@ti.func
def group_dot(W: ti.template(), layer: ti.i32, o: ti.i32, word: ti.u32, g: ti.i32, scale_at: ti.i32,
              X: ti.template(), x_col: ti.i32, n_in: ti.i32, t0: ti.i32, T: ti.i32, lane: ti.i32,
              lanes: ti.template(), entries: ti.template(), tile: ti.template(), scheme: ti.template(),
              padded: ti.template()):
    """Group g's share of this lane's sums (its word given). `padded`: elements past n_in count as zero inputs (their
    X columns are not read). Int8: per block run, Σ x and Σ q·x over the run's (unrolled) slots, then the block's
    scale factored out. NF4/SF4: per block run, Σ table[q]·x over the run's slots (`table_value`), then times the
    block's absmax (on Vulkan each lane decodes one scale and the subgroup broadcasts them: `broadcast_scales`); a
    scale per code cost a select chain and a multiply per code (a v6 1.6B NF4 batch-1 pass 2.715 -> 2.659 ms on the
    H100). One lookup compiled per group (run-time loops over the runs and their slots) keeps the kernel small enough
    to compile in seconds (unrolled, with the select tree, a whole-model test took minutes on lavapipe, and a model of
    the 1.6B shape did not compile in minutes on Vulkan; unrolled with the workgroup table, a v6 C2048 layer's
    batch-1 pass took 139 s to compile on lavapipe at 32 lanes against 76 s, and ran no faster:
    benchmarks/quant_probe.py "-loop")."""
    per_word = ti.static(quant.CODES_PER_WORD[scheme])
    span = ti.static(per_word * lanes)
    segments = ti.static(max(1, span // quant.BLOCK[scheme]))  # block runs in one group
    run = ti.static(per_word // segments)  # slots per run
    out = ti.Vector([0.0] * tile)
    if ti.static(scheme == "int8"):
        for s in ti.static(range(segments)):
            sums = ti.Matrix([[0.0] * tile for _ in ti.static(range(2))])  # [Σ q·x, Σ x]
            for e in ti.static(range(s * run, (s + 1) * run)):
                sums += slot_terms(word, e, g * span + e * lanes + lane, X, x_col, n_in, t0, T, lanes, entries, tile,
                                   scheme, padded)
            lo_range = quant.block_scale(W, layer, o, scale_at, (g * span + s * run * lanes) // quant.BLOCK[scheme],
                                         scheme)  # (lo, hi - lo)
            step = lo_range[1] / 255.0
            for u in ti.static(range(tile)):
                out[u] += lo_range[0] * sums[1, u] + step * sums[0, u]
    else:
        absmax = ti.Vector([0.0] * segments)
        if ti.static(lookup(scheme) == "workgroup"):
            absmax = broadcast_scales(W, layer, o, scale_at, g, lane, lanes, scheme)
        else:
            for s in ti.static(range(segments)):
                first = g * span + s * run * lanes  # the run's first element
                absmax[s] = quant.block_scale(W, layer, o, scale_at, first // quant.BLOCK[scheme], scheme)[0]
        for s in range(segments):  # run-time loops: one slot's code compiled (the docstring)
            part = ti.Vector([0.0] * tile)  # the run's Σ table[q]·x
            for i in range(run):
                e = s * run + i
                terms = slot_terms(word, e, g * span + e * lanes + lane, X, x_col, n_in, t0, T, lanes, entries, tile,
                                   scheme, padded)
                for u in ti.static(range(tile)):
                    part[u] += terms[0, u]
            scale = absmax[0]
            for j in ti.static(range(1, segments)):
                scale = ti.select(s == j, absmax[j], scale)
            for u in ti.static(range(tile)):
                out[u] += scale * part[u]
    return out


@ti.func
def broadcast_scales(W: ti.template(), layer: ti.i32, o: ti.i32, scale_at: ti.i32, g: ti.i32, lane: ti.i32,
                     lanes: ti.template(), scheme: ti.template()):
    """The NF4/SF4 absmax of each of group g's block runs (`group_dot`): lane s decodes run s's and the subgroup (a
    row's lanes) broadcasts it, so that each lane decodes one scale a group rather than one a run."""
    span = ti.static(quant.CODES_PER_WORD[scheme] * lanes)
    segments = ti.static(max(1, span // quant.BLOCK[scheme]))
    first = g * span + ti.min(lane, segments - 1) * ti.static(span // segments)  # the run's first element
    mine = quant.block_scale(W, layer, o, scale_at, first // quant.BLOCK[scheme], scheme)[0]
    scales = ti.Vector([mine] * segments)
    if ti.static(segments > 1):
        for s in ti.static(range(segments)):
            scales[s] = ti.simt.subgroup.broadcast(mine, ti.u32(s))
    return scales


@ti.func
def slot_terms(word: ti.u32, e: ti.i32, k: ti.i32, X: ti.template(), x_col: ti.i32, n_in: ti.i32, t0: ti.i32,
               T: ti.i32, lanes: ti.template(), entries: ti.template(), tile: ti.template(), scheme: ti.template(),
               padded: ti.template()):
    """Slot e of `word` (element k) against the tile's inputs: [decoded·x, x] for each position (x = 0 past n_in when
    `padded`)."""
    bits = ti.static(32 // quant.CODES_PER_WORD[scheme])
    q = (word >> (bits * e)) & ((1 << bits) - 1)
    value = 0.0
    if ti.static(scheme == "int8"):
        value = ti.cast(q, ti.f32)
    else:
        value = table_value(entries, q, lanes, scheme, False)
    terms = ti.Matrix([[0.0] * tile for _ in ti.static(range(2))])
    for u in ti.static(range(tile)):
        x = 0.0
        if ti.static(padded):
            x = ti.select(k < n_in, input_at(X, ti.min(t0 + u, T - 1), x_col + ti.min(k, n_in - 1)), 0.0)
        else:
            x = input_at(X, ti.min(t0 + u, T - 1), x_col + k)
        terms[0, u] = value * x
        terms[1, u] = x
    return terms


@ti.func
def dot_tile(W: ti.template(), layer: ti.i32, o: ti.i32, X: ti.template(), x_col: ti.i32, n_in: ti.i32,
             t0: ti.i32, T: ti.i32, lane: ti.i32, lanes: ti.template(), tile: ti.template(), scheme: ti.template(),
             table: ti.template() = None, part: ti.i32 = 0, parts: ti.template() = 1):
    """A quantized row in the GPU's code order: its whole groups (`whole_groups`), then the short last group, if
    any, element by element. NF4/SF4 read by a "workgroup" `lookup` get their table here (`workgroup_table`), or
    take `table` (`shared_table`). X may be a staged position (`input_at`). With `parts` > 1 (a row split over
    lane groups: lanes.split_row), part `part` of the row's groups, in order; the last part takes the short group."""
    acc = ti.Vector([0.0] * tile)
    per_word = ti.static(quant.CODES_PER_WORD[scheme])
    span = ti.static(per_word * lanes)
    scale_at = quant.first_scale_word(n_in, scheme)
    groups = scale_at // lanes  # whole groups (lanes words each)
    share = (groups + parts - 1) // parts
    begin, end = ti.min(part * share, groups), ti.min((part + 1) * share, groups)
    if ti.static(lookup(scheme) == "workgroup" and given(table)):
        acc = whole_groups(W, layer, o, X, x_col, n_in, t0, T, lane, lanes, tile, scheme, table, begin, end)
    elif ti.static(lookup(scheme) == "workgroup"):
        column = table_column(o * parts + part, t0, T, lane, lanes, tile)
        acc = whole_groups(W, layer, o, X, x_col, n_in, t0, T, lane, lanes, tile, scheme,
                           workgroup_table(column, scheme), begin, end)
    else:
        acc = whole_groups(W, layer, o, X, x_col, n_in, t0, T, lane, lanes, tile, scheme,
                           lane_table(lane, lanes, scheme), begin, end)
    short = scale_at - groups * lanes  # words of the short last group
    if part == parts - 1 and lane < short:
        word = W[layer, o, groups * lanes + lane]
        for e in range(per_word):
            k = groups * span + e * short + lane
            if k < n_in:
                w = quant.code_weight(word, e, quant.word_scale(W, layer, o, k // per_word, scale_at, scheme), scheme)
                for u in ti.static(range(tile)):
                    acc[u] += w * input_at(X, ti.min(t0 + u, T - 1), x_col + k)
    return acc


def given(value) -> bool:
    """For `ti.static` (Taichi scope has no `is not`): whether an optional template argument was passed."""
    return value is not None


def staged(X) -> bool:
    """Whether X is one staged position's columns (workgroup memory) rather than a (T, ·) array. Called in
    ti.static."""
    return isinstance(X, ti.simt.block.SharedArray)


@ti.func
def input_at(X: ti.template(), t: ti.i32, k: ti.i32) -> ti.f32:
    """Input k of position t: X[t, k], or X[k] for a `staged` position."""
    value = 0.0
    if ti.static(staged(X)):
        value = X[k]
    else:
        value = X[t, k]
    return value


@ti.func
def table_column(o: ti.i32, t0: ti.i32, T: ti.i32, lane: ti.i32, lanes: ti.template(), tile: ti.template()):
    """This thread's column of a workgroup table: its lane in the column block of its lane group's item (row o,
    the tile at t0) among the TABLE_COLUMNS / lanes of a workgroup. The lane tasks give a workgroup's lane groups
    consecutive items (lanes.row_tile_item), so their blocks differ; a task that did not would only have lane groups
    write the same values into one block."""
    item = o * ((T + tile - 1) // tile) + t0 // tile
    return item % ti.static(TABLE_COLUMNS // lanes) * lanes + lane


@ti.func
def whole_groups(W: ti.template(), layer: ti.i32, o: ti.i32, X: ti.template(), x_col: ti.i32, n_in: ti.i32,
                 t0: ti.i32, T: ti.i32, lane: ti.i32, lanes: ti.template(), tile: ti.template(), scheme: ti.template(),
                 entries: ti.template(), begin: ti.i32, end: ti.i32):
    """`dot_tile`'s whole groups from `begin` to `end`: those without padding `unroll` at a time, then the rest with
    the padding masked."""
    acc = ti.Vector([0.0] * tile)
    span = ti.static(quant.CODES_PER_WORD[scheme] * lanes)
    unroll = ti.static(4 if tile == 1 else 1)  # words in flight per lane
    scale_at = quant.first_scale_word(n_in, scheme)
    clean = ti.max(ti.min(n_in // span, end) - begin, 0)  # groups from `begin` without a padding element
    for step in range(clean // unroll):
        words = ti.Vector([ti.u32(0)] * unroll)
        for q in ti.static(range(unroll)):
            words[q] = W[layer, o, (begin + step * unroll + q) * lanes + lane]
        for q in ti.static(range(unroll)):
            acc += group_dot(W, layer, o, words[q], begin + step * unroll + q, scale_at, X, x_col, n_in, t0, T, lane,
                             lanes, entries, tile, scheme, False)
    for g in range(begin + clean // unroll * unroll, end):
        acc += group_dot(W, layer, o, W[layer, o, g * lanes + lane], g, scale_at, X, x_col, n_in, t0, T, lane,
                         lanes, entries, tile, scheme, True)
    return acc


@ti.func
def element_words(W: ti.template(), layer: ti.i32, o: ti.i32, k: ti.i32, n_in: ti.i32, lanes: ti.template(),
                  scheme: ti.template()) -> ti.math.uvec2:
    """The two words element k of row o needs, shifted so that its code and its block's scale are their low bits
    (`element_value` decodes them). In the GPU's code order, k lies in a whole group g (S = lanes·per_word elements)
    at slot (k mod S) // lanes of word g·lanes + k mod lanes; in the short last group of G words, at slot k' // G of
    word groups·lanes + k' mod G (k' = k - groups·S)."""
    per_word = ti.static(quant.CODES_PER_WORD[scheme])
    span = ti.static(per_word * lanes)
    scale_at = quant.first_scale_word(n_in, scheme)
    groups = scale_at // lanes  # whole groups
    short = ti.max(scale_at - groups * lanes, 1)  # words of the short last group (1 when there is none)
    g = ti.min(k // span, groups)
    inner = k - g * span
    in_short = g == groups
    word = g * lanes + ti.select(in_short, inner % short, inner % lanes)
    slot = ti.select(in_short, inner // short, inner // lanes)
    b = k // ti.static(quant.BLOCK[scheme])
    half = ti.static(0 if scheme == "int8" else 16)  # NF4/SF4: two blocks' scales a word, the odd one high
    return ti.math.uvec2(W[layer, o, word] >> (ti.static(32 // per_word) * slot),
                         W[layer, o, scale_at + quant.scale_word(b, scheme)] >> (half * (b % 2)))


@ti.func
def element_value(words: ti.math.uvec2, entries: ti.template(), lanes: ti.template(),
                  scheme: ti.template()) -> ti.f32:
    """An element dequantized from its `element_words` (code and scale in their low bits: slot 0 of an even block),
    as quant.code_weight (NF4/SF4 on CUDA: the table by shuffle, `table_value`, so every lane of the warp calls
    this)."""
    scale = quant.decode_scale(words[1], 0, scheme)
    w = 0.0
    if ti.static(scheme == "int8"):
        w = quant.code_weight(words[0], 0, scale, scheme)
    else:
        w = table_value(entries, words[0] & 0xF, lanes, scheme, True) * scale[0]
    return w
