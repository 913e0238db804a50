"""Overlap-aware groups, grouped splits, a leakage report and a label audit.

The labelled CdTe/STO patch sets contain many patches that are shifted crops
of the same image region. A random split puts such twins on both sides, so test
accuracy measures memory. :func:`overlap_groups` finds the twins (exactly
shared pixels at some shift) and returns connected components of the overlap
graph; the splitters keep every group on one side.
"""
from __future__ import annotations

import numbers
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .._validation import check_array, check_n_threads, check_random_state_seed

__all__ = [
    "overlap_groups",
    "mosaic_positions",
    "spatial_blocks",
    "purge_overlapping",
    "exact_overlap_positions",
    "grouped_train_test_split",
    "spatial_train_test_split",
    "GroupedStratifiedKFold",
    "leakage_report",
    "label_audit",
]


def _check_patches(patches) -> np.ndarray:
    x = check_array(patches, name="patches", ndim=3, dtype=(np.float32,))
    return x


def overlap_groups(
    patches,
    *,
    labels=None,
    across_classes: bool = True,
    min_overlap: float = 0.25,
    segment_length: int = 16,
    atol: float = 0.0,
    min_match: float = 1.0,
    sample_every: int = 4,
    neighbours: int = 4,
    max_bucket: int = 4096,
    return_edges: bool = False,
    n_threads: Optional[int] = None,
):
    """Group ids ``(n,)`` int64 of patches that are shifted crops of each other.

    Two patches are linked when, at some shift, their overlap covers at least
    ``min_overlap`` of the patch area and at least ``min_match`` of the overlap
    pixels agree within ``atol`` (exact equality by default, the right test for
    crops of the same integer image). Candidate shifts come from hashed row
    segments of ``segment_length`` pixels, so overlaps narrower than that are not
    found. Each shared (content-sampled, ``1/sample_every``) segment proposes
    pairs with the next ``neighbours`` patches holding it; every proposal is
    verified over the whole overlap. Groups are connected components (twins of twins share a group), with
    ids numbered in order of their first patch.

    labels / across_classes: with ``across_classes=False`` only patches of the
    same label are linked (by default twins are found across classes, which is
    what the label audit needs).

    return_edges: also return ``edges`` (m, 4) int64 rows ``[i, j, dy, dx]`` (a
    spanning forest of the overlap graph: patch ``j``'s pixel ``(r, c)`` equals
    patch ``i``'s pixel ``(r + dy, c + dx)``) and their overlap shares ``(m,)``.
    """
    from .._lib import _core

    x = _check_patches(patches)
    lab = None
    if labels is not None:
        raw = np.asarray(labels)
        if raw.shape != (x.shape[0],):
            raise ValueError(f"labels: expected shape ({x.shape[0]},) (one per patch), got {raw.shape}")
        lab = np.ascontiguousarray(np.unique(raw, return_inverse=True)[1].astype(np.int64))  # any label type
    elif not across_classes:
        raise ValueError("across_classes=False needs labels")
    for name, value in (("min_overlap", min_overlap), ("min_match", min_match)):
        if not isinstance(value, numbers.Real) or not 0.0 < float(value) <= 1.0:
            raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    if not isinstance(atol, numbers.Real) or atol < 0:
        raise ValueError(f"atol must be >= 0, got {atol!r}")
    if not isinstance(segment_length, numbers.Integral) or not 2 <= segment_length <= x.shape[2]:
        raise ValueError(f"segment_length must be an int in [2, patch width {x.shape[2]}], got {segment_length!r}")
    groups, edges, shares, _stats = _core.overlap_groups(
        x,
        lab,
        segment_length=int(segment_length),
        min_overlap=float(min_overlap),
        sample_every=int(sample_every),
        atol=float(atol),
        min_match=float(min_match),
        neighbours=int(neighbours),
        max_bucket=int(max_bucket),
        same_label_only=not across_classes,
        n_threads=check_n_threads(n_threads),
    )
    if return_edges:
        return groups, edges, shares
    return groups


