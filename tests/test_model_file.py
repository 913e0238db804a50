import hashlib
import json
import os
import struct
import warnings

import numpy as np
import pytest

from stemroi.io import file_sha256, load_model_file, save_model_file


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
    assert meta["format"] == "stemroi-model" and meta["format_version"] == "2"
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


def test_stored_hashes_follow_the_documented_definition(tmp_path, rng):
    """An independent hashlib computation of both fields equals what the core stores."""
    path = tmp_path / "m.stemroi"
    save_model_file(path, _tensors(rng), {"architecture": "toy", "note": "Å µm ✓", "config": {"a": [1, 2.5]}})
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = header["__metadata__"]
    stored = {k: meta.pop(k) for k in ("tensor_sha256", "header_sha256")}
    canonical = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert stored["header_sha256"] == hashlib.sha256(canonical).hexdigest()
    assert stored["tensor_sha256"] == hashlib.sha256(raw[8 + n :]).hexdigest()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, got = load_model_file(path)
    assert got["tensor_sha256"] == stored["tensor_sha256"] and got["header_sha256"] == stored["header_sha256"]
    assert got["note"] == "Å µm ✓"


def test_every_single_byte_change_is_detected(tmp_path, rng):
    """Each byte of a small file, XOR 0x01 and 0xFF: the load fails with OSError;
    a changed data byte is reported as a tensor-data hash mismatch naming the file."""
    src = tmp_path / "m.stemroi"
    save_model_file(src, {"w": rng.standard_normal((3, 5)).astype(np.float32), "steps": np.array([9], np.int64)},
                    {"architecture": "toy", "config": {"k": 3}})
    raw = src.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    bad = tmp_path / "flipped.stemroi"
    counts = {"tensor data SHA-256 mismatch": 0, "header SHA-256 mismatch": 0}
    for i in range(len(raw)):
        for mask in (0x01, 0xFF):
            b = bytearray(raw)
            b[i] ^= mask
            bad.write_bytes(bytes(b))
            with pytest.raises(OSError) as info:
                load_model_file(bad)
            msg = str(info.value)
            for k in counts:
                counts[k] += k in msg
            if i >= 8 + n:
                assert f"model file '{bad}': tensor data SHA-256 mismatch (file corrupted or modified)" in msg
    assert counts["tensor data SHA-256 mismatch"] >= 2 * (len(raw) - 8 - n)
    assert counts["header SHA-256 mismatch"] > 50  # metadata values, dtypes, shapes, offsets


def test_sampled_byte_changes_in_a_larger_file_are_detected(tmp_path, rng):
    src = tmp_path / "big.stemroi"
    save_model_file(src, {"w": rng.standard_normal((64, 64, 3, 3)).astype(np.float32)}, {"architecture": "toy"})
    raw = src.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    bad = tmp_path / "flipped.stemroi"
    for i in rng.choice(np.arange(8 + n, len(raw)), 300, replace=False):
        b = bytearray(raw)
        b[i] ^= 1 << int(rng.integers(8))
        bad.write_bytes(bytes(b))
        with pytest.raises(OSError, match="tensor data SHA-256 mismatch"):
            load_model_file(bad)


def test_pinned_hash(tmp_path, rng):
    path = tmp_path / "m.stemroi"
    save_model_file(path, _tensors(rng), {"architecture": "toy"})
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    assert file_sha256(path) == actual
    got, _ = load_model_file(path, sha256=actual.upper())
    assert set(got) == set(_tensors(rng))
    wrong = "0" * 64
    with pytest.raises(OSError, match=f"SHA-256 {actual} does not match the pinned SHA-256 {wrong}"):
        load_model_file(path, sha256=wrong)
    with pytest.raises(ValueError, match="sha256 must be 64 hexadecimal digits, got 'abc'"):
        load_model_file(path, sha256="abc")
    with pytest.raises(TypeError, match="sha256 must be a hex string or None, got bytes"):
        load_model_file(path, sha256=b"0" * 64)


def test_version_one_file_loads_with_warning(tmp_path):
    path = tmp_path / "old.stemroi"
    _write_raw(path, {"__metadata__": {"format": "stemroi-model", "format_version": "1", "architecture": "toy"},
                      "w": {"dtype": "U8", "shape": [3], "data_offsets": [0, 3]}}, b"\x01\x02\x03")
    with pytest.warns(UserWarning, match=f"model file {path} carries no hash"):
        got, meta = load_model_file(path)
    np.testing.assert_array_equal(got["w"], [1, 2, 3])
    assert meta["format_version"] == "1"
    # Saving it again adds the hashes: no warning on the next load.
    save_model_file(path, got, {k: v for k, v in meta.items() if k not in ("format", "format_version")})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_model_file(path)


