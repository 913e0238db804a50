"""Synthetic HAADF-STEM images with planted defects and a ground-truth mask.

A lattice of Gaussian atomic columns (cell, basis, orientation, column
intensities) with vacancies, interstitials, anti-sites, column shifts and
planar (stacking) faults, Poisson (dose) and Gaussian noise and slow scan
drift. The defect mask marks a disc of ``mask_radius`` pixels around each
point defect and a band around each planar fault with the defect's class
index (0 = bulk). Deterministic for a given ``random_state``.

Usage::

    from stemroi.io import synth
    s = synth.make_image((512, 512), defects={"vacancy": 3, "stacking_fault": 1}, random_state=0)
    s.image, s.defect_mask, s.class_names, s.defects
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .._validation import check_random_state_seed

__all__ = ["SyntheticImage", "make_image", "make_patch_dataset", "CLASS_NAMES", "LATTICES", "DEFECT_KINDS",
           "FAULT_TYPES", "fault_types"]

DEFECT_KINDS = ("vacancy", "interstitial", "antisite", "column_shift", "stacking_fault")
CLASS_NAMES = ("Bulk",) + DEFECT_KINDS
# What a "stacking_fault" does to the half-lattice beyond its line (all share the mask class):
# "slide": slides by half a cell along a lattice axis (the original, default);
# "partial": slides by (a1 +- a2) / 6 along a lattice diagonal, the line in the widest gap between
#   column rows; in the dumbbell lattice (zinc blende [110]) the diagonals are the {111} traces and the
#   shift is the projected Shockley partial (1/3 of the column spacing along the trace): an
#   intrinsic stacking fault;
# "twin": the half-lattice is the mirror image of the other across a diagonal row of columns: in
#   the dumbbell lattice a {111} twin boundary (dumbbells turn by 70.5 degrees across it); square
#   lattices are their own mirror image across a diagonal, so they have no twin here.
FAULT_TYPES = ("slide", "partial", "twin")

# Basis per lattice: (fractional coordinate along a1, along a2, species, default intensity).
# Cells: a1 = (cell_px, 0) along x, a2 = (0, cell_px * aspect) along y before rotation.
LATTICES: Dict[str, dict] = {
    # one column per cell
    "cubic": {"aspect": 1.0, "basis": [(0.0, 0.0, "A", 1.0)], "interstitial": (0.5, 0.5)},
    # SrTiO3 [001]: bright Sr, dimmer Ti-O, faint O columns
    "perovskite": {
        "aspect": 1.0,
        "basis": [(0.0, 0.0, "A", 1.0), (0.5, 0.5, "B", 0.55), (0.5, 0.0, "O", 0.08), (0.0, 0.5, "O", 0.08)],
        "interstitial": (0.25, 0.25),
    },
    # zinc blende [110] (CdTe): dumbbells of a heavy and a lighter column
    "dumbbell": {
        "aspect": math.sqrt(2.0),
        "basis": [(0.0, 0.0, "A", 1.0), (0.0, 0.25, "B", 0.8), (0.5, 0.5, "A", 1.0), (0.5, 0.75, "B", 0.8)],
        "interstitial": (0.25, 0.375),
    },
}


@dataclass
class SyntheticImage:
    """Image ``(H, W)`` float32 in [0, 1], defect mask ``(H, W)`` int16 and the planted defects."""

    image: np.ndarray
    defect_mask: np.ndarray
    class_names: List[str]
    defects: List[dict] = field(default_factory=list)
    columns: Optional[np.ndarray] = None  # (m, 4) row, col, intensity, sigma of rendered columns


# --------------------------------------------------------------------------
# lattice


def _lattice_vectors(cell_px: float, aspect: float, orientation_deg: float):
    t = math.radians(orientation_deg)
    # (row, col) components; a1 points along +x at 0 degrees, a2 along +y (down)
    a1 = np.array([math.sin(t), math.cos(t)]) * cell_px
    a2 = np.array([math.cos(t), -math.sin(t)]) * cell_px * aspect
    return a1, a2


def _lattice_columns(shape, spec, cell_px, orientation_deg, intensities, phase):
    """Positions (m, 2) row/col, species (m,), intensities (m,) covering the image plus a margin."""
    h, w = shape
    a1, a2 = _lattice_vectors(cell_px, spec["aspect"], orientation_deg)
    basis = spec["basis"]
    m = np.linalg.inv(np.stack([a1, a2], axis=1))  # (row, col) -> (u, v) cell coordinates
    corners = np.array([[0, 0], [0, w], [h, 0], [h, w]], float) - phase
    uv = corners @ m.T
    lo = np.floor(uv.min(axis=0)) - 2
    hi = np.ceil(uv.max(axis=0)) + 2
    u, v = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), indexing="ij")
    u, v = u.ravel(), v.ravel()
    pos, species, amp = [], [], []
    for fu, fv, sp, default in basis:
        p = phase + np.outer(u + fu, a1) + np.outer(v + fv, a2)
        pos.append(p)
        species.extend([sp] * p.shape[0])
        amp.append(np.full(p.shape[0], float(intensities.get(sp, default)), np.float64))
    pos = np.concatenate(pos)
    amp = np.concatenate(amp)
    species = np.asarray(species)
    margin = 3 * cell_px
    keep = (pos[:, 0] > -margin) & (pos[:, 0] < h + margin) & (pos[:, 1] > -margin) & (pos[:, 1] < w + margin)
    return pos[keep], species[keep], amp[keep], a1, a2


def _render(shape, pos, amp, sigma):
    """Sum of Gaussian columns; each column is rendered into its own local window."""
    h, w = shape
    out = np.zeros(h * w, np.float64)
    keep = amp > 0
    pos, amp = pos[keep], amp[keep]
    if pos.shape[0] == 0:
        return out.reshape(h, w)
    radius = int(math.ceil(4.0 * sigma))
    offsets = np.arange(-radius, radius + 2)
    iy = np.floor(pos[:, 0]).astype(np.int64)[:, None] + offsets[None, :]
    ix = np.floor(pos[:, 1]).astype(np.int64)[:, None] + offsets[None, :]
    gy = np.exp(-((iy - pos[:, 0:1]) ** 2) / (2 * sigma**2))
    gx = np.exp(-((ix - pos[:, 1:2]) ** 2) / (2 * sigma**2))
    gy = np.where((iy >= 0) & (iy < h), gy, 0.0)
    gx = np.where((ix >= 0) & (ix < w), gx, 0.0)
    vals = amp[:, None, None] * gy[:, :, None] * gx[:, None, :]
    idx = np.clip(iy, 0, h - 1)[:, :, None] * w + np.clip(ix, 0, w - 1)[:, None, :]
    out += np.bincount(idx.ravel(), weights=vals.ravel(), minlength=h * w)
    return out.reshape(h, w)


# --------------------------------------------------------------------------
# defects


def _normalise_defects(defects) -> List[dict]:
    """Counts dict {kind: n} or list of dicts {kind, row?, col?, angle_deg?} -> list of requests."""
    if defects is None:
        return []
    if isinstance(defects, Mapping):
        out = []
        for kind in DEFECT_KINDS:  # fixed order, whatever the dict order
            n = defects.get(kind, 0)
            if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
                raise ValueError(f"defects[{kind!r}] must be an int >= 0, got {n!r}")
            out.extend({"kind": kind} for _ in range(int(n)))
        unknown = sorted(set(defects) - set(DEFECT_KINDS))
        if unknown:
            raise ValueError(f"unknown defect kind(s) {unknown}; expected some of {list(DEFECT_KINDS)}")
        return out
    out = []
    for d in defects:
        if not isinstance(d, Mapping) or d.get("kind") not in DEFECT_KINDS:
            raise ValueError(f"each defect must be a dict with 'kind' in {list(DEFECT_KINDS)}, got {d!r}")
        out.append(dict(d))
    return out


def _drift_fn(shape, drift, rng):
    """Horizontal scan displacement (pixels) as a function of the row: linear plus one slow wave."""
    h = shape[0]
    if drift == 0:
        return lambda r: np.zeros_like(np.asarray(r, float))
    phase = rng.uniform(0, 2 * math.pi)
    return lambda r: drift * (np.asarray(r, float) / h - 0.5) + 0.3 * drift * np.sin(2 * math.pi * 1.5 * np.asarray(r, float) / h + phase)


def make_image(
    shape: Tuple[int, int] = (512, 512),
    *,
    lattice: str = "perovskite",
    cell_px: float = 16.0,
    orientation_deg: float = 0.0,
    column_intensities: Optional[Mapping[str, float]] = None,
    column_sigma: Optional[float] = None,
    defects: Union[None, Mapping[str, int], Sequence[Mapping]] = None,
    dose: Optional[float] = 500.0,
    noise: float = 0.02,
    background: float = 0.05,
    drift: float = 0.0,
    phase: Optional[Tuple[float, float]] = None,
    mask_radius: Optional[float] = None,
    fault: str = "slide",
    random_state=None,
) -> SyntheticImage:
    """Render a lattice of Gaussian columns with planted defects.

    shape: (H, W) pixels. lattice: one of ``LATTICES`` ("cubic", "perovskite",
    "dumbbell"). cell_px: lattice constant in pixels. orientation_deg: lattice
    rotation. column_intensities: {species: peak} overriding the lattice
    defaults (species "A", "B", "O"). column_sigma: Gaussian width in pixels
    (default 0.09 * cell_px). defects: {kind: count} with kinds from
    ``DEFECT_KINDS`` placed at random columns at least two cells apart, or a
    list of {"kind", "row", "col"[, "angle_deg"]} placed at the nearest suitable
    site. dose: electrons per pixel at peak intensity (Poisson noise; None for
    none). noise: Gaussian noise std (peak = 1). drift: amplitude in pixels of the
    slow horizontal scan drift. phase: lattice origin in pixels (random when None).
    mask_radius: radius of the mask disc around point defects and half-width of
    fault bands (default 0.5 * cell_px). fault: what a "stacking_fault" does, one
    of ``FAULT_TYPES`` ("slide", "partial", "twin"; a request's own "fault" key
    wins); its record carries the type under "fault".

    ``defects`` of the result: one record per planted defect, {"kind", "label",
    "row", "col"} plus what tells the variants of a kind apart: "angle_deg"
    and "fault" for a stacking fault, "intensity_from" and "intensity_to" (the
    column's peak before and after) for an anti-site, "shift_deg" (the
    direction of the shift, measured as "angle_deg") for a column shift.

    Steps (the random stream is consumed in this order): lattice phase,
    :func:`_lattice_columns`, :class:`_DefectPlanter` (planar faults, then point
    defects), :func:`_drift_fn` / :func:`_apply_drift`, :func:`_render_normalised`,
    :func:`_add_noise`, :func:`_paint_mask`.
    """
    h, w = _check_shape(shape)
    if lattice not in LATTICES:
        raise ValueError(f"lattice must be one of {sorted(LATTICES)}, got {lattice!r}")
    cell_px = _positive(cell_px, "cell_px")
    if cell_px < 3:
        raise ValueError(f"cell_px must be >= 3 pixels, got {cell_px}")
    sigma = _positive(column_sigma if column_sigma is not None else max(0.09 * cell_px, 0.6), "column_sigma")
    radius = _positive(mask_radius if mask_radius is not None else 0.5 * cell_px, "mask_radius")
    if dose is not None:
        dose = _positive(dose, "dose")
    if not isinstance(noise, numbers.Real) or noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    if not isinstance(drift, numbers.Real):
        raise TypeError(f"drift must be a number of pixels, got {type(drift).__name__}")
    if fault not in FAULT_TYPES:
        raise ValueError(f"fault must be one of {list(FAULT_TYPES)}, got {fault!r}")
    rng = np.random.default_rng(check_random_state_seed(random_state))
    spec = LATTICES[lattice]
    intensities = dict(column_intensities or {})
    bad = [k for k, v in intensities.items() if not isinstance(v, numbers.Real) or v < 0]
    if bad:
        raise ValueError(f"column_intensities must be >= 0, got {intensities}")
    if phase is None:
        phase = rng.uniform(0, cell_px, size=2)
    phase = np.asarray(phase, float)

    pos, species, amp, a1, a2 = _lattice_columns((h, w), spec, cell_px, orientation_deg, intensities, phase)
    margin = max(cell_px, radius + 1) + 1.3 * abs(float(drift))  # drift moves columns sideways
    def lattice_in(lo, hi):
        """The same lattice's columns over the box [lo, hi) (a twin needs columns beyond the image)."""
        lo = np.floor(np.asarray(lo, float))
        size = np.maximum(np.ceil(np.asarray(hi, float)) - lo, 8).astype(int)
        p, sp, a, _, _ = _lattice_columns(tuple(size), spec, cell_px, orientation_deg, intensities, phase - lo)
        return p + lo, sp, a

    planter = _DefectPlanter((h, w), spec, cell_px, pos, species, amp, a1, a2, margin, rng,
                             default_fault=fault, lattice_in=lattice_in, origin=phase)
    pos, amp, records, faults = planter.plant(_normalise_defects(defects))

    dx = _drift_fn((h, w), float(drift), rng)
    pos = _apply_drift(pos, records, dx)
    img = _add_noise(_render_normalised((h, w), pos, amp, sigma, background), dose, noise, rng)
    mask = _paint_mask((h, w), records, faults, dx, radius)
    columns = np.column_stack([pos, amp, np.full(amp.shape, sigma)])
    return SyntheticImage(img.astype(np.float32), mask, list(CLASS_NAMES), records, columns)


