"""Large frames stay memory-mapped: read_image returns a large float32 NPY frame
as a read-only map (no copy), and the whole-frame passes (finiteness, min/max
of to_unit_range) run in row strips with the same results and messages."""
from __future__ import annotations

import numpy as np
import pytest

from stemroi.detection import to_unit_range
from stemroi.io import read_image
from stemroi.preprocessing.grid import _finite_range, _read_only_map


def _save(tmp_path, arr, name="f.npy"):
    path = tmp_path / name
    np.save(path, arr)
    return path


def test_large_float32_npy_is_returned_mapped_not_copied(tmp_path, monkeypatch):
    img = np.random.default_rng(0).random((300, 200), dtype=np.float32)
    path = _save(tmp_path, img)
    monkeypatch.setenv("STEMROI_MMAP_MIN_MB", str(img.nbytes / 2**20 * 0.99))
    mapped = read_image(path)
    assert _read_only_map(mapped) is not None and not mapped.flags.writeable
    assert mapped.dtype == np.float32 and mapped.flags.c_contiguous
    np.testing.assert_array_equal(mapped, img)
    monkeypatch.setenv("STEMROI_MMAP_MIN_MB", str(img.nbytes / 2**20 * 1.01))
    copy = read_image(path)  # below the threshold: the usual fresh writable copy
    assert _read_only_map(copy) is None and copy.flags.writeable
    np.testing.assert_array_equal(copy, img)


def test_mapped_frames_of_other_dtypes_are_copied(tmp_path, monkeypatch):
    monkeypatch.setenv("STEMROI_MMAP_MIN_MB", "0")
    img = (np.arange(120 * 90) % 65535).astype(np.uint16).reshape(120, 90)
    out = read_image(_save(tmp_path, img))
    assert out.dtype == np.float32 and out.flags.writeable and _read_only_map(out) is None
    np.testing.assert_array_equal(out, img.astype(np.float32))


def test_mapped_frame_with_nan_is_refused_with_counts(tmp_path, monkeypatch):
    monkeypatch.setenv("STEMROI_MMAP_MIN_MB", "0")
    img = np.full((200, 64), 0.5, np.float32)
    img[150, 3] = np.nan
    img[7, 9] = np.inf
    img[199, 63] = -np.inf
    with pytest.raises(ValueError, match=r"1 NaN and 2 infinite pixel\(s\) of 12800; clean the image"):
        read_image(_save(tmp_path, img))


def test_finite_range_in_strips_matches_numpy_and_names_the_first_bad_pixel(tmp_path):
    rng = np.random.default_rng(1)
    img = (rng.standard_normal((700, 33)) * 40).astype(np.float32)
    mapped = np.load(_save(tmp_path, img), mmap_mode="r")
    assert _finite_range(mapped) == (float(img.min()), float(img.max()))
    img[612, 5] = np.nan
    img[650, 1] = np.inf
    with pytest.raises(ValueError, match=r"image: contains NaN or infinity \(first at index \(612, 5\), value nan\)"):
        _finite_range(np.load(_save(tmp_path, img, "bad.npy"), mmap_mode="r"))
    ints = np.arange(10 * 10, dtype=np.int16).reshape(10, 10) - 7
    assert _finite_range(ints) == (-7.0, 92.0)


@pytest.mark.parametrize("scale,lo,hi", [("auto", 0.0, 200.0), ("minmax", -3.0, 5.0), ("auto", 0.0, 1.0)])
def test_to_unit_range_of_a_memory_map_equals_in_memory(tmp_path, scale, lo, hi):
    rng = np.random.default_rng(2)
    img = (lo + (hi - lo) * rng.random((257, 130))).astype(np.float32)
    mapped = np.load(_save(tmp_path, img), mmap_mode="r")
    out = to_unit_range(mapped, scale)
    np.testing.assert_array_equal(out, to_unit_range(img.copy(), scale))
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    if (lo, hi) == (0.0, 1.0):  # already on [0, 1]: the map itself, not a copy
        assert _read_only_map(out) is not None


def _mapped_rss_mb(path) -> float:
    """Resident MB of the mappings of ``path`` in this process (/proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5:  # a mapping's header line
                inside = line.rstrip().endswith(str(path))
            elif inside and line.startswith("Rss:"):
                total += int(head[1])
    return total / 1024


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/smaps"), reason="needs /proc/self/smaps (Linux)")
def test_strip_passes_leave_the_mapped_frame_mostly_unresident(tmp_path):
    """A finiteness/min-max pass over a 24 MB mapped frame releases every 16 MB strip it has read;
    reading it without releasing pages leaves all 24 MB resident."""
    img = np.random.default_rng(3).random((1536, 4096), dtype=np.float32)
    path = _save(tmp_path, img)
    del img
    mapped = np.load(path, mmap_mode="r")
    view = np.ascontiguousarray(mapped)  # what check_array hands on: a plain view of the map
    _finite_range(view)
    after_strips = _mapped_rss_mb(path)
    float(np.asarray(mapped).max())  # a plain whole-frame pass
    after_whole = _mapped_rss_mb(path)
    assert after_whole > 20, after_whole
    assert after_strips < 8, f"{after_strips:.1f} MB of the 24 MB frame still resident after the strip pass"
