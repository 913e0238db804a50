"""Small synthetic lattice patches with known defect classes (test helper)."""
from __future__ import annotations

import numpy as np


def lattice_patches(n_per_class=20, size=48, period=8.0, kinds=("bulk", "interstitial", "vacancy"), noise=0.05,
                    seed=0):
    """Gaussian columns on a square lattice (random phase per patch) with one
    defect per patch: an extra bright dot between columns, or a missing column."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    patches, labels = [], []
    for label, kind in enumerate(kinds):
        for _ in range(n_per_class):
            oy, ox = rng.uniform(0, period, 2)
            img = np.zeros((size, size))
            centres = [(oy + i * period, ox + j * period) for i in range(-1, int(size / period) + 2)
                       for j in range(-1, int(size / period) + 2)]
            if kind == "vacancy":
                inner = [c for c in centres if 10 <= c[0] <= size - 10 and 10 <= c[1] <= size - 10]
                drop = inner[rng.integers(len(inner))]
                centres = [c for c in centres if c != drop]
            for cy, cx in centres:
                img += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 1.5 ** 2))
            if kind == "interstitial":
                cy = oy + period * rng.integers(1, int(size / period) - 1) + period / 2
                cx = ox + period * rng.integers(1, int(size / period) - 1) + period / 2
                img += 1.2 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 1.2 ** 2))
            img += noise * rng.standard_normal(img.shape)
            patches.append(img)
            labels.append(label)
    return np.asarray(patches, dtype=np.float32), np.asarray(labels, dtype=np.int64)
