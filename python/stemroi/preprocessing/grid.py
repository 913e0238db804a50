"""Regular patch grids over 2-D images: origins, batch extraction, streaming.

The geometry and the copy run in C++ (``stemroi._core``); this module
validates inputs once and streams memory-mapped images batch by batch.
"""
from __future__ import annotations

import mmap
import numbers
from typing import Iterator, Optional, Tuple

import numpy as np

from .._lib import _core
from .._validation import check_n_threads, check_positive_int

__all__ = ["PatchGrid", "extract_patches"]

_EDGES = ("drop", "pad", "shift")
# dtypes extracted as they are; other real dtypes are converted to float32
_NATIVE = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.uint8), np.dtype(np.uint16))


def _image_shape(image_shape) -> Tuple[int, int]:
    shape = image_shape.shape if hasattr(image_shape, "shape") else image_shape
    try:
        shape = tuple(shape)
    except TypeError:
        raise TypeError(f"image_shape must be a (height, width) tuple or an array, got {type(image_shape).__name__}") from None
    if len(shape) != 2:
        raise ValueError(f"expected a 2-D image shape (height, width), got {shape}")
    for v in shape:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"image shape must hold ints, got {shape}")
    if shape[0] < 1 or shape[1] < 1:
        raise ValueError(f"image must have at least one pixel, got shape {shape}")
    return int(shape[0]), int(shape[1])


def _check_image(image) -> np.ndarray:
    """A 2-D array of a real dtype; memory maps stay memory maps (no copy)."""
    if not isinstance(image, np.ndarray):
        image = np.asarray(image)
    if image.dtype.kind in "OUSVcMm":
        raise TypeError(f"image: unsupported dtype {image.dtype} (expected real numbers, e.g. float32 or uint8)")
    if image.ndim != 2:
        hint = ""
        if image.ndim == 3:
            hint = " (a colour image or a stack: convert to grey with stemroi.read_image, or pass one image at a time)"
        raise ValueError(f"image: expected a 2-D image, got shape {image.shape}{hint}")
    if image.size == 0:
        raise ValueError(f"image: empty image of shape {image.shape}")
    return image


def _native(band: np.ndarray) -> np.ndarray:
    """C-contiguous in a dtype the core extracts; documented conversion to float32 otherwise."""
    dtype = band.dtype if band.dtype in _NATIVE else np.dtype(np.float32)
    if band.dtype == dtype and band.flags.c_contiguous:
        return band
    return np.ascontiguousarray(band, dtype=dtype)


def _read_only_map(image: np.ndarray):
    """The ``mmap.mmap`` behind ``image`` when it is (a view of) a read-only np.memmap, else None.

    Views made by ``np.asarray`` / ``np.ascontiguousarray`` / slicing are plain
    ndarrays whose ``.base`` chain leads to the memmap; they are followed.
    """
    obj = image
    for _ in range(16):
        if obj is None:
            return None
        if isinstance(obj, np.memmap):
            mm = getattr(obj, "_mmap", None)
            if mm is None or getattr(obj, "mode", None) != "r":
                return None
            return mm
        obj = getattr(obj, "base", None)
    return None


def _release_pages(image: np.ndarray, upto_row: int, from_row: int = 0) -> None:
    """Drop the resident pages of rows [from_row, upto_row) of a read-only memory map.

    Mapped file pages count towards the process RSS until the kernel reclaims
    them; streaming a file larger than memory should not hold them. Only done
    for mode 'r' maps (MADV_DONTNEED would discard the edits of a 'c' map), and
    best effort: anything unexpected leaves the pages to the kernel. ``image``
    may be a view of the memmap (its ``.base`` chain is followed).
    """
    mm = _read_only_map(image)
    if mm is not None and image.flags.c_contiguous:
        _drop_rows(mm, image, from_row, upto_row)


def _drop_rows(mm, rows: np.ndarray, from_row: int, upto_row: int) -> None:
    """MADV_DONTNEED on the whole pages of rows [from_row, upto_row) of ``rows``,
    a C-contiguous array inside the mapping ``mm`` (best effort)."""
    if not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return
    try:
        base = np.frombuffer(mm, dtype=np.uint8)
        offset = rows.ctypes.data - base.ctypes.data
        del base
        row_bytes = rows.strides[0]
        start = offset + max(from_row, 0) * row_bytes
        end = offset + upto_row * row_bytes
        start += -start % mmap.PAGESIZE  # whole pages only: never drop a page a later row shares
        end -= end % mmap.PAGESIZE
        if end > start:
            mm.madvise(mmap.MADV_DONTNEED, start, end - start)
    except (ValueError, OSError, TypeError, BufferError):  # pragma: no cover - platform dependent
        pass