_LABEL_OF = {k: i for i, k in enumerate(CLASS_NAMES)}


def fault_types(lattice) -> Tuple[str, ...]:
    """The ``FAULT_TYPES`` a lattice (a name of ``LATTICES`` or its spec) can show: all but "twin" on
    a square lattice, which is its own mirror image across a diagonal."""
    spec = LATTICES[lattice] if isinstance(lattice, str) else lattice
    return FAULT_TYPES if spec["aspect"] != 1.0 else tuple(f for f in FAULT_TYPES if f != "twin")


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


class _DefectPlanter:
    """Places the requested defects on the lattice columns (edits positions and intensities).

    Planar faults come first: they slide whole half-lattices that point
    defects then sit in. Random sites are at least two cells apart.
    """

    def __init__(self, shape, spec, cell_px, pos, species, amp, a1, a2, margin, rng, default_fault="slide",
                 lattice_in=None, origin=(0.0, 0.0)):
        self.default_fault, self.lattice_in = default_fault, lattice_in
        self.origin = np.asarray(origin, float)  # where the lattice point (0, 0) of the first basis column sits
        self.h, self.w = shape
        self.spec, self.cell_px, self.margin, self.rng = spec, cell_px, margin, rng
        self.pos, self.species, self.amp, self.a1, self.a2 = pos, species, amp, a1, a2
        self.peak = float(amp.max()) if amp.size else 1.0
        self.heavy = amp >= 0.3 * self.peak  # columns bright enough to carry a visible defect
        self.placed: List[np.ndarray] = []
        self.records: List[dict] = []
        self.faults: List[tuple] = []  # (point, unit direction, unit normal)
        self.n_requests = 0

    def plant(self, requests: List[dict]):
        """Returns ``(pos, amp, records, faults)`` with interstitial columns appended."""
        self.n_requests = len(requests)
        for req in requests:
            if req["kind"] == "stacking_fault":
                self._add_fault(req)
        inside = self._inside_columns()  # after the faults moved their half-lattices
        extra_pos, extra_amp = [], []
        for req in requests:
            if req["kind"] == "interstitial":
                site = self._add_interstitial(req, inside)
                extra_pos.append(site)
                extra_amp.append(0.6 * self.peak)
            elif req["kind"] != "stacking_fault":
                self._change_column(req, inside)
        pos, amp = self.pos, self.amp
        if extra_pos:
            pos = np.concatenate([pos, np.asarray(extra_pos)])
            amp = np.concatenate([amp, np.asarray(extra_amp)])
        return pos, amp, self.records, self.faults

    def _inside_columns(self) -> np.ndarray:
        pos, m = self.pos, self.margin
        return (pos[:, 0] >= m) & (pos[:, 0] < self.h - m) & (pos[:, 1] >= m) & (pos[:, 1] < self.w - m)

    def _far_enough(self, p) -> bool:
        return all(np.hypot(*(p - q)) >= 2 * self.cell_px for q in self.placed)

    def _pick_column(self, req, eligible) -> int:
        cand = np.flatnonzero(eligible)
        if cand.size == 0:
            raise ValueError(f"no room for a {req['kind']} defect in an image of shape {(self.h, self.w)} "
                             f"with cell_px={self.cell_px}")
        if "row" in req:
            d = np.hypot(self.pos[cand, 0] - float(req["row"]), self.pos[cand, 1] - float(req["col"]))
            return int(cand[np.argmin(d)])
        for k in self.rng.permutation(cand)[:2000]:
            if self._far_enough(self.pos[k]):
                return int(k)
        raise ValueError(f"cannot place {self.n_requests} defects at least two cells apart in an image of "
                         f"shape {(self.h, self.w)}")

    def _record(self, kind: str, p, **extra) -> None:
        self.placed.append(p)
        self.records.append({"kind": kind, "label": _LABEL_OF[kind], "row": float(p[0]), "col": float(p[1]), **extra})

    def _add_fault(self, req) -> None:
        rng, a1, a2, m = self.rng, self.a1, self.a2, self.margin
        fault = req.get("fault", self.default_fault)
        if fault not in FAULT_TYPES:
            raise ValueError(f"a stacking_fault's 'fault' must be one of {list(FAULT_TYPES)}, got {fault!r}")
        if fault not in fault_types(self.spec):
            raise ValueError("a twin across the diagonal of a square lattice is the lattice itself (nothing to "
                             "see); use fault='twin' with lattice='dumbbell', or fault='partial'")
        if "row" in req:
            p = np.array([float(req["row"]), float(req["col"])])
        else:
            for _ in range(1000):
                p = np.array([rng.uniform(m, self.h - m), rng.uniform(m, self.w - m)])
                if self._far_enough(p):
                    break
        angle = req.get("angle_deg")
        given = None if angle is None else np.array([math.sin(math.radians(angle)), math.cos(math.radians(angle))])
        if fault == "slide":
            direction = _unit(a1) if given is None else given
            if given is None and rng.random() < 0.5:
                direction = _unit(a2)
        else:
            diagonal = a1 + a2 if rng.random() < 0.5 else a1 - a2
            direction = _unit(diagonal) if given is None else given
        normal = np.array([-direction[1], direction[0]])
        if fault == "slide":
            side = (self.pos - p) @ normal > 0
            # the half-lattice beyond the fault slides by half a cell along the fault line
            step = a1 if abs(direction @ a1) >= abs(direction @ a2) else a2
            self.pos[side] += 0.5 * step
        else:
            if given is None:
                p = self._snap_to_row(p, normal, fault)
            if fault == "partial":
                side = (self.pos - p) @ normal > 0
                self.pos[side] += (np.linalg.norm(diagonal) / 6.0) * direction
            else:
                self._mirror_beyond(p, normal)
        self.faults.append((p, direction, normal))
        self._record("stacking_fault", p, fault=fault,
                     angle_deg=float(math.degrees(math.atan2(direction[0], direction[1]))))

    def _snap_to_row(self, p, normal, fault):
        """Moves ``p`` along ``normal`` onto the nearest diagonal row of columns (twin: the mirror is an
        atomic plane) or into the middle of the widest gap between rows (partial: slip between planes)."""
        step = float(self.a1 @ normal)  # normal distance between neighbouring rows of lattice points
        offsets = []
        for fu, fv, _, _ in self.spec["basis"]:
            offsets.append(float((fu * self.a1 + fv * self.a2) @ normal) % abs(step))
        offsets = np.sort(np.asarray(offsets))
        if fault == "twin":
            target = 0.0
        else:
            gaps = np.diff(np.concatenate([offsets, offsets[:1] + abs(step)]))
            i = int(np.argmax(gaps))
            target = offsets[i] + 0.5 * gaps[i]
        d = (float(self.origin @ normal) + target - float(p @ normal)) % abs(step)
        if d > 0.5 * abs(step):  # the nearest such row, on either side
            d -= abs(step)
        return p + d * normal

    def _mirror_beyond(self, p, normal) -> None:
        """Replaces every column beyond the line through ``p`` by the mirror image of the lattice before it.

        The mirror image is of the unfaulted lattice: a fault planted earlier on the near side is not
        mirrored (one twin per region is what the patch sets need)."""
        eps = 1e-6 * self.cell_px
        keep = (self.pos - p) @ normal <= eps
        h, w, m = self.h, self.w, 3 * self.cell_px
        def mirror(x):
            return x - 2.0 * ((x - p) @ normal)[:, None] * normal[None, :]

        corners = mirror(np.array([[-m, -m], [-m, w + m], [h + m, -m], [h + m, w + m]], float))
        src_pos, src_species, src_amp = self.lattice_in(corners.min(axis=0), corners.max(axis=0))
        before = (src_pos - p) @ normal < -eps  # columns on the line are kept once, from the lattice itself
        q = mirror(src_pos[before])
        inside = (q[:, 0] > -m) & (q[:, 0] < h + m) & (q[:, 1] > -m) & (q[:, 1] < w + m)
        self.pos = np.concatenate([self.pos[keep], q[inside]])
        self.species = np.concatenate([self.species[keep], src_species[before][inside]])
        self.amp = np.concatenate([self.amp[keep], src_amp[before][inside]])
        self.heavy = self.amp >= 0.3 * self.peak

    def _add_interstitial(self, req, inside) -> np.ndarray:
        fu, fv = self.spec["interstitial"]
        k = self._pick_column(req, inside & self.heavy & (self.species == self.spec["basis"][0][2]))
        site = self.pos[k] + fu * self.a1 + fv * self.a2
        self._record("interstitial", site)
        return site

    def _change_column(self, req, inside) -> None:
        """Vacancy, anti-site or column shift of one bright column."""
        kind, amp, heavy = req["kind"], self.amp, self.heavy
        k = self._pick_column(req, inside & heavy & (amp > 0))
        extra = {}  # how this one looks, where a kind has variants (benchmarks count them)
        if kind == "vacancy":
            amp[k] = 0.0
        elif kind == "antisite":
            levels = np.unique(np.round(amp[heavy & (amp > 0)], 9))
            others = [float(a) for a in levels if not np.isclose(a, amp[k])]
            before = float(amp[k])
            amp[k] = others[0] if others and amp[k] >= others[-1] else (others[-1] if others else 0.5 * amp[k])
            extra = {"intensity_from": before, "intensity_to": float(amp[k])}
        elif kind == "column_shift":
            t = self.rng.uniform(0, 2 * math.pi)
            self.pos[k] = self.pos[k] + 0.18 * self.cell_px * np.array([math.sin(t), math.cos(t)])
            extra = {"shift_deg": float(math.degrees(math.atan2(math.sin(t), math.cos(t))))}  # as angle_deg
        p = self.pos[k].copy()
        heavy[k] = False  # one defect per column
        self._record(kind, p, **extra)


