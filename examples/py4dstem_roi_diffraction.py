"""4D-STEM: DataCube -> ADF virtual image -> ROIs -> real-space masks + mean diffraction per class (py4DSTEM).

A 48x48 scan of 32x32 diffraction patterns is simulated: a host lattice
(stemroi.io.synth.make_image) with a planted precipitate, a disc of a denser,
rotated, heavier lattice, whose patterns show its own Bragg discs instead of
the host's. stemroi.adapters.py4dstem.find_rois forms the annular dark-field
virtual image with py4DSTEM, finds the ROIs with a PatchClusterer fitted on
that image's tiles (label-free), and returns boolean masks (a py4DSTEM
RealSlice) and the mean pattern of the ROI and bulk regions (a
DiffractionSlice). Needs py4DSTEM.

    python examples/py4dstem_roi_diffraction.py [--quick] [--out DIR]
"""
import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

import stemroi
import stemroi.io.synth
from stemroi.adapters import py4dstem as p4a
from stemroi.detection import to_unit_range
from stemroi.preprocessing import PatchGrid

SCAN, Q = 48, 32


def disc(shape, centre, radius):
    qx, qy = np.indices(shape)
    return ((qx - centre[0]) ** 2 + (qy - centre[1]) ** 2 <= radius**2).astype(np.float32)


def bragg_discs(distance, angles_deg, radius=1.5):
    return sum(disc((Q, Q), (16 + distance * np.cos(a), 16 + distance * np.sin(a)), radius)
               for a in np.radians(angles_deg))


def simulate(seed=0):
    host = stemroi.io.synth.make_image((SCAN, SCAN), lattice="cubic", cell_px=8, dose=None, noise=0.02,
                                       random_state=seed)
    prec = stemroi.io.synth.make_image((SCAN, SCAN), lattice="cubic", cell_px=5.5, orientation_deg=30, dose=None,
                                       noise=0.02, random_state=seed + 100)
    planted = disc((SCAN, SCAN), (24, 21), 12).astype(bool)
    haadf = np.where(planted, 1.5 * prec.image, host.image)
    r = np.hypot(*(np.indices((Q, Q)) - 16.0))
    ring = np.exp(-((r - 14.0) ** 2) / (2 * 1.2**2)).astype(np.float32)  # thermal diffuse scattering: the ADF signal
    host_discs, prec_discs = bragg_discs(7, [0, 90, 180, 270]), bragg_discs(10, [30, 120, 210, 300])
    data = disc((Q, Q), (16, 16), 3) + np.where(planted[..., None, None], prec_discs, host_discs)
    data = (data + haadf[..., None, None] * ring).astype(np.float32)
    data += np.random.default_rng(seed).normal(0, 0.01, data.shape).astype(np.float32)
    return data, planted, host_discs > 0, prec_discs > 0


def main(argv=None):
    import py4DSTEM

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="accepted for uniformity: the example is small already")
    parser.add_argument("--out", type=Path, help="output folder (default: a new temp dir)")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="stemroi_4dstem_"))
    out.mkdir(parents=True, exist_ok=True)

    data, planted, host_discs, prec_discs = simulate()
    datacube = py4DSTEM.DataCube(data)
    datacube.calibration.set_R_pixel_size(0.4)
    datacube.calibration.set_R_pixel_units("A")
    adf = p4a.virtual_image(datacube, ((16, 16), (12, 16)))  # py4DSTEM's annular virtual detector
    image, _ = p4a.to_image(adf)
    tiles = PatchGrid(patch_size=16, stride=4, edge="drop").extract(to_unit_range(image))
    clusterer = stemroi.PatchClusterer("lattice_residual", n_components=5, k_range=[2], n_init=4, random_state=0,
                                       n_threads=1).fit(tiles)
    # the precipitate covers much of the scan: a second phase, not a rare outlier of the bulk, so the
    # tiles are flagged by cluster (roi="cluster"), not by their outlying score (the default)
    rois = p4a.find_rois(datacube, clusterer, image=adf, by="roi", patch=16, stride=2, roi="cluster")

    bulk = rois.result.bulk_label
    roi = rois.mask("ROI")
    recall = float((roi & planted).sum() / planted.sum())
    precision = float((roi & planted).sum() / max(roi.sum(), 1))
    iou = float((roi & planted).sum() / (roi | planted).sum())
    roi_dp, bulk_dp = rois.pattern("ROI"), rois.pattern(bulk)
    contrast = float(roi_dp[prec_discs].mean() / bulk_dp[prec_discs].mean())
    host_in_roi = float(roi_dp[host_discs].mean() / bulk_dp[host_discs].mean())
    print(f"classes {rois.labels} with {rois.n_positions} scan positions")
    print(f"ROI mask vs planted precipitate: recall {recall:.2f}, precision {precision:.2f}, IoU {iou:.2f}")
    print(f"precipitate discs: ROI mean pattern / bulk mean pattern = {contrast:.1f}; "
          f"host discs in the ROI pattern: {host_in_roi:.3f} of bulk")
    np.savez(out / "rois.npz", masks=rois.masks.data, labels=np.array(rois.labels),
             mean_patterns=rois.mean_patterns.data, virtual_image=image)
    try:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 4, figsize=(12, 3))
        for ax, (title, im) in zip(axes, [("ADF virtual image", image), ("ROI mask", roi),
                                          ("mean pattern: ROI", roi_dp), (f"mean pattern: {bulk}", bulk_dp)]):
            ax.imshow(im, cmap="gray")
            ax.set_title(title)
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(out / "roi_diffraction.png", dpi=80)
    except ImportError:
        pass
    summary = {"labels": rois.labels, "n_positions": rois.n_positions, "recall": recall, "precision": precision,
               "iou": iou, "precipitate_disc_contrast": contrast, "host_discs_in_roi": host_in_roi,
               "masks_shape": list(rois.masks.data.shape), "patterns_shape": list(rois.mean_patterns.data.shape)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