def mosaic_positions(groups, edges) -> np.ndarray:
    """Origin ``(row, col)`` of every patch in the mosaic of its overlap group.

    ``edges`` are the ``[i, j, dy, dx]`` rows from ``overlap_groups(...,
    return_edges=True)``; the first patch of each group sits at (0, 0) and the
    others follow from the shifts along the spanning forest (patch ``j``'s
    origin is patch ``i``'s plus ``(dy, dx)``). Two patches of one group then
    overlap exactly where their rectangles intersect.
    """
    g = np.asarray(groups)
    e = np.asarray(edges, dtype=np.int64).reshape(-1, 4)
    n = g.shape[0]
    if e.size and (e[:, :2].min() < 0 or e[:, :2].max() >= n):
        raise ValueError(f"edges refer to patches outside [0, {n})")
    neighbours: List[List[Tuple[int, int, int]]] = [[] for _ in range(n)]
    for i, j, dy, dx in e.tolist():
        neighbours[i].append((j, dy, dx))
        neighbours[j].append((i, -dy, -dx))
    pos = np.zeros((n, 2), np.int64)
    seen = np.zeros(n, bool)
    for root in range(n):
        if seen[root]:
            continue
        seen[root] = True
        stack = [root]
        while stack:
            a = stack.pop()
            for b, dy, dx in neighbours[a]:
                if not seen[b]:
                    seen[b] = True
                    pos[b] = pos[a] + (dy, dx)
                    stack.append(b)
    return pos


def spatial_blocks(groups, positions, block_size: int = 128, patch_shape: Tuple[int, int] = (64, 64)) -> np.ndarray:
    """Split each overlap group into square blocks of its mosaic (by patch centre).

    Large overlap groups (a whole class cropped from one image) cannot be
    split whole; blocks of ``block_size`` mosaic pixels can. Use the block ids
    as ``groups`` for :func:`grouped_train_test_split` or
    :class:`GroupedStratifiedKFold`, then :func:`purge_overlapping` to drop the
    train patches that still overlap a test patch across a block border.
    Returns int64 ids numbered by first patch.
    """
    g = np.asarray(groups)
    pos = np.asarray(positions, dtype=np.int64)
    if pos.shape != (g.shape[0], 2):
        raise ValueError(f"positions: expected shape ({g.shape[0]}, 2), got {pos.shape}")
    if isinstance(block_size, bool) or not isinstance(block_size, numbers.Integral) or block_size < 1:
        raise ValueError(f"block_size must be an int >= 1, got {block_size!r}")
    centre = pos + np.asarray(patch_shape, np.int64) // 2
    cells = np.floor_divide(centre, block_size)
    keys = np.column_stack([np.unique(g, return_inverse=True)[1], cells])
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank[inverse.ravel()].astype(np.int64)


def _overlap_share_matrix(pa: np.ndarray, pb: np.ndarray, patch_shape) -> np.ndarray:
    h, w = patch_shape
    d = np.abs(pa[:, None, :] - pb[None, :, :])
    return np.clip(h - d[..., 0], 0, None) * np.clip(w - d[..., 1], 0, None) / float(h * w)


def _twins(groups, positions, query_idx, other_idx, patch_shape, min_overlap) -> np.ndarray:
    """For each query patch: does some patch of ``other_idx`` overlap it by >= min_overlap (> 0 if 0)?"""
    g = np.asarray(groups)
    pos = np.asarray(positions, dtype=np.int64)
    hit = np.zeros(query_idx.size, bool)
    for grp in np.intersect1d(g[query_idx], g[other_idx]):
        q = np.flatnonzero(g[query_idx] == grp)
        o = other_idx[g[other_idx] == grp]
        share = _overlap_share_matrix(pos[query_idx[q]], pos[o], patch_shape)
        hit[q] = ((share >= min_overlap - 1e-12) & (share > 0)).any(axis=1)
    return hit


def purge_overlapping(train_idx, test_idx, groups, positions, patch_shape=(64, 64), min_overlap: float = 0.0):
    """Train indices without the patches that overlap any test patch (by more than ``min_overlap``; any overlap by default)."""
    g = np.asarray(groups)
    tr = _check_index(train_idx, g.shape[0], "train_idx")
    te = _check_index(test_idx, g.shape[0], "test_idx")
    return tr[~_twins(g, positions, tr, te, patch_shape, float(min_overlap))]


# --------------------------------------------------------------------------
# splits


