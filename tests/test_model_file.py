import json
import os
import struct

import numpy as np
import pytest

from stemroi import load_model_file, save_model_file


def _tensors(rng):
    return {
        "conv.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "conv.bias": rng.standard_normal(4),
        "steps": np.array([7], dtype=np.int64),
        "mask": np.array([True, False]),
        "empty": np.zeros((0, 3), np.float32),
        "scalar": np.array(5, dtype=np.int64),  # e.g. BatchNorm's num_batches_tracked
    }


def test_round_trip_is_exact(tmp_path, rng):
    t = _tensors(rng)
    path = tmp_path / "m.stemroi"
    save_model_file(path, t, {"architecture": "toy", "model_card": {"data": "none", "acc": 0.5}})
    got, meta = load_model_file(path)
    assert set(got) == set(t)
    for k in t:
        assert got[k].dtype == t[k].dtype and got[k].shape == t[k].shape
        np.testing.assert_array_equal(got[k], t[k])
    assert meta["format"] == "stemroi-model" and meta["format_version"] == "1"
    assert meta["model_card"] == {"data": "none", "acc": 0.5}
    assert meta["architecture"] == "toy"
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]  # atomic: no leftovers


def test_layout_is_safetensors(tmp_path, rng):
    path = tmp_path / "m.stemroi"
    save_model_file(path, {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, {})
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    assert header["w"] == {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}
    np.testing.assert_array_equal(np.frombuffer(raw[8 + n :], np.float32), np.arange(6))


def _write_raw(path, header: dict, data: bytes = b""):
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + data)


GOOD_META = {"format": "stemroi-model", "format_version": "1"}


@pytest.mark.parametrize(
    "header,data,message",
    [
        ({"__metadata__": GOOD_META, "w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}}, b"\0" * 10,
         "truncated"),
        ({"__metadata__": GOOD_META, "w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}}, b"\0" * 24,
         "needs 24 bytes"),
        ({"__metadata__": GOOD_META, "w": {"dtype": "Q99", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4,
         "unknown tensor dtype"),
        ({"__metadata__": {"format": "other"}}, b"", "expected 'stemroi-model'"),
        ({"__metadata__": {"format": "stemroi-model", "format_version": "99"}}, b"", "not supported"),
        ({"__metadata__": GOOD_META, "a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
          "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]}}, b"\0" * 6, "overlap"),
    ],
)
def test_corrupt_files_raise_oserror_naming_problem(tmp_path, header, data, message):
    path = tmp_path / "bad.stemroi"
    _write_raw(path, header, data)
    with pytest.raises(OSError, match=message):
        load_model_file(path)


def test_garbage_and_short_files(tmp_path):
    p = tmp_path / "short"
    p.write_bytes(b"abc")
    with pytest.raises(OSError, match="shorter than the 8-byte"):
        load_model_file(p)
    p.write_bytes(struct.pack("<Q", 10**15) + b"{}")
    with pytest.raises(OSError, match="exceeds"):
        load_model_file(p)
    p.write_bytes(struct.pack("<Q", 5) + b"{oops")
    with pytest.raises(OSError, match="not valid JSON"):
        load_model_file(p)
    with pytest.raises(OSError, match="cannot open"):
        load_model_file(tmp_path / "missing.stemroi")


def test_pickle_file_is_refused_not_executed(tmp_path):
    import pickle

    marker = tmp_path / "executed"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    p = tmp_path / "evil.pt"
    p.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(OSError):
        load_model_file(p)
    assert not marker.exists()


def test_failed_write_keeps_previous_file(tmp_path):
    path = tmp_path / "m.stemroi"
    save_model_file(path, {"w": np.ones(3, np.float32)}, {})
    before = path.read_bytes()
    with pytest.raises(TypeError):
        save_model_file(path, {"w": np.array(["a"])}, {})
    assert path.read_bytes() == before