def test_version_two_without_hashes_or_with_one_is_refused(tmp_path):
    path = tmp_path / "v2.stemroi"
    tensor = {"w": {"dtype": "U8", "shape": [3], "data_offsets": [0, 3]}}
    _write_raw(path, {"__metadata__": {"format": "stemroi-model", "format_version": "2"}, **tensor}, b"abc")
    with pytest.raises(OSError, match="format_version 2 requires 'tensor_sha256' and 'header_sha256'"):
        load_model_file(path)
    meta = {"format": "stemroi-model", "format_version": "1", "tensor_sha256": hashlib.sha256(b"abc").hexdigest()}
    _write_raw(path, {"__metadata__": meta, **tensor}, b"abc")
    with pytest.raises(OSError, match="has 'tensor_sha256' but not 'header_sha256'"):
        load_model_file(path)


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
        ({"__metadata__": GOOD_META, "w": {"dtype": "U8", "shape": [1.1e55], "data_offsets": [0, 1]}}, b"\0",
         "shape a list of integers"),
        ({"__metadata__": GOOD_META, "w": {"dtype": "U8", "shape": [2.5], "data_offsets": [0, 2]}}, b"\0" * 2,
         "shape a list of integers"),
        ({"__metadata__": GOOD_META, "w": {"dtype": "U8", "shape": [2**64 - 1], "data_offsets": [0, 1]}}, b"\0",
         "shape a list of integers"),
        ({"__metadata__": GOOD_META, "w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1e3]}}, b"\0",
         "data_offsets must be two non-negative integers"),
        ({"__metadata__": GOOD_META, "w": {"dtype": "U8", "shape": [1], "data_offsets": [-1, 0]}}, b"\0",
         "data_offsets must be two non-negative integers"),
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
    with pytest.raises(OSError, match=f"cannot read model file '{tmp_path}': it is a directory"):
        load_model_file(tmp_path)


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


def _small_classifier():
    from stemroi import PatchClassifier

    rng = np.random.default_rng(0)
    X = rng.random((8, 32, 32), dtype=np.float32)
    return PatchClassifier(backbone="small_cnn", mode="finetune", weights=None, max_epochs=1, batch_size=8,
                           random_state=0, n_threads=1).fit(X, np.arange(8) % 2, class_names=["Bulk", "Defect"])


def _small_cvae():
    from stemroi import BulkCVAE

    img = np.random.default_rng(0).random((64, 64), dtype=np.float32)
    return BulkCVAE(latent_dim=2, epochs=1, batch_size=8, crop_size=16, n_crops=32, calibration_fraction=0.25,
                    detector="energy", random_state=0, n_threads=1).fit(img)


def _small_segmenter():
    from stemroi import DefectSegmenter

    rng = np.random.default_rng(0)
    X = rng.random((6, 32, 32), dtype=np.float32)
    return DefectSegmenter(epochs=1, samples_per_epoch=8, batch_size=4, random_state=0, n_threads=1,
                           base_channels=4, pseudo_label="lattice", max_parts=1).fit(X, np.array(["Bulk", "Vacancy"] * 3))


@pytest.mark.parametrize("build", [_small_classifier, _small_cvae, _small_segmenter],
                         ids=["PatchClassifier", "BulkCVAE", "DefectSegmenter"])
def test_estimator_load_verifies_and_pins(tmp_path, build):
    """Every estimator's load goes through a verifying reader (BulkCVAE's through the
    core's own) and takes a pinned hash."""
    est = build()
    path = tmp_path / "m.stemroi"
    est.save(path)
    cls = type(est)
    actual = file_sha256(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert type(cls.load(path, sha256=actual)) is cls
    with pytest.raises(OSError, match=f"SHA-256 {actual} does not match the pinned SHA-256 {'f' * 64}"):
        cls.load(path, sha256="f" * 64)
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0x10  # a byte of the last tensor
    path.write_bytes(bytes(raw))
    with pytest.raises(OSError, match="tensor data SHA-256 mismatch"):
        cls.load(path)