def _check_labels_groups(labels, groups) -> Tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    g = np.asarray(groups)
    if y.ndim != 1 or g.ndim != 1:
        raise ValueError(f"labels and groups must be 1-D, got shapes {y.shape} and {g.shape}")
    if y.shape != g.shape:
        raise ValueError(f"labels and groups must have the same length, got {y.shape[0]} and {g.shape[0]}")
    if y.size == 0:
        raise ValueError("labels and groups are empty")
    return y, g


def _group_table(y: np.ndarray, g: np.ndarray):
    """Group codes per sample, per-group label counts (G, K) and label codes."""
    _, g_codes = np.unique(g, return_inverse=True)
    classes, y_codes = np.unique(y, return_inverse=True)
    n_groups = int(g_codes.max()) + 1
    counts = np.zeros((n_groups, classes.size), np.int64)
    np.add.at(counts, (g_codes, y_codes), 1)
    return g_codes, counts, y_codes


def grouped_train_test_split(labels, groups, test_size: float = 0.2, random_state=None):
    """Split sample indices so that no group is on both sides.

    Groups are visited per majority label, in a random order, and go to the
    test side while they bring the per-label test counts closer (in squared
    distance) to ``test_size`` of each label's count, so the split is
    stratified as far as whole groups permit. Returns sorted
    ``(train_idx, test_idx)`` int64 arrays. Deterministic for an int
    ``random_state``.
    """
    y, g = _check_labels_groups(labels, groups)
    if not isinstance(test_size, numbers.Real) or not 0.0 < float(test_size) < 1.0:
        raise ValueError(f"test_size must be a fraction in (0, 1), got {test_size!r}")
    g_codes, counts, _ = _group_table(y, g)
    n_groups = counts.shape[0]
    if n_groups < 2:
        raise ValueError(f"need at least 2 groups to split, got {n_groups}")
    rng = np.random.default_rng(check_random_state_seed(random_state))
    majority = counts.argmax(axis=1)
    sizes = counts.sum(axis=1)
    in_test = np.zeros(n_groups, bool)
    target = counts.sum(axis=0) * float(test_size)
    taken = np.zeros(counts.shape[1], np.float64)
    for k in range(counts.shape[1]):
        members = np.flatnonzero(majority == k)
        for grp in rng.permutation(members):
            # add a group when it brings the test counts of all labels closer to their targets
            # (groups that mix labels move several counts at once)
            if ((target - taken - counts[grp]) ** 2).sum() < ((target - taken) ** 2).sum():
                in_test[grp] = True
                taken += counts[grp]
    if not in_test.any():  # tiny inputs: take the smallest group
        in_test[int(np.argmin(sizes))] = True
    if in_test.all():
        in_test[int(np.argmax(sizes))] = False
    test_mask = in_test[g_codes]
    return np.flatnonzero(~test_mask).astype(np.int64), np.flatnonzero(test_mask).astype(np.int64)


def exact_overlap_positions(patches, *, min_side: int = 8, **overlap_kwargs) -> Tuple[np.ndarray, np.ndarray]:
    """Groups and mosaic positions linking patches that share any exact overlap.

    A second, finer :func:`overlap_groups` search for purging and leakage
    reports: every row segment of ``min_side`` pixels is hashed
    (``sample_every=1``) and an overlap counts from ``min_side * min_side``
    pixels up, whatever its share of the patch. Overlaps narrower than
    ``min_side`` pixels are the only ones not seen. ``overlap_kwargs``
    (``atol``, ``min_match``, ``n_threads``, ...) pass on;
    ``segment_length``, ``sample_every`` and ``min_overlap`` are set here.
    Returns ``(groups, positions)``. A mosaic linked by small overlaps can
    place a patch of another image beside patches it shares nothing with, so
    rectangles that intersect here are candidates (purging by them errs towards
    removing too much; :func:`leakage_report` verifies each one's pixels).
    """
    x = _check_patches(patches)
    h, w = x.shape[1:]
    if isinstance(min_side, bool) or not isinstance(min_side, numbers.Integral) or not 2 <= min_side <= min(h, w):
        raise ValueError(f"min_side must be an int in [2, {min(h, w)}], got {min_side!r}")
    kw = {k: v for k, v in overlap_kwargs.items() if k not in ("segment_length", "sample_every", "min_overlap")}
    groups, edges, _ = overlap_groups(
        x,
        segment_length=int(min_side),
        sample_every=1,
        min_overlap=min(1.0, float(min_side * min_side) / float(h * w)),
        return_edges=True,
        **kw,
    )
    return groups, mosaic_positions(groups, edges)