def _iter_strips(image: np.ndarray, strip_bytes: int = 16 << 20) -> Iterator[Tuple[int, np.ndarray]]:
    """Yield ``(row0, image[row0:row1])`` for consecutive strips of about ``strip_bytes``.

    For a read-only memory map (or a view of one) the pages of each strip are
    released once the consumer asks for the next one, so a full pass (min/max,
    finiteness) over a mapped frame keeps one strip resident, not the frame.
    """
    h = image.shape[0]
    row_bytes = max(int(np.prod(image.shape[1:], dtype=np.int64)) * image.itemsize, 1)
    rows = max(1, int(strip_bytes) // row_bytes)
    for r0 in range(0, h, rows):
        r1 = min(r0 + rows, h)
        yield r0, image[r0:r1]
        _release_pages(image, r1, r0)


def _finite_range(image: np.ndarray, name: str = "image") -> Tuple[float, float]:
    """(min, max) of a real 2-D array, read in row strips (:func:`_iter_strips`).

    Raises the ValueError of ``check_array`` (naming the first NaN/inf and its
    index) for a non-finite float pixel. A memory-mapped frame is never
    resident whole and no frame-sized temporary is made.
    """
    lo, hi = np.inf, -np.inf
    for row0, strip in _iter_strips(image):
        if strip.dtype.kind == "f":
            finite = np.isfinite(strip)
            if not finite.all():
                bad = np.argwhere(~finite)[0]
                idx = (int(bad[0]) + row0,) + tuple(int(i) for i in bad[1:])
                raise ValueError(f"{name}: contains NaN or infinity (first at index {idx}, value {image[idx]}); "
                                 "clean or impute the data first")
            del finite
        if strip.size:
            lo, hi = min(lo, float(strip.min())), max(hi, float(strip.max()))
    return lo, hi


class PatchGrid:
    """A grid of square ``patch_size`` patches over a 2-D image.

    Parameters
    ----------
    patch_size : int, default 64
        Side of the square patches in pixels.
    stride : int or None, default None
        Step between neighbouring origins; ``None`` means ``patch_size``
        (non-overlapping). A smaller stride overlaps patches.
    edge : {"drop", "pad", "shift"}, default "drop"
        Border handling along each axis of length ``L``:

        - ``"drop"``: origins ``0, s, 2s, ...`` with ``origin + patch_size <= L``;
          a remainder narrower than a patch is not covered. Needs ``L >= patch_size``.
        - ``"shift"``: as ``"drop"`` plus one last window at ``L - patch_size``
          when pixels would be left uncovered. Needs ``L >= patch_size``.
        - ``"pad"``: origins ``0, s, 2s, ...`` (inside the image) up to the first
          window that reaches the border; pixels past the bottom/right border are mirrored
          as ``np.pad(image, ..., mode="symmetric")`` (= ``scipy.ndimage``
          ``mode="reflect"``). Any image size, 1 x 1 included.
    allow_nan : bool, default False
        By default a NaN or infinite pixel read by a patch raises ValueError
        naming the patch and its origin; ``True`` copies such pixels as they are.
    n_threads : int or None
        OpenMP threads for extraction (``None`` = all available cores).

    Notes
    -----
    Patches are ordered row-major (all patches of the first row of origins,
    then the next row). Extraction keeps float32, float64, uint8 and uint16;
    other real dtypes (bool, int8/16/32/64, uint32/64, float16) are converted
    to float32.
    """

    def __init__(self, patch_size: int = 64, stride: Optional[int] = None, edge: str = "drop", *,
                 allow_nan: bool = False, n_threads: Optional[int] = None):
        self.patch_size = patch_size
        self.stride = stride
        self.edge = edge
        self.allow_nan = allow_nan
        self.n_threads = n_threads

    def __repr__(self) -> str:
        return f"PatchGrid(patch_size={self.patch_size!r}, stride={self.stride!r}, edge={self.edge!r})"

    def _geometry(self) -> Tuple[int, int, str]:
        p = check_positive_int(self.patch_size, "patch_size")
        s = p if self.stride is None else check_positive_int(self.stride, "stride")
        if self.edge not in _EDGES:
            raise ValueError(f"edge must be 'drop', 'pad' or 'shift', got {self.edge!r}")
        return p, s, self.edge

    def origins(self, image_shape) -> np.ndarray:
        """(n, 2) int64 (row, col) of the top-left pixel of every patch, row-major.

        ``image_shape`` is ``(height, width)`` or an array (its ``.shape``).
        """
        h, w = _image_shape(image_shape)
        p, s, edge = self._geometry()
        return _core.patch_grid_origins(p, s, edge, h, w)

    def n_patches(self, image_shape) -> int:
        h, w = _image_shape(image_shape)
        p, s, edge = self._geometry()
        return int(_core.patch_grid_n_patches(p, s, edge, h, w))

    def _extract_range(self, image: np.ndarray, start: int, stop: int, nt: int) -> np.ndarray:
        p, s, edge = self._geometry()
        h, w = image.shape
        if image.dtype in _NATIVE and image.flags.c_contiguous:
            band, row0 = image, 0  # read in place: only the rows the patches need are touched
        else:
            row0, row1 = _core.patch_grid_row_span(p, s, edge, h, w, start, stop)
            band = _native(image[row0:row1])
        return _core.patch_grid_extract(band, row0, h, w, p, s, edge, start, stop, not self.allow_nan, nt)

    def extract(self, image, start: Optional[int] = None, stop: Optional[int] = None) -> np.ndarray:
        """Patches ``[start, stop)`` (default: all) as one contiguous ``(k, patch_size, patch_size)`` array.

        The dtype is kept (see the class notes). Only the image rows those
        patches cover are read, so a range of a memory map stays cheap.
        """
        image = _check_image(image)
        n = self.n_patches(image.shape)
        start = 0 if start is None else check_positive_int(start, "start", minimum=0)
        stop = n if stop is None else check_positive_int(stop, "stop", minimum=0)
        if not start < stop <= n:
            raise ValueError(f"patch range [start, stop) must satisfy 0 <= start < stop <= {n}, got [{start}, {stop})")
        return self._extract_range(image, start, stop, check_n_threads(self.n_threads))

    def iter_batches(self, image, batch_size: int = 256) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        """Yield ``(origins, patches)`` for consecutive batches of at most ``batch_size`` patches.

        ``image`` may be a memory map (``np.load(path, mmap_mode="r")`` or
        ``np.memmap``): each batch reads only the image rows its patches cover,
        and the pages of rows that no later batch needs are released for
        read-only maps, so peak memory is bounded by the batch (plus one band
        of rows), not by the image.
        """
        image = _check_image(image)
        batch_size = check_positive_int(batch_size, "batch_size")
        p, s, edge = self._geometry()
        h, w = image.shape
        # per-axis origins only: the (n, 2) table of a fine grid over a huge image can itself be large
        rows, cols = _core.patch_grid_axis_origins(p, s, edge, h, w)
        nt = check_n_threads(self.n_threads)
        n = len(rows) * len(cols)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            patches = self._extract_range(image, start, stop, nt)
            idx = np.arange(start, stop, dtype=np.int64)
            origins = np.stack([rows[idx // len(cols)], cols[idx % len(cols)]], axis=1)
            if stop < n:
                next_first_row = _core.patch_grid_row_span(p, s, edge, h, w, stop, n)[0]
                _release_pages(image, next_first_row)
            yield origins, patches


def extract_patches(image, patch_size: int = 64, stride: Optional[int] = None, edge: str = "drop", *,
                    allow_nan: bool = False, n_threads: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Cut ``image`` into patches: returns ``(patches (n, p, p), origins (n, 2) int64)``.

    Shorthand for ``PatchGrid(patch_size, stride, edge)``; see it for the edge
    modes and dtypes.
    """
    grid = PatchGrid(patch_size, stride, edge, allow_nan=allow_nan, n_threads=n_threads)
    image = _check_image(image)
    return grid.extract(image), grid.origins(image.shape)
