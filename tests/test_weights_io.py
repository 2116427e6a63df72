"""Model-file I/O: safetensors, torch .pth (fixtures made by real torch), read_model_tensors errors.

Runs without torch. tests/oracle/check_pth_roundtrip.py does the same checks against live torch.
"""
from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
from hypothesis import given, strategies as st

from ai00ref.errors import ModelFileError
from ai00ref.weights.files import read_model_tensors
from ai00ref.weights.pth import float32_to_bf16_bits, open_pth, read_pth, write_pth
from ai00ref.weights.safetensors_io import (bf16_bits_to_float32, read_safetensors, read_safetensors_metadata,
                                            write_safetensors)

DATA = Path(__file__).parent / "data"


def sample_tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "blocks.0.att.key.weight": rng.standard_normal((4, 3)).astype(np.float16),
        "emb.weight": rng.standard_normal((5, 3)).astype(np.float32),
        "transposed": np.arange(12.0).reshape(3, 4).T,  # float64, not contiguous
        "scalar": np.array(2.5, np.float32), "empty": np.zeros((0, 4), np.float32),
        "ids": np.arange(-2, 3, dtype=np.int64), "bytes": np.arange(7, dtype=np.uint8), "mask": np.array([True, False]),
    }


def assert_same(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# ---- safetensors ----

def test_safetensors_round_trip_and_library_agreement(tmp_path):
    tensors, path = sample_tensors(), tmp_path / "m.st"
    write_safetensors(path, tensors, {"format": "pt"})
    ours, library = read_safetensors(path), safetensors.numpy.load_file(path)
    for name, value in tensors.items():
        assert_same(ours[name], np.ascontiguousarray(value) if value.ndim else value)
        assert_same(library[name], ours[name])
    assert read_safetensors_metadata(path) == {"format": "pt"}
    contiguous = {k: v.copy(order="C") for k, v in tensors.items()}
    assert path.read_bytes() == safetensors.numpy.save(contiguous, metadata={"format": "pt"})


def test_reads_library_files_and_tensors_are_writable_private_copies(tmp_path):
    path = tmp_path / "lib.st"
    safetensors.numpy.save_file({"a": np.arange(6, dtype=np.float32).reshape(2, 3)}, path)
    a = read_safetensors(path)["a"]
    a[0, 0] = 99.0  # copy-on-write map: allowed, and the file is unchanged
    assert read_safetensors(path)["a"][0, 0] == 0.0
    assert read_safetensors_metadata(path) == {}


def bf16_file(path: Path, bits: np.ndarray) -> None:
    header = json.dumps({"x": {"dtype": "BF16", "shape": [bits.size], "data_offsets": [0, bits.nbytes]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + bits.astype("<u2").tobytes())


def test_bf16_is_upcast_exactly(tmp_path):
    bits = np.array([0x3F80, 0xC049, 0x7F80, 0x0001, 0x8000, 0x7F7F], np.uint16)
    bf16_file(tmp_path / "b.st", bits)
    x = read_safetensors(tmp_path / "b.st")["x"]
    assert x.dtype == np.float32
    assert np.array_equal(x.view(np.uint32) >> 16, bits) and np.all(x.view(np.uint32) & 0xFFFF == 0)


@given(st.integers(0, 0xFFFF))
def test_bf16_bits_survive_upcast_and_rounding(bits):
    value = bf16_bits_to_float32(np.array([bits], np.uint16))
    if not np.isnan(value[0]):
        assert float32_to_bf16_bits(value)[0] == bits


@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_bf16_rounding_is_nearest_even(x):
    """The bf16 result is the truncation or the next value away from zero, whichever is nearer; ties to even."""
    x32 = np.array([x], np.float32)
    truncated = int(x32.view(np.uint32)[0] >> 16)
    got = int(float32_to_bf16_bits(x32)[0])
    assert got in (truncated, truncated + 1)
    lo, hi = (float(bf16_bits_to_float32(np.array([b], np.uint16))[0]) for b in (truncated, truncated + 1))
    hi = np.copysign(2.0**128, hi) if np.isinf(hi) else hi  # IEEE rounds to inf as if inf were 2**128
    err_lo, err_hi = abs(float(x) - lo), abs(float(x) - hi)  # exact in float64
    if err_lo != err_hi:
        assert got == (truncated if err_lo < err_hi else truncated + 1)
    else:
        assert got % 2 == 0


def corrupt_st_files(tmp_path: Path) -> dict[str, Path]:
    """name -> a broken safetensors file."""
    good = tmp_path / "good.st"
    write_safetensors(good, {"a": np.ones((4, 4), np.float16)}, {"format": "pt"})
    raw = good.read_bytes()
    header_len = struct.unpack("<Q", raw[:8])[0]

    def make(name: str, content: bytes) -> Path:
        (tmp_path / name).write_bytes(content)
        return tmp_path / name

    def header(entries: dict, data: bytes = b"") -> bytes:
        h = json.dumps(entries).encode()
        return struct.pack("<Q", len(h)) + h + data

    cases = {f"truncated_at_{n}": make(f"trunc{n}.st", raw[:n]) for n in (3, 8, 20, 8 + header_len, len(raw) - 1)}
    cases.update({
        "garbage": make("garbage.st", b"this is a text file, not a model\n" * 3),
        "bad_json": make("badjson.st", struct.pack("<Q", 5) + b"{nope"),
        "not_an_object": make("list.st", header([1, 2])),  # type: ignore[arg-type]
        "unknown_dtype": make("f8.st", header({"a": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}}, b"xx")),
        "offsets_past_end": make("past.st", header({"a": {"dtype": "F16", "shape": [4], "data_offsets": [0, 8]}}, b"1234")),
        "wrong_size": make("size.st", header({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"1234")),
        "negative_shape": make("neg.st", header({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}})),
        "missing_fields": make("fields.st", header({"a": {"dtype": "F32"}})),
        "trailing_bytes": make("tail.st", raw + b"\0" * 8),
        "bad_metadata": make("meta.st", header({"__metadata__": {"n": 1}})),
    })
    return cases


def test_every_broken_safetensors_file_is_one_model_file_error(tmp_path):
    for case, path in corrupt_st_files(tmp_path).items():
        for reader in (read_safetensors, read_model_tensors):
            with pytest.raises(ModelFileError) as e:
                reader(path)
            message = str(e.value)
            assert message.startswith(f"{path}: ") and "\n" not in message, (case, message)


def test_missing_directory_empty_files(tmp_path):
    (tmp_path / "empty.st").write_bytes(b"")
    expected = {tmp_path / "nope.st": "no such file", tmp_path: "is a directory",
                tmp_path / "empty.st": r"empty \(0 bytes\)"}
    for path, problem in expected.items():
        for reader in (read_safetensors, read_pth, read_model_tensors):
            with pytest.raises(ModelFileError, match=problem) as e:
                reader(path)
            assert str(e.value).startswith(str(path))


# ---- .pth made by real torch (tests/data/make_pth_fixtures.py) ----

@pytest.mark.parametrize("stem", ["torch_fp32", "torch_fp16", "torch_bf16", "torch_wrapped"])
def test_reads_torch_fixtures_exactly(stem):
    expected = np.load(DATA / "expected.npz")
    ours = read_pth(DATA / f"{stem}.pth")
    names = [k.split("/", 1)[1] for k in expected.files if k.startswith(stem + "/")]
    assert sorted(ours) == sorted(names)
    for name in names:
        assert_same(ours[name], expected[f"{stem}/{name}"])


def test_legacy_torch_format_is_refused_with_advice():
    for reader in (read_pth, read_model_tensors):
        with pytest.raises(ModelFileError, match=r"legacy .*re-save it with torch>=1.6"):
            reader(DATA / "torch_legacy.pth")


@pytest.mark.parametrize("dtype, expected_dtype", [("fp32", np.float32), ("fp16", np.float16), ("bf16", np.float32)])
def test_write_pth_round_trip(tmp_path, dtype, expected_dtype):
    tensors = sample_tensors()
    write_pth(tmp_path / "m.pth", tensors, dtype)
    back = read_pth(tmp_path / "m.pth")
    assert list(back) == list(tensors)
    for name, value in tensors.items():
        if value.dtype.kind != "f":
            assert_same(back[name], value)
            continue
        want = value.astype(np.float32)
        want = bf16_bits_to_float32(float32_to_bf16_bits(want)) if dtype == "bf16" else want.astype(expected_dtype)
        assert_same(back[name], want.reshape(value.shape))


def test_write_pth_aligns_storages_like_torch(tmp_path):
    write_pth(tmp_path / "m.pth", {"a": np.ones(3, np.float32), "b": np.ones(5, np.float16)})
    with zipfile.ZipFile(tmp_path / "m.pth") as zf:
        for info in zf.infolist():
            if "/data/" in info.filename:
                name_len, extra_len = struct.unpack("<HH", (tmp_path / "m.pth").read_bytes()[info.header_offset + 26:][:4])
                assert (info.header_offset + 30 + name_len + extra_len) % 64 == 0


def zip_with_pickle(path: Path, pickled: bytes, storages: dict[str, bytes] = {}) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickled)
        for key, data in storages.items():
            zf.writestr(f"archive/data/{key}", data)
    return path


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    evil = b"\x80\x02cos\nsystem\nX" + struct.pack("<I", len(f"touch {marker}")) + f"touch {marker}".encode() + b"\x85R."
    path = zip_with_pickle(tmp_path / "evil.pth", evil)
    for reader in (read_pth, read_model_tensors):
        with pytest.raises(ModelFileError, match=r"refuses to load: the pickle asks for os\.system, which is not tensor data"):
            reader(path)
    assert not marker.exists()


def test_stand_ins_cannot_be_rewritten_by_build(tmp_path):
    # BUILD on the FloatStorage stand-in would change its dtype for every later load.
    attack = b"\x80\x02ctorch\nFloatStorage\n}X\x04\x00\x00\x00nameX\x07\x00\x00\x00float16sb."
    with pytest.raises(ModelFileError, match="bad data.pkl"):
        read_pth(zip_with_pickle(tmp_path / "build.pth", attack))
    assert read_pth(DATA / "torch_fp32.pth")["full"].dtype == np.float32


def test_bad_pth_contents(tmp_path):
    good = tmp_path / "good.pth"
    write_pth(good, {"a": np.arange(4, dtype=np.float32)})
    with zipfile.ZipFile(good) as zf:
        pkl = zf.read("archive/data.pkl")
    raw = good.read_bytes()
    cases = {
        "truncated": (tmp_path / "t1.pth", raw[: len(raw) // 2]),
        "truncated_end": (tmp_path / "t2.pth", raw[:-10]),
        "missing_storage": (zip_with_pickle(tmp_path / "nostore.pth", pkl), None),
        "storage_too_small": (zip_with_pickle(tmp_path / "small.pth", pkl, {"0": b"\0" * 8}), None),
        "not_a_dict": (zip_with_pickle(tmp_path / "list.pth", b"\x80\x02]."), None),
        "not_tensors": (zip_with_pickle(tmp_path / "ints.pth", b"\x80\x02}X\x01\x00\x00\x00aK\x01s."), None),
        "garbage_pickle": (zip_with_pickle(tmp_path / "junk.pth", b"\x80\x02\xff\xfe"), None),
        "no_data_pkl": (tmp_path / "nopkl.pth", None),
    }
    with zipfile.ZipFile(tmp_path / "nopkl.pth", "w") as zf:
        zf.writestr("x/y.txt", "hello")
    for case, (path, content) in cases.items():
        if content is not None:
            path.write_bytes(content)
        for reader in (read_pth, read_model_tensors):
            with pytest.raises(ModelFileError) as e:
                reader(path)
            assert str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value), (case, str(e.value))


def test_open_pth_is_lazy_and_shares_storages():
    tensors = open_pth(DATA / "torch_fp32.pth")
    assert tensors["full"].storage is tensors["transposed"].storage
    assert tensors["transposed"].shape == (4, 3) and tensors["transposed"].stride == (1, 4)


# ---- read_model_tensors ----

def test_read_model_tensors_gives_st_form_for_pth(tmp_path):
    pth = {"blocks.0.att.time_maa_w1": np.ones((8, 10), np.float32), "blocks.0.att.time_faaaa": np.ones((2, 4), np.float32)}
    write_pth(tmp_path / "m.pth", pth, "bf16")
    tensors = read_model_tensors(tmp_path / "m.pth")
    assert tensors["blocks.0.att.time_mix_w1"].shape == (10, 8)
    assert tensors["blocks.0.att.time_first"].dtype == np.float32


def test_read_model_tensors_keeps_st_dtypes_and_refuses_integers(tmp_path):
    write_safetensors(tmp_path / "m.st", {"a": np.ones(2, np.float16), "b": np.ones(2, np.float32)})
    assert {k: v.dtype for k, v in read_model_tensors(tmp_path / "m.st").items()} == {"a": np.float16, "b": np.float32}
    write_safetensors(tmp_path / "i.st", {"a": np.ones(2, np.int32)})
    with pytest.raises(ModelFileError, match="unsupported dtype int32"):
        read_model_tensors(tmp_path / "i.st")


def test_safetensors_header_starting_with_0x80_is_not_taken_for_a_pickle(tmp_path):
    first_bytes = set()
    for name_len in range(1, 80):
        write_safetensors(tmp_path / "h.st", {"n" * name_len: np.ones(1, np.float16)})
        first_bytes.add((tmp_path / "h.st").read_bytes()[0])
        assert "n" * name_len in read_model_tensors(tmp_path / "h.st")
    assert 0x80 in first_bytes