def spatial_train_test_split(
    patches,
    labels,
    test_size: float = 0.2,
    *,
    block_size: int = 128,
    min_overlap: float = 0.25,
    purge_min_side: int = 8,
    random_state=None,
    **overlap_kwargs,
):
    """Overlap-aware split in one call: no test patch shares pixels with a train patch.

    Finds overlap groups (of at least ``min_overlap``) and their mosaics, cuts
    the mosaics into ``block_size`` blocks and splits whole blocks with
    :func:`grouped_train_test_split` (stratified by majority label). Then a
    finer search (:func:`exact_overlap_positions`) finds overlaps of any size
    from ``purge_min_side`` x ``purge_min_side`` pixels up, and every train
    patch sharing such an overlap with a test patch is purged, so twins below
    ``min_overlap`` cannot leak either. Use this when whole classes are single
    overlap groups (the CdTe and STO sets). Returns sorted ``(train_idx,
    test_idx)``; the purged patches are in neither.
    """
    x = _check_patches(patches)
    groups, edges, _ = overlap_groups(x, min_overlap=min_overlap, return_edges=True, **overlap_kwargs)
    positions = mosaic_positions(groups, edges)
    blocks = spatial_blocks(groups, positions, block_size=block_size, patch_shape=x.shape[1:])
    train, test = grouped_train_test_split(labels, blocks, test_size=test_size, random_state=random_state)
    train = purge_overlapping(train, test, groups, positions, patch_shape=x.shape[1:])
    fine_groups, fine_positions = exact_overlap_positions(x, min_side=purge_min_side, **overlap_kwargs)
    return purge_overlapping(train, test, fine_groups, fine_positions, patch_shape=x.shape[1:]), test


class GroupedStratifiedKFold:
    """K folds of whole groups with label proportions as even as groups allow.

    Like ``sklearn.model_selection.StratifiedGroupKFold``: groups, largest
    first (shuffled among themselves first when ``shuffle``), go to the fold
    where they make the per-label fold counts closest to an even share.
    ``split(X, y, groups)`` yields ``(train_idx, test_idx)``. ``shuffle``
    defaults to True so that ``GroupedStratifiedKFold(5, random_state=0)``
    uses its seed; equal-sized groups are then ordered by that seed.
    """

    def __init__(self, n_splits: int = 5, shuffle: bool = True, random_state=None):
        self.n_splits = n_splits
        self.shuffle = shuffle
        self.random_state = random_state

    def get_n_splits(self, X=None, y=None, groups=None) -> int:
        return self.n_splits

    def _fold_of_group(self, y, g):
        if isinstance(self.n_splits, bool) or not isinstance(self.n_splits, numbers.Integral) or self.n_splits < 2:
            raise ValueError(f"n_splits must be an int >= 2, got {self.n_splits!r}")
        g_codes, counts, _ = _group_table(y, g)
        n_groups = counts.shape[0]
        if n_groups < self.n_splits:
            raise ValueError(f"n_splits={self.n_splits} is more than the number of groups ({n_groups})")
        order = np.arange(n_groups)
        if self.shuffle:
            rng = np.random.default_rng(check_random_state_seed(self.random_state))
            order = rng.permutation(n_groups)
        sizes = counts.sum(axis=1)
        order = order[np.argsort(-sizes[order], kind="stable")]
        per_label_target = counts.sum(axis=0) / self.n_splits
        fold_counts = np.zeros((self.n_splits, counts.shape[1]), np.float64)
        fold = np.empty(n_groups, np.int64)
        for grp in order:
            trial = fold_counts + counts[grp]
            # cost of each choice: squared distance of that fold's counts to the even share
            cost = ((trial - per_label_target) ** 2).sum(axis=1) - ((fold_counts - per_label_target) ** 2).sum(axis=1)
            best = np.flatnonzero(np.isclose(cost, cost.min()))
            f = best[np.argmin(fold_counts[best].sum(axis=1))]
            fold[grp] = f
            fold_counts[f] += counts[grp]
        return fold[g_codes]

    def split(self, X=None, y=None, groups=None) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        if y is None or groups is None:
            raise ValueError("GroupedStratifiedKFold.split needs y and groups")
        y, g = _check_labels_groups(y, groups)
        if X is not None and len(X) != y.shape[0]:
            raise ValueError(f"X has {len(X)} samples but y has {y.shape[0]}")
        fold = self._fold_of_group(y, g)
        for k in range(self.n_splits):
            yield np.flatnonzero(fold != k).astype(np.int64), np.flatnonzero(fold == k).astype(np.int64)

    def __repr__(self) -> str:
        return f"GroupedStratifiedKFold(n_splits={self.n_splits}, shuffle={self.shuffle}, random_state={self.random_state})"