def _apply_drift(pos: np.ndarray, records: List[dict], dx) -> np.ndarray:
    """Slow scan drift: every row is displaced horizontally; columns and defect records move with it."""
    pos = pos.copy()
    pos[:, 1] += dx(pos[:, 0])
    for r in records:
        r["col"] = float(r["col"] + dx(r["row"]))
    return pos


def _render_normalised(shape, pos, amp, sigma: float, background: float) -> np.ndarray:
    """Background plus Gaussian columns, divided by its maximum (peak = 1)."""
    clean = background + _render(shape, pos, amp, sigma)
    top = float(clean.max())
    return clean / top if top > 0 else clean


def _add_noise(img: np.ndarray, dose: Optional[float], noise: float, rng) -> np.ndarray:
    """Poisson noise at ``dose`` electrons per pixel at peak, Gaussian noise, min-max to [0, 1]."""
    if dose is not None:
        img = rng.poisson(img * dose) / dose
    if noise > 0:
        img = img + rng.normal(0.0, noise, size=img.shape)
    lo, hi = float(img.min()), float(img.max())
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)


def _paint_mask(shape, records: List[dict], faults, dx, radius: float) -> np.ndarray:
    """Class-index mask: a band of half-width ``radius`` along each fault, a disc around each point defect."""
    h, w = shape
    mask = np.zeros((h, w), np.int16)
    rows = np.arange(h, dtype=float)[:, None]
    cols = np.arange(w, dtype=float)[None, :] - dx(np.arange(h, dtype=float))[:, None]  # undo the drift
    for p, direction, normal in faults:
        dist = (rows - p[0]) * normal[0] + (cols - p[1]) * normal[1]
        mask[np.abs(dist) <= radius] = _LABEL_OF["stacking_fault"]
    for r in records:  # discs painted in a local window around each point defect
        if r["kind"] == "stacking_fault":
            continue
        r0, r1 = max(int(math.floor(r["row"] - radius)), 0), min(int(math.ceil(r["row"] + radius)) + 1, h)
        c0, c1 = max(int(math.floor(r["col"] - radius)), 0), min(int(math.ceil(r["col"] + radius)) + 1, w)
        rr = np.arange(r0, r1, dtype=float)[:, None] - r["row"]
        cc = np.arange(c0, c1, dtype=float)[None, :] - r["col"]
        window = mask[r0:r1, c0:c1]
        window[rr**2 + cc**2 <= radius**2] = r["label"]
    return mask


