"""Patch extraction + resize 64 -> 224 + caffe normalisation (the VGG16 input on CPU).

Compares, in one run and on the same inputs:
  stemroi  PatchGrid.extract + stemroi.preprocessing.prepare_patches (C++ / OpenMP, fused)
  PIL      the Keras study's per-patch loop: PIL Image.resize(BILINEAR) on each
           uint8 patch, NumPy grey -> 3 channels and caffe preprocess_input
  torch    torch.nn.functional.interpolate on the batch (torch.set_num_threads(2)),
           then grey -> 3 channels and caffe normalisation in torch
on the 1119 labelled CdTe patches and on the 144 tiles of the 768 x 768 CdTe
image; then streams a memory-mapped 8192 x 8192 float32 image (256 MiB)
through PatchGrid.iter_batches + prepare_patches in a subprocess and prints
its peak RSS.

Usage: python benchmarks/preprocess.py [--repeats 3] [--no-stream]
Data: <repo>/../shared/data or $STEMROI_DATA_DIR.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("STEMROI_DATA_DIR", ROOT.parent / "shared" / "data"))
CAFFE_BGR_MEAN = np.array([103.939, 116.779, 123.68], np.float32)


def best_of(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def load_inputs():
    ayyubi = DATA_DIR / "ayyubi-stem-defects"
    if not ayyubi.exists():
        sys.exit(f"benchmarks/preprocess.py: reference data not found at {ayyubi} "
                 "(set STEMROI_DATA_DIR to the shared/data folder)")
    import tifffile
    from PIL import Image

    files = sorted((ayyubi / "CdTe").glob("*.tif"))
    patches_u8 = np.stack([tifffile.imread(f)[..., 0] for f in files])  # RGBA, R = G = B
    image_u8 = np.asarray(Image.open(ayyubi / "CdTe_Training_Image.tif"))[..., 0]  # LZW: PIL reads it
    return patches_u8, image_u8


# --- the three pipelines -------------------------------------------------------------

def pil_loop(patches_u8):
    """Keras-study style: one PIL resize per patch, NumPy channels and caffe (channels-last)."""
    from PIL import Image

    out = np.empty((len(patches_u8), 224, 224, 3), np.float32)
    for i, p in enumerate(patches_u8):
        up = np.asarray(Image.fromarray(p).resize((224, 224), Image.BILINEAR), np.float32)
        rgb = np.repeat(up[:, :, None], 3, axis=2)
        out[i] = rgb[..., ::-1] - CAFFE_BGR_MEAN  # preprocess_input(mode='caffe') on 0..255
    return out


def pil_image_pipeline(image_u8):
    tiles = [image_u8[r:r + 64, c:c + 64] for r in range(0, 768, 64) for c in range(0, 768, 64)]
    return pil_loop(np.stack(tiles))


def torch_batch(patches01):
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(patches01)[:, None]
    up = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
    mean = torch.from_numpy(CAFFE_BGR_MEAN).view(1, 3, 1, 1)
    return (up.expand(-1, 3, -1, -1) * 255.0 - mean).numpy()


def torch_image_pipeline(image01):
    import torch

    tiles = torch.from_numpy(image01).unfold(0, 64, 64).unfold(1, 64, 64).reshape(-1, 64, 64).contiguous()
    return torch_batch(tiles.numpy())


def stemroi_image_pipeline(image01):
    import stemroi

    return stemroi.preprocessing.prepare_patches(stemroi.PatchGrid(64).extract(image01), 224, "caffe")


# --- streaming peak RSS -----------------------------------------------------------------

# Peak RSS of the streaming loop alone. ru_maxrss survives fork + exec on Linux
# (a child starts with its parent's peak), so the child reads VmHWM from
# /proc/self/status, whose high-water mark it resets first via clear_refs.
STREAM_CODE = textwrap.dedent("""
    import sys, time, numpy as np, stemroi

    def status_mib(key):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024

    path, batch = sys.argv[1], int(sys.argv[2])
    image = np.load(path, mmap_mode="r")
    grid = stemroi.PatchGrid(64)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    base = status_mib("VmRSS")
    t0 = time.perf_counter()
    n, checksum = 0, 0.0
    for origins, patches in grid.iter_batches(image, batch_size=batch):
        x = stemroi.preprocessing.prepare_patches(patches, 224, "caffe")
        n += len(x); checksum += float(x[:, 0, 0, 0].sum())
    dt = time.perf_counter() - t0
    print(n, base, status_mib("VmHWM"), dt)