# --------------------------------------------------------------------------
# reports


def _shared_pixel_shares(groups, positions, test_idx, train_idx, patch_shape, patches=None,
                         atol: float = 0.0, min_match: float = 1.0) -> np.ndarray:
    """Per test patch: the share of its pixels that some train patch of its group also covers.

    With ``patches``, each overlap rectangle of the mosaic counts only when its
    pixels really agree (``min_match`` of them within ``atol``, not all equal):
    a mosaic built from small overlaps can place a patch of another image next
    to patches it shares nothing with.
    """
    g = np.asarray(groups)
    pos = np.asarray(positions, dtype=np.int64)
    h, w = (int(v) for v in patch_shape)
    shares = np.zeros(test_idx.size, np.float64)
    for grp in np.intersect1d(g[test_idx], g[train_idx]):
        q = np.flatnonzero(g[test_idx] == grp)
        o = train_idx[g[train_idx] == grp]
        for k in q:
            j = test_idx[k]
            d = pos[o] - pos[j]  # train origins relative to the test patch
            near = (np.abs(d[:, 0]) < h) & (np.abs(d[:, 1]) < w)
            if not near.any():
                continue
            covered = np.zeros((h, w), bool)
            for i, (dy, dx) in zip(o[near].tolist(), d[near].tolist()):
                r0, r1, c0, c1 = max(0, dy), min(h, h + dy), max(0, dx), min(w, w + dx)
                if patches is not None:
                    a = patches[j, r0:r1, c0:c1]
                    b = patches[i, r0 - dy : r1 - dy, c0 - dx : c1 - dx]
                    agree = np.abs(a - b) <= atol
                    if agree.mean() < min_match - 1e-12 or a.max() - a.min() <= atol:
                        continue
                covered[r0:r1, c0:c1] = True
            shares[k] = covered.mean()
    return shares