def make_patch_dataset(
    n_per_class: int = 50,
    patch_size: int = 64,
    classes: Optional[Sequence[str]] = None,
    random_state=None,
    *,
    jitter: Optional[float] = None,
    return_defects: bool = False,
    **image_kwargs,
):
    """Labelled synthetic patches: ``(patches (n, p, p) float32 [0, 1], labels (n,) int64, class_names)``.

    ``classes`` (default ``CLASS_NAMES``): "Bulk" and any of ``DEFECT_KINDS``.
    Every non-bulk patch holds one defect of its class near the centre (uniform
    jitter of up to ``jitter`` pixels, default patch_size / 8), every patch a
    random lattice phase. ``image_kwargs`` go to :func:`make_image` (lattice,
    cell_px, dose, noise, ...). Samples are ordered by class. With
    ``return_defects=True`` a fourth item lists, per patch, the planted
    defects (``[]`` for bulk) in patch coordinates.
    """
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, numbers.Integral) or n_per_class < 1:
        raise ValueError(f"n_per_class must be an int >= 1, got {n_per_class!r}")
    if isinstance(patch_size, bool) or not isinstance(patch_size, numbers.Integral) or patch_size < 8:
        raise ValueError(f"patch_size must be an int >= 8, got {patch_size!r}")
    class_names = list(classes) if classes is not None else list(CLASS_NAMES)
    unknown = [c for c in class_names if c != "Bulk" and c not in DEFECT_KINDS]
    if unknown or not class_names or len(set(class_names)) != len(class_names):
        raise ValueError(f"classes must be distinct names from {list(CLASS_NAMES)}, got {classes!r}")
    for key in ("defects", "phase", "random_state", "shape"):
        if key in image_kwargs:
            raise TypeError(f"make_patch_dataset sets {key!r} itself")
    cell_px = float(image_kwargs.get("cell_px", 16.0))
    if patch_size < 2 * cell_px:
        raise ValueError(f"patch_size ({patch_size}) must be at least two cells (2 * cell_px = {2 * cell_px})")
    jitter = patch_size / 8.0 if jitter is None else float(jitter)
    seed = check_random_state_seed(random_state)
    seeds = np.random.SeedSequence(seed).generate_state(len(class_names) * n_per_class, dtype=np.uint64)
    rng = np.random.default_rng(seed)
    patches = np.empty((len(class_names) * n_per_class, patch_size, patch_size), np.float32)
    labels = np.repeat(np.arange(len(class_names), dtype=np.int64), n_per_class)
    c = (patch_size - 1) / 2.0
    planted: List[List[dict]] = []
    for k, name in enumerate(class_names):
        for s in range(n_per_class):
            i = k * n_per_class + s
            phase = rng.uniform(0, cell_px, size=2)
            defects = None
            if name != "Bulk":
                r0, c0 = c + rng.uniform(-jitter, jitter, size=2)
                defects = [{"kind": name, "row": r0, "col": c0}]
            s = make_image((patch_size, patch_size), defects=defects, phase=phase,
                           random_state=int(seeds[i] >> np.uint64(1)), **image_kwargs)
            patches[i] = s.image
            planted.append(s.defects)
    if return_defects:
        return patches, labels, class_names, planted
    return patches, labels, class_names


def _check_shape(shape) -> Tuple[int, int]:
    try:
        h, w = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be (height, width), got {shape!r}") from None
    if h < 8 or w < 8:
        raise ValueError(f"shape must be at least (8, 8), got {(h, w)}")
    return h, w


def _positive(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
    return float(value)