""")


def stream_peak_rss(batch):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.npy"
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(8192, 8192))
        rng = np.random.default_rng(0)
        for r in range(0, 8192, 512):
            mm[r:r + 512] = rng.random((512, 8192), dtype=np.float32)
        mm.flush()
        del mm
        out = subprocess.run([sys.executable, "-c", STREAM_CODE, str(path), str(batch)], capture_output=True,
                             text=True, check=True).stdout.split()
    n, base_mib, peak_mib, dt = int(out[0]), float(out[1]), float(out[2]), float(out[3])
    return n, base_mib, peak_mib, dt


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-stream", action="store_true", help="skip the 8192 x 8192 memmap streaming run")
    ap.add_argument("--stream-batch", type=int, default=128)
    args = ap.parse_args()

    import torch

    import stemroi

    torch.set_num_threads(2)
    patches_u8, image_u8 = load_inputs()
    patches01 = patches_u8.astype(np.float32) / 255.0
    image01 = image_u8.astype(np.float32) / 255.0
    n_threads = len(os.sched_getaffinity(0))  # stemroi uses all available cores (n_threads=None)
    print(f"stemroi preprocess benchmark: {len(patches01)} CdTe patches 64x64 and the 768x768 CdTe image "
          f"(144 tiles) -> (n, 3, 224, 224) float32 caffe; stemroi OpenMP threads = {n_threads}, torch threads = "
          f"{torch.get_num_threads()}, best of {args.repeats}. Shared, loaded machine: compare ratios, not seconds.")

    rows = []
    for label, ours, pil, tch in (
        ("1119 CdTe patches", lambda: stemroi.preprocessing.prepare_patches(patches01, 224, "caffe"), lambda: pil_loop(patches_u8),
         lambda: torch_batch(patches01)),
        ("768 image, 144 tiles", lambda: stemroi_image_pipeline(image01), lambda: pil_image_pipeline(image_u8),
         lambda: torch_image_pipeline(image01)),
    ):
        t_ours, x_ours = best_of(ours, args.repeats)
        t_pil, x_pil = best_of(pil, args.repeats)
        t_torch, x_torch = best_of(tch, args.repeats)
        d_torch = float(np.abs(x_ours - x_torch).max())
        d_pil = float(np.abs(x_ours - x_pil.transpose(0, 3, 1, 2)).max())
        del x_ours, x_pil, x_torch
        rows.append((label, t_ours, t_pil, t_torch, d_torch, d_pil))

    print(f"\n{'input':22s} {'stemroi s':>10s} {'PIL loop s':>11s} {'torch s':>9s} {'PIL/stemroi':>12s} "
          f"{'torch/stemroi':>14s} {'max|d| torch':>13s} {'max|d| PIL':>11s}")
    for label, t_ours, t_pil, t_torch, d_torch, d_pil in rows:
        print(f"{label:22s} {t_ours:10.4f} {t_pil:11.4f} {t_torch:9.4f} {t_pil / t_ours:12.2f} "
              f"{t_torch / t_ours:14.2f} {d_torch:13.2e} {d_pil:11.2e}")
    print("(max|d| on the caffe scale, 0..255: torch is the same resize in float32; the PIL loop resizes uint8 "
          "and rounds to whole grey levels)")

    if not args.no_stream:
        n, base, peak, dt = stream_peak_rss(args.stream_batch)
        print(f"\nstreaming 8192x8192 float32 memmap (256 MiB on disk) -> {n} patches -> prepare_patches in batches "
              f"of {args.stream_batch}: {dt:.1f} s, peak RSS {peak:.0f} MiB (before streaming {base:.0f} MiB, "
              f"growth {peak - base:.0f} MiB; one output batch is {args.stream_batch * 3 * 224 * 224 * 4 / 2**20:.0f} MiB)")
        print("peak RSS growth under 1 GiB:", "yes" if peak - base < 1024 else "NO")


if __name__ == "__main__":
    main()
