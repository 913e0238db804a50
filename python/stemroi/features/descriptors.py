"""Label-free patch descriptors for clustering atomic-resolution patches.

Every descriptor is an estimator-like object with ``fit(patches)`` (no-op,
returns self), ``transform(patches) -> (n, d) float64`` and
``feature_groups`` (list of ``(name, size)`` blocks in column order, so that a
clusterer can give each block the same total weight after standardisation).
Patches are ``(n, h, w)`` real arrays; every descriptor first normalises each
patch to zero mean and unit standard deviation, so the intensity scale
(0..1 or 0..255) and the overall brightness do not matter.

Why these descriptors: a defect patch is a periodic lattice plus a local
disturbance at an arbitrary position (the labelled sets are shifted crops).
Fourier magnitudes are invariant to the shift of the lattice; the
*lattice residual* (the patch minus a least-squares fit of its own dominant
lattice frequencies) isolates the disturbance - a dark blob for a vacancy, a
bright dot for an interstitial, a dark area at a Lomer-Cottrell core, lines
for stacking faults and twins - and shift-invariant statistics of it
(multi-scale blob extremes, orientation-resolved power) describe it.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from .._validation import check_array, check_positive_int
from ..base import BaseEstimator, TransformerMixin

__all__ = [
    "zscore_patches",
    "lattice_fit_residual",
    "FFTMagnitude",
    "PolarPowerSpectrum",
    "LatticeResidual",
    "make_descriptor",
    "Precomputed",
    "DESCRIPTORS",
]


def _check_patches(patches, name: str = "patches", min_size: int = 8) -> np.ndarray:
    X = check_array(patches, name=name, ndim=3, dtype=(np.float64, np.float32))
    if X.shape[1] < min_size or X.shape[2] < min_size:
        raise ValueError(f"{name}: patches must be at least {min_size}x{min_size} pixels, got {X.shape[1]}x{X.shape[2]}")
    return X


def zscore_patches(patches) -> np.ndarray:
    """Each patch to zero mean and unit standard deviation (float64).

    A constant patch becomes all zeros (its standard deviation is taken as 1).
    """
    X = _check_patches(patches).astype(np.float64)
    X = X - X.mean(axis=(1, 2), keepdims=True)
    sd = X.std(axis=(1, 2), keepdims=True)
    return X / np.where(sd > 0, sd, 1.0)


def _freq_grids(h: int, w: int):
    """Centred integer frequency grids (cycles per patch) of an fftshift-ed spectrum."""
    fy = np.fft.fftshift(np.fft.fftfreq(h)) * h
    fx = np.fft.fftshift(np.fft.fftfreq(w)) * w
    return np.meshgrid(fy, fx, indexing="ij")


def _hann2d(h: int, w: int) -> np.ndarray:
    return np.outer(np.hanning(h), np.hanning(w))


SPECTRUM_WINDOWS = ("hann", "tukey")
_TUKEY_ALPHA = 0.5  # the tapered fraction: flat over the middle half


def _window_profile(x: np.ndarray, shape: str) -> np.ndarray:
    """A window's value at ``x``, the offset from its centre in units of its length (zero beyond
    |x| = 0.5). ``"hann"``: 0.5 (1 + cos 2 pi x). ``"tukey"``: 1 over |x| <= (1 - alpha) / 2, a
    half-cosine taper from there to the ends (alpha = 0.5, SciPy's ``windows.tukey``)."""
    a = np.abs(x)
    if shape == "hann":
        w = 0.5 * (1.0 + np.cos(2.0 * np.pi * a))
    else:
        flat = 0.5 * (1.0 - _TUKEY_ALPHA)
        t = np.clip((a - flat) / (0.5 * _TUKEY_ALPHA), 0.0, 1.0)
        w = 0.5 * (1.0 + np.cos(np.pi * t))
    return np.where(a <= 0.5, w, 0.0)


def _window2d(h: int, w: int, shape: str = "hann") -> np.ndarray:
    """(h, w) window centred on the patch, zero on its outermost rows and columns (``np.hanning`` and
    SciPy's symmetric windows)."""
    if shape == "hann":  # np.hanning itself: the default descriptor's features stay bit-identical
        return _hann2d(h, w)

    def one(m):
        return _window_profile((np.arange(m) - 0.5 * (m - 1)) / max(m - 1, 1), shape)

    return np.outer(one(h), one(w))


def lattice_fit_residual(patches, *, n_peaks: int = 8, pad: Optional[int] = None, min_radius: float = 2.5
                         ) -> Tuple[np.ndarray, np.ndarray]:
    """Split each patch into its periodic lattice and the residual.

    The ``n_peaks`` strongest Fourier peaks (local maxima of the Hann-windowed,
    zero-padded spectrum, one half-plane, at least ``min_radius`` cycles per
    patch from the origin), refined below one bin by a parabola through the
    log magnitude, give the lattice frequencies; the lattice is then the least-squares fit of a constant plus a
    cosine and a sine at each of those frequencies. Fitting in real space
    (instead of masking the FFT) leaves no ringing at the patch borders, which
    are not periodic.

    ``pad`` is the side of the zero-padded spectrum; None means 128, or the
    next power of two at or above the patch side for patches larger than 128.

    Returns ``(residual, lattice)``, both ``(n, h, w)`` float64, of the
    standardised patches (see :func:`zscore_patches`).
    """
    X = zscore_patches(patches)
    n_peaks = check_positive_int(n_peaks, "n_peaks")
    n, h, w = X.shape
    if pad is None:
        # 128 keeps every figure measured on <= 128 px patches; larger tiles (large frames at
        # fine pixel sizes) get the smallest power of two that holds them
        pad = max(128, 1 << (max(h, w) - 1).bit_length())
    pad = check_positive_int(pad, "pad")
    if pad < max(h, w):
        raise ValueError(f"pad must be >= the patch size {max(h, w)}, got {pad}")
    from scipy import ndimage as ndi

    spec = np.abs(np.fft.fft2(X * _hann2d(h, w), s=(pad, pad)))
    fy = np.fft.fftfreq(pad)
    fx = np.fft.fftfreq(pad)
    radius = np.hypot(fy[:, None] * h, fx[None, :] * w)
    half = (fy[:, None] > 0) | ((fy[:, None] == 0) & (fx[None, :] > 0))
    allowed = (radius >= min_radius) & half
    local_max = spec == ndi.maximum_filter(spec, size=(1, 5, 5), mode="wrap")
    yy, xx = np.mgrid[0:h, 0:w]
    yy = yy.ravel() - h / 2.0
    xx = xx.ravel() - w / 2.0
    freqs_y = np.zeros((n, n_peaks))
    freqs_x = np.zeros((n, n_peaks))
    n_used = np.zeros(n, dtype=np.int64)
    for i in range(n):
        cand = np.argwhere(local_max[i] & allowed)
        vals = spec[i][cand[:, 0], cand[:, 1]]
        # stable order so equal peaks give the same design matrix every run
        top = cand[np.argsort(-vals, kind="stable")[:n_peaks]]
        py, px = _refine_peaks(spec[i], top)
        freqs_y[i, :len(py)], freqs_x[i, :len(px)] = py, px
        n_used[i] = len(py)
    lattice = np.empty_like(X)
    flat = X.reshape(n, -1)
    # the design is (chunk, h*w, 1 + 2 n_peaks) float64: about 70 MB at 64 patches of 64 px,
    # so fewer patches per chunk for larger ones (each patch is solved alone: same result)
    chunk = max(1, min(64, (64 * 64 * 64) // (h * w)))
    for s0 in range(0, n, chunk):
        sl = slice(s0, min(n, s0 + chunk))
        # design (m, h*w, 1 + 2 n_peaks): constant, cosines, sines; unused peaks (tiny patches) are
        # zero columns, which the ridge below keeps harmless
        phase = 2 * np.pi * (freqs_y[sl, None, :] * yy[None, :, None] + freqs_x[sl, None, :] * xx[None, :, None])
        used = (np.arange(n_peaks)[None, :] < n_used[sl, None])[:, None, :]
        design = np.concatenate([np.ones(phase.shape[:2] + (1,)), np.cos(phase) * used, np.sin(phase) * used],
                                axis=2)
        design_t = design.transpose(0, 2, 1)
        gram = design_t @ design
        rhs = (design_t @ flat[sl][..., None])[..., 0]
        ridge = 1e-9 * np.trace(gram, axis1=1, axis2=2)[:, None, None] * np.eye(gram.shape[1])[None]
        coef = np.linalg.solve(gram + ridge + np.eye(gram.shape[1])[None] * 1e-12, rhs[..., None])[..., 0]
        lattice[sl] = (design @ coef[..., None]).reshape(-1, h, w)
    residual = X - lattice
    return residual, lattice


def _refine_peaks(spec: np.ndarray, peaks: np.ndarray):
    """Sub-bin peak frequencies (cycles/pixel) by a parabola through the log
    magnitude of each peak and its two neighbours along each axis."""
    pad_y, pad_x = spec.shape
    logs = np.log(spec + 1e-12)
    r, c = peaks[:, 0], peaks[:, 1]

    def offset(lm, l0, lp):
        den = lm - 2.0 * l0 + lp
        return np.where(den < 0, np.clip(0.5 * (lm - lp) / np.where(den < 0, den, -1.0), -0.5, 0.5), 0.0)

    dy = offset(logs[(r - 1) % pad_y, c], logs[r, c], logs[(r + 1) % pad_y, c])
    dx = offset(logs[r, (c - 1) % pad_x], logs[r, c], logs[r, (c + 1) % pad_x])
    fy = np.fft.fftfreq(pad_y)[r] + dy / pad_y
    fx = np.fft.fftfreq(pad_x)[c] + dx / pad_x
    return fy, fx


def _polar_log_power(X: np.ndarray, n_angles: int, radii: Sequence[float], window: bool,
                     shape: str = "hann") -> np.ndarray:
    """Log mean power in (radius band x orientation) bins; orientations folded to [0, pi). ``window``:
    multiply by a ``shape`` window centred on the patch first."""
    n, h, w = X.shape
    win = _window2d(h, w, shape) if window else 1.0
    power = np.abs(np.fft.fftshift(np.fft.fft2(X * win), axes=(1, 2))) ** 2
    gy, gx = _freq_grids(h, w)
    rad = np.hypot(gy, gx)
    ang = np.mod(np.arctan2(gy, gx), np.pi)
    a_bin = np.minimum((ang / np.pi * n_angles).astype(int), n_angles - 1)
    r_bin = np.digitize(rad, radii) - 1
    nb = len(radii) - 1
    flat = power.reshape(n, -1)
    code = (r_bin * n_angles + a_bin).ravel()
    valid = (r_bin.ravel() >= 0) & (r_bin.ravel() < nb)
    onehot = np.zeros((h * w, nb * n_angles))
    onehot[np.nonzero(valid)[0], code[valid]] = 1.0
    counts = onehot.sum(0)
    out = (flat @ onehot) / np.where(counts > 0, counts, 1.0)
    return np.log(out + 1e-6)


def _residual_peaks(residual: np.ndarray, sigma: float = 2.0) -> Tuple[np.ndarray, np.ndarray]:
    """Row and column of each patch's defect: the peak of its |residual| after Gaussian smoothing
    (``sigma`` px; a dark defect counts by its magnitude). ``residual``: (n, h, w), as from
    :func:`lattice_fit_residual`."""
    from ..preprocessing.filters import gaussian_filter

    n, h, w = residual.shape
    smooth = np.abs(gaussian_filter(np.ascontiguousarray(residual), sigma)).reshape(n, -1)
    return np.unravel_index(smooth.argmax(axis=1), (h, w))


def _defect_windows(residual: np.ndarray, sigma: float = 2.0, shape: str = "hann") -> np.ndarray:
    """(n, h, w) windows (``shape``, see :func:`_window_profile`) of the patch's size, each centred on
    its :func:`_residual_peaks`."""
    n, h, w = residual.shape
    rows, cols = _residual_peaks(residual, sigma)

    def one(size, centre):  # (n, size): full length `size`, zero beyond half a length from the centre
        return _window_profile((np.arange(size)[None, :] - centre[:, None]) / size, shape)

    return one(h, rows)[:, :, None] * one(w, cols)[:, None, :]


class _Descriptor(TransformerMixin, BaseEstimator):
    """Stateless patch transformer; subclasses give ``transform`` and ``feature_groups``
    (``[(name, size), ...]`` in column order)."""

    def fit(self, patches=None, y=None):
        return self

    def _more_tags(self):
        return {"stateless": True, "requires_fit": False, "X_types": ["3darray"]}


class FFTMagnitude(_Descriptor):
    """Fourier magnitude of the Hann-windowed, standardised patch (shift-tolerant).

    ``crop`` keeps the central ``crop`` x ``crop`` low frequencies (None: all);
    ``log`` applies ``log1p``. Only one half-plane is kept (the magnitude of a
    real image is point-symmetric), so ``d = crop * (crop // 2 + 1)``.
    """

    def __init__(self, *, crop: int | None = 32, log: bool = False, window: bool = True):
        self.crop = crop
        self.log = log
        self.window = window

    def _dims(self, h: int, w: int):
        if self.crop is None:
            return h, w
        c = check_positive_int(self.crop, "crop", minimum=2)
        if c > min(h, w):
            raise ValueError(f"crop must be <= the patch size {min(h, w)}, got {c}")
        return c, c

    def transform(self, patches) -> np.ndarray:
        X = zscore_patches(patches)
        n, h, w = X.shape
        ch, cw = self._dims(h, w)
        win = _hann2d(h, w) if self.window else 1.0
        mag = np.abs(np.fft.fftshift(np.fft.fft2(X * win), axes=(1, 2)))
        r0, c0 = h // 2 - ch // 2, w // 2 - cw // 2
        mag = mag[:, r0:r0 + ch, c0:c0 + cw]
        mag = mag[:, :, : cw // 2 + 1]  # half-plane (point symmetry)
        if self.log:
            mag = np.log1p(mag)
        self.n_features_out_ = mag.shape[1] * mag.shape[2]
        return mag.reshape(n, -1)

    @property
    def feature_groups(self):
        return [("fft_magnitude", getattr(self, "n_features_out_", 0))]


_DEFAULT_RADII = (2.0, 5.0, 9.0, 14.0, 20.0, 28.0, 32.0)


class PolarPowerSpectrum(_Descriptor):
    """Log power of the standardised patch in radius-band x orientation bins.

    Orientation is folded to [0, pi) (the power spectrum of a real image is
    point-symmetric); ``radii`` are band edges in cycles per patch.
    """

    def __init__(self, *, n_angles: int = 12, radii: Sequence[float] = _DEFAULT_RADII, window: bool = True):
        self.n_angles = n_angles
        self.radii = radii
        self.window = window

    def _check(self):
        check_positive_int(self.n_angles, "n_angles")
        r = np.asarray(self.radii, dtype=float)
        if r.ndim != 1 or r.size < 2 or np.any(np.diff(r) <= 0):
            raise ValueError(f"radii must be at least 2 increasing band edges, got {self.radii!r}")
        return r

    def transform(self, patches) -> np.ndarray:
        r = self._check()
        X = zscore_patches(patches)
        return _polar_log_power(X, self.n_angles, r, self.window).reshape(len(X), -1)

    @property
    def feature_groups(self):
        return [("polar_power", self.n_angles * (len(self.radii) - 1))]


class LatticeResidual(_Descriptor):
    """Deviation-from-lattice descriptor (see the module docstring).

    Three blocks: ``blob`` - for each smoothing scale in ``sigmas``, the log of
    the largest positive and negative robust z-scores of the smoothed residual
    and of its standard deviation (point defects, dark cores); ``residual_polar``
    - :class:`PolarPowerSpectrum` of the residual (line defects and their
    orientation); ``image_polar`` - the same of the patch itself (the local
    lattice: stacking, twins). All are invariant to shifts of the patch content
    up to border effects.

    ``orientation="resolved"`` (default) keeps the ``n_angles`` orientation
    bins of both polar blocks. ``orientation="invariant"`` replaces each radius
    band's orientation profile by the magnitudes of its Fourier series over
    the bins (``n_angles // 2 + 1`` harmonics; harmonic 0, the band's summed
    log power, keeps its sign). A rotation of the patch by a multiple of 90
    degrees shifts the profile circularly (with the default 12 bins; the
    magnitudes also ignore the reversal a mirror makes) and leaves the
    descriptor unchanged; other rotations change it only through the pixel
    grid and the binning. Use it
    when lattices of one material appear at several orientations (grains,
    another image of the same material rotated); it loses the angle between
    a fault and the lattice, which the resolved bins keep.

    ``residual_window="centre"`` (default) takes the residual's spectrum
    through a Hann window centred on the patch, so a defect near the border
    weighs less than one at the centre. ``residual_window="defect"`` centres
    the same window (the patch's size, cut off at the border) on the peak of
    the residual's magnitude after Gaussian smoothing (sigma 2 px): the
    residual block then describes the defect wherever it sits in the patch,
    as in the tiles of an image. With ``orientation="invariant"`` this is the
    ``"lattice_residual_invariant_local"`` descriptor.

    ``spectrum_window`` is the shape of the windows of both polar blocks:
    ``"hann"`` (default) or ``"tukey"`` (flat over the middle half of each
    axis, a half-cosine taper over the outer quarters; SciPy's
    ``windows.tukey(n, 0.5)``). In a 64 px patch, the Hann window weighs
    the rows 4, 8 and 16 px from the border at 0.04, 0.15 and 0.51, the
    Tukey window at 0.15, 0.51 and 1, so a defect or an interface along the
    border still counts. The lattice fit always
    uses a Hann window. Measured in docs/clustering.md ("Why K-means misses
    on CdTe").
    """

    def __init__(self, *, n_peaks: int = 8, sigmas: Sequence[float] = (1.0, 2.0, 4.0), border: int = 2,
                 n_angles: int = 12, radii: Sequence[float] = _DEFAULT_RADII, include_image: bool = True,
                 orientation: str = "resolved", residual_window: str = "centre", spectrum_window: str = "hann"):
        self.n_peaks = n_peaks
        self.sigmas = sigmas
        self.border = border
        self.n_angles = n_angles
        self.radii = radii
        self.include_image = include_image
        self.orientation = orientation
        self.residual_window = residual_window
        self.spectrum_window = spectrum_window

    def _check_orientation(self) -> bool:
        if self.orientation not in ("resolved", "invariant"):
            raise ValueError(f"orientation must be 'resolved' or 'invariant', got {self.orientation!r}")
        return self.orientation == "invariant"

    def _check_residual_window(self) -> bool:
        if self.residual_window not in ("centre", "defect"):
            raise ValueError(f"residual_window must be 'centre' or 'defect', got {self.residual_window!r}")
        return self.residual_window == "defect"

    def _check_spectrum_window(self) -> str:
        if not isinstance(self.spectrum_window, str) or self.spectrum_window not in SPECTRUM_WINDOWS:
            raise ValueError(f"spectrum_window must be one of {SPECTRUM_WINDOWS}, got {self.spectrum_window!r}")
        return self.spectrum_window

    def _polar(self, X: np.ndarray, radii: np.ndarray, invariant: bool, window: bool = True) -> np.ndarray:
        P = _polar_log_power(X, self.n_angles, radii, window, self.spectrum_window)
        P = P.reshape(len(X), len(radii) - 1, self.n_angles)
        if invariant:
            # a circular shift of the orientation bins only changes the phases of this series; harmonic 0
            # (the band's total log power) is real and keeps its sign
            H = np.fft.rfft(P, axis=2)
            P = np.concatenate([H[..., :1].real, np.abs(H[..., 1:])], axis=2)
        return P.reshape(len(X), -1)

    def _blob(self, residual: np.ndarray) -> np.ndarray:
        from ..preprocessing.filters import gaussian_filter

        b = int(self.border)
        n, h, w = residual.shape
        if b < 0 or 2 * b >= min(h, w):
            raise ValueError(f"border must be in [0, {min(h, w) // 2 - 1}] for {h}x{w} patches, got {self.border}")
        feats = []
        for s in self.sigmas:
            if not (float(s) > 0):
                raise ValueError(f"sigmas must be > 0, got {s!r}")
            g = gaussian_filter(np.ascontiguousarray(residual), float(s))
            g = g[:, b:h - b, b:w - b].reshape(n, -1)
            med = np.median(g, axis=1, keepdims=True)
            mad = np.median(np.abs(g - med), axis=1, keepdims=True) + 1e-6
            z = (g - med) / mad
            feats += [z.max(axis=1), -z.min(axis=1), g.std(axis=1)]
        return np.log(np.maximum(np.stack(feats, axis=1), 0.0) + 1e-3)

    def transform(self, patches) -> np.ndarray:
        radii = PolarPowerSpectrum(n_angles=self.n_angles, radii=self.radii)._check()
        invariant = self._check_orientation()
        on_defect = self._check_residual_window()
        shape = self._check_spectrum_window()
        X = zscore_patches(patches)
        residual, _ = lattice_fit_residual(X, n_peaks=self.n_peaks)
        if on_defect:
            residual_polar = self._polar(residual * _defect_windows(residual, shape=shape), radii, invariant,
                                         window=False)
        else:
            residual_polar = self._polar(residual, radii, invariant)
        blocks = [self._blob(residual), residual_polar]
        if self.include_image:
            blocks.append(self._polar(X, radii, invariant))
        return np.concatenate(blocks, axis=1)

    @property
    def feature_groups(self):
        per_band = self.n_angles // 2 + 1 if self.orientation == "invariant" else self.n_angles
        npol = per_band * (len(self.radii) - 1)
        groups = [("blob", 3 * len(self.sigmas)), ("residual_polar", npol)]
        if self.include_image:
            groups.append(("image_polar", npol))
        return groups


class Precomputed(_Descriptor):
    """Identity "descriptor" for feature rows computed elsewhere (``features='precomputed'``).

    ``feature_groups``: optional ``[(name, size), ...]`` blocks for the block
    weighting of :class:`stemroi.PatchClusterer`.
    """

    precomputed = True

    def __init__(self, *, feature_groups=None):
        self.feature_groups = feature_groups

    def transform(self, X) -> np.ndarray:
        return check_array(X, name="X (precomputed features)", ndim=2)


DESCRIPTORS = {
    "precomputed": lambda: Precomputed(),
    "fft": lambda: FFTMagnitude(),
    "log_fft": lambda: FFTMagnitude(log=True),
    "polar_fft": lambda: PolarPowerSpectrum(),
    "lattice_residual": lambda: LatticeResidual(),
    "lattice_residual_invariant": lambda: LatticeResidual(orientation="invariant"),
    "lattice_residual_invariant_local": lambda: LatticeResidual(orientation="invariant", residual_window="defect"),
    "lattice_residual_tukey": lambda: LatticeResidual(spectrum_window="tukey"),
}


def make_descriptor(name: str):
    """A descriptor from its short name (one of ``DESCRIPTORS``)."""
    if not isinstance(name, str) or name not in DESCRIPTORS:
        raise ValueError(f"unknown features {name!r}; expected one of {sorted(DESCRIPTORS)}, "
                         "'precomputed', or an object with a transform() method")
    return DESCRIPTORS[name]()