def leakage_report(
    groups_or_patches,
    train_idx,
    test_idx,
    *,
    positions=None,
    patch_shape: Tuple[int, int] = (64, 64),
    min_overlap: float = 0.25,
    min_side: int = 8,
    **overlap_kwargs,
) -> Dict[str, object]:
    """How much of a split's test set has an overlapping twin in the train set.

    ``groups_or_patches``: group ids ``(n,)`` from :func:`overlap_groups`, or
    the patches ``(n, h, w)`` themselves (groups, edges and mosaic positions are
    then computed here, with ``min_overlap`` and ``overlap_kwargs``).

    Returns a dict with ``n_train``, ``n_test``, ``n_groups``,
    ``n_groups_split`` (groups on both sides), ``n_test_leaked`` / ``leakage``
    (test patches whose overlap group has a train member: twins of twins
    count), and, when positions are known, ``n_test_with_twin`` /
    ``twin_leakage`` (test patches that themselves overlap a train patch by at
    least ``min_overlap`` of their area) and the overlaps of any size:
    ``n_test_any_overlap`` / ``any_overlap_leakage`` (test patches sharing any
    pixel with a train patch) and ``shared_share_min`` / ``shared_share_max``
    (over those test patches, the share of their pixels found in train
    patches; 0.0 when there are none). From patches, the any-size figures come
    from :func:`exact_overlap_positions` (overlaps from ``min_side`` x
    ``min_side`` pixels up), each overlap verified pixel by pixel; from group
    ids, from the rectangles of the given ``positions``.
    """
    arr = np.asarray(groups_or_patches)
    fine = None
    if arr.ndim == 3:
        x = arr.astype(np.float32, copy=False)
        groups, edges, _ = overlap_groups(x, min_overlap=min_overlap, return_edges=True, **overlap_kwargs)
        positions = mosaic_positions(groups, edges)
        patch_shape = arr.shape[1:]
        fine = exact_overlap_positions(x, min_side=min_side, **overlap_kwargs)
    elif arr.ndim == 1:
        groups = arr
    else:
        raise ValueError(f"groups_or_patches: expected group ids (n,) or patches (n, h, w), got shape {arr.shape}")
    n = groups.shape[0]
    tr = _check_index(train_idx, n, "train_idx")
    te = _check_index(test_idx, n, "test_idx")
    if np.intersect1d(tr, te).size:
        raise ValueError("train_idx and test_idx share samples")
    train_groups = np.unique(groups[tr])
    leaked = np.isin(groups[te], train_groups)
    split_groups = np.intersect1d(train_groups, np.unique(groups[te]))
    report: Dict[str, object] = {
        "n_train": int(tr.size),
        "n_test": int(te.size),
        "n_groups": int(np.unique(groups).size),
        "n_groups_split": int(split_groups.size),
        "n_test_leaked": int(leaked.sum()),
        "leakage": float(leaked.mean()) if te.size else 0.0,
    }
    if positions is not None:
        pos = np.asarray(positions, dtype=np.int64)
        if pos.shape != (n, 2):
            raise ValueError(f"positions: expected shape ({n}, 2), got {pos.shape}")
        twin = _twins(groups, pos, te, tr, tuple(patch_shape), float(min_overlap))
        report["n_test_with_twin"] = int(twin.sum())
        report["twin_leakage"] = float(twin.mean()) if te.size else 0.0
        if fine is not None:
            shared = _shared_pixel_shares(*fine, te, tr, tuple(patch_shape), patches=x,
                                          atol=float(overlap_kwargs.get("atol", 0.0)),
                                          min_match=float(overlap_kwargs.get("min_match", 1.0)))
        else:
            shared = _shared_pixel_shares(groups, pos, te, tr, tuple(patch_shape))
        hit = shared[shared > 0]
        report["n_test_any_overlap"] = int(hit.size)
        report["any_overlap_leakage"] = float(hit.size / te.size) if te.size else 0.0
        report["shared_share_min"] = float(hit.min()) if hit.size else 0.0
        report["shared_share_max"] = float(hit.max()) if hit.size else 0.0
    return report


def _check_index(idx, n: int, name: str) -> np.ndarray:
    a = np.asarray(idx)
    if a.dtype == bool:
        if a.shape != (n,):
            raise ValueError(f"{name}: boolean mask of shape {a.shape}, expected ({n},)")
        return np.flatnonzero(a)
    if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
        raise ValueError(f"{name}: expected a 1-D array of integer indices, got shape {a.shape} dtype {a.dtype}")
    if a.size and (a.min() < 0 or a.max() >= n):
        raise ValueError(f"{name}: indices must be in [0, {n}), got range [{a.min()}, {a.max()}]")
    return a.astype(np.int64)


def label_audit(groups, labels, class_names: Optional[Sequence[str]] = None) -> List[Dict[str, object]]:
    """Overlap groups whose members carry different labels.

    A shifted crop of the same region labelled twice differently is either a
    labelling error or a patch that genuinely contains two things. Returns one
    dict per mixed group, largest first: ``group``, ``size``, ``labels``
    ({label name: count}) and ``indices`` (sample indices).
    """
    y, g = _check_labels_groups(labels, groups)
    out = []
    for grp in np.unique(g):
        idx = np.flatnonzero(g == grp)
        values, counts = np.unique(y[idx], return_counts=True)
        if values.size < 2:
            continue
        names = [class_names[int(v)] if class_names is not None else v.item() for v in values]
        out.append(
            {
                "group": grp.item(),
                "size": int(idx.size),
                "labels": {name: int(c) for name, c in zip(names, counts)},
                "indices": idx.astype(np.int64),
            }
        )
    out.sort(key=lambda d: (-d["size"], d["group"]))
    return out
