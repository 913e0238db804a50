"""stemroi on a CUDA GPU against the reference Python stack on the same GPU: parity and speed.

One run prints, with ratios measured in that run:

1. VGG16 features of N tiles (64 px, resized to 224 | native 64; GAP of
   block5): stemroi ``VGG16Features(device="cuda")`` FP32 and BF16 against
   torchvision eager on the same GPU (the reference resizes on the GPU with
   ``F.interpolate``, its best case; PIL on the CPU would be slower). FP32 is
   timed with cuDNN's TF32 allowed (PyTorch's default for convolutions) and
   with it off (true FP32). Parity against torchvision with TF32 off: max
   relative difference and min cosine. GFLOP/s against the measured peak of
   a large cuDNN convolution in the same mode.
2. The VGG16 study's label-free workflow on the CdTe frame (144 tiles of 64
   px at 224, PCA 0.95, K-means k = 2..10 with silhouette): the reference
   (PIL + torchvision on the GPU + scikit-learn) against stemroi with
   features, PCA and the k-sweep on the GPU; identical k and labels checked.
3. The dense stride-16 map of the frame (one fully convolutional pass in
   strips) at the 224-equivalent and native scales, FP32 and BF16, against
   the floor of one pass at the measured convolution peak.
4. The k-sweep with silhouette (n = 10000, d = 50, k = 2..10): stemroi on
   the GPU, stemroi on all CPU cores, scikit-learn; labels compared.
5. The dense native-scale map of a synthetic frame (--synth, default 4096):
   time and the GPU memory the caching allocator peaked at.

Weights: untrained VGG16 (torchvision's initialisation, torch.manual_seed(0)),
the same on both sides (ImageNet weights are not available offline). Times:
best of --rounds, after a warm-up, torch.cuda.synchronize() around each.

    python benchmarks/gpu.py                    # a GPU machine: about 2-3 minutes
    python benchmarks/gpu.py --device cpu --quick   # a smoke test of the script itself
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

from workflow import (K_RANGE, TV_MEAN, TV_STD, Reference, agreement, cosine, read_grey, same_partition, tiles_of,
                      vgg16_flop)

import stemroi
from stemroi._lib import _core
from stemroi.features import extract_image_features

BATCH = 128  # GPU batch of both sides (stemroi's CPU default, 16, leaves an H200 idle)
DTYPES = ("float32", "bfloat16")  # main() drops bfloat16 for --device cpu on CPUs without oneDNN bf16


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def best_time(fn, device, rounds):
    """(best seconds, last result) of `rounds` timed calls after one warm-up call."""
    out = fn()
    best = float("inf")
    for _ in range(rounds):
        sync(device)
        t = time.perf_counter()
        out = fn()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return best, out


class tf32:
    """Allow or forbid TF32 in cuDNN convolutions and cuBLAS matmuls while alive (the same global
    context serves torch and stemroi's LibTorch)."""

    def __init__(self, on):
        self.on = on

    def __enter__(self):
        self.saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = self.on

    def __exit__(self, *exc):
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = self.saved


def conv_peak(device, dtype, rounds=5):
    """Best GFLOP/s of a 3x3 256->256 convolution on a 32 x 256 x 56 x 56 batch (VGG16's block3 shape)."""
    x = torch.randn(32, 256, 56, 56, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(256, 256, 3, 3, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    flop = 2 * 32 * 56 * 56 * 256 * 256 * 9
    with torch.inference_mode():
        t, _ = best_time(lambda: torch.nn.functional.conv2d(x, w, padding=1), device, rounds)
    return flop / t / 1e9


class TorchvisionGPU:
    """The reference on the GPU: F.interpolate (bilinear, half-pixel centres, as PIL's upscaling) + the
    torchvision normalisation + eager VGG16 features, batches of BATCH, GAP."""

    def __init__(self, model, size, device, dtype=torch.float32):
        self.size, self.device, self.dtype = size, device, dtype
        self.model = model.to(device=device, dtype=dtype)
        if dtype == torch.bfloat16:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.mean = torch.from_numpy(TV_MEAN).to(device)
        self.std = torch.from_numpy(TV_STD).to(device)

    def features(self, tiles):
        out = []
        with torch.inference_mode():
            for s in range(0, len(tiles), BATCH):
                x = torch.from_numpy(np.ascontiguousarray(tiles[s:s + BATCH]))[:, None].to(self.device)
                if self.size is not None and self.size != x.shape[-1]:
                    x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear",
                                                        align_corners=False)
                x = ((x.expand(-1, 3, -1, -1) - self.mean) / self.std).to(self.dtype)
                if self.dtype == torch.bfloat16:
                    x = x.contiguous(memory_format=torch.channels_last)
                out.append(self.model(x).float().mean((2, 3)).cpu().numpy())
        return np.concatenate(out)


def stemroi_vgg(state, size, device, dtype, batch=BATCH, dense=False):
    ext = stemroi.VGG16Features(input_size=size, preprocessing="torchvision", dtype=dtype, device=device,
                                batch_size=batch, dense=dense).fit()
    ext.model_.load_state_dict(state)
    return ext


def section_features(tiles, tv, state, device, rounds):
    n = len(tiles)
    print(f"\n== 1. VGG16 features of {n} tiles of 64 px, batches of {BATCH}; best of {rounds}")
    print(f"   {'':44s} {'s':>7s} {'tiles/s':>8s} {'TFLOP/s':>8s} {'% peak':>6s} {'x ref':>6s} | "
          "vs torchvision TF32 off")
    for size in (224, None):
        flop = n * vgg16_flop(size or 64, size or 64)
        rows, ref_time = {}, {}
        ref_exact = None
        for tf, label in ((False, "TF32 off"), (True, "TF32 on")):
            with tf32(tf):
                peak = conv_peak(device, torch.float32) if device.startswith("cuda") else float("nan")
                ref = TorchvisionGPU(tv, size, device)
                t, f = best_time(lambda: ref.features(tiles), device, rounds)
                if not tf:
                    ref_exact = f
                ref_time[tf] = t
                rows[f"torchvision FP32 {label}"] = (t, f, peak, t)
                ext = stemroi_vgg(state, size, device, "float32")
                t, f = best_time(lambda: ext.transform(tiles), device, rounds)
                rows[f"stemroi FP32 {label}"] = (t, f, peak, ref_time[tf])
        with tf32(True):
            peak = conv_peak(device, torch.bfloat16) if device.startswith("cuda") else float("nan")
            try:
                if "bfloat16" not in DTYPES:
                    raise RuntimeError("no bf16 convolutions on this CPU")
                ref = TorchvisionGPU(tv, size, device, torch.bfloat16)
                t_ref_bf, f = best_time(lambda: ref.features(tiles), device, rounds)
                rows["torchvision BF16 channels_last"] = (t_ref_bf, f, peak, t_ref_bf)
                ext = stemroi_vgg(state, size, device, "bfloat16")
                t, f = best_time(lambda: ext.transform(tiles), device, rounds)
                rows["stemroi BF16"] = (t, f, peak, t_ref_bf)
            except RuntimeError as exc:  # a CPU without oneDNN bf16 (the --device cpu smoke test)
                print(f"   BF16 left out: {str(exc).splitlines()[0][:120]}")
        tv.to(device="cpu", dtype=torch.float32, memory_format=torch.contiguous_format)
        print(f"   input {size or 64} ({'64-px tiles resized' if size else 'native'}), "
              f"{flop / 1e12:.2f} TFLOP:")
        for name, (t, f, peak, t_ref) in rows.items():
            tflops = flop / t / 1e12
            rel = np.abs(f - ref_exact).max() / np.abs(ref_exact).max()
            print(f"   {name:44s} {t:7.3f} {n / t:8.0f} {tflops:8.1f} {100 * tflops * 1e3 / peak:5.1f}% "
                  f"{t_ref / t:6.2f} | max rel {rel:.1e}, min cos {cosine(f, ref_exact).min():.6f}")


def section_study(img, tv, state, device, rounds):
    from PIL import Image

    tiles = tiles_of(img)
    ref_model = TorchvisionGPU(tv, None, device)

    def reference():
        x = np.stack([np.asarray(Image.fromarray(t, mode="F").resize((224, 224), Image.BILINEAR)) for t in tiles])
        f = ref_model.features(x)
        k, labels, _ = Reference(None, None, 0).cluster(f)  # scikit-learn PCA 0.95 + K-means + silhouette
        return f, k, labels

    exts = {dt: stemroi_vgg(state, 224, device, dt) for dt in DTYPES}

    def ours(dt):
        f = exts[dt].transform(tiles)
        z = stemroi.PCA(n_components=0.95, device=device).fit_transform(f)
        sel = stemroi.select_n_clusters(z, K_RANGE, n_init=10, random_state=0, device=device)
        return f, sel.best_k, sel.labels[sel.best_k]

    print(f"\n== 2. study workflow, frame {img.shape}: {len(tiles)} tiles -> 224, VGG16 GAP, PCA 0.95, "
          f"K-means k={K_RANGE.start}..{K_RANGE.stop - 1} + silhouette; best of {rounds} (TF32 as PyTorch's default)")
    t_ref, (f_ref, k_ref, l_ref) = best_time(reference, device, rounds)
    print(f"   reference (PIL + torchvision on {device} + scikit-learn): {t_ref:.3f} s, k = {k_ref}")
    for dt in exts:
        try:
            t, (f, k, lab) = best_time(lambda dt=dt: ours(dt), device, rounds)
        except RuntimeError as exc:
            print(f"   stemroi {dt}: left out ({str(exc).splitlines()[0][:100]})")
            continue
        print(f"   stemroi {dt} on {device} (features, PCA, sweep): {t:.3f} s = {t_ref / t:.2f}x the reference; "
              f"k = {k}, labels identical: {k == k_ref and same_partition(lab, l_ref)}, features min cos "
              f"{cosine(f, f_ref).min():.6f}")


def section_dense(img, state, device, rounds, tag, scales, k=2):
    patch, stride = 64, 16
    H, W = img.shape
    n_win = ((H - patch) // stride + 1) * ((W - patch) // stride + 1)
    print(f"\n== dense stride-{stride} map, {tag} ({H} x {W}, {n_win} windows): features, then PCA 0.95 + "
          f"K-means k={k} on {device}; best of {rounds}")
    feats = {}
    for size in scales:
        s = (size or patch) / patch
        flop = vgg16_flop(int(round(H * s)), int(round(W * s)))
        for dt, tdt in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
            if dt not in DTYPES:
                continue
            try:
                ext = stemroi_vgg(state, size, device, dt, dense=True)
                if device.startswith("cuda"):
                    torch.cuda.reset_peak_memory_stats()
                t, (f, _) = best_time(lambda: extract_image_features(img, ext, patch, stride), device, rounds)
                mem = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")
                t2, lab = best_time(lambda: stemroi.KMeans(k, n_init=10, random_state=0, device=device).fit_predict(
                    stemroi.PCA(n_components=0.95, device=device).fit_transform(f)), device, rounds)
            except RuntimeError as exc:
                print(f"   {dt}: left out ({str(exc).splitlines()[0][:100]})")
                continue
            peak = conv_peak(device, tdt) if device.startswith("cuda") else float("nan")
            floor = flop / (peak * 1e9)
            feats[(size, dt)] = (f, lab)
            print(f"   scale x{s:g} ({flop / 1e12:.2f} TFLOP) {'FP32' if dt == 'float32' else 'BF16'}: features "
                  f"{t:.3f} s ({flop / t / 1e12:.1f} TFLOP/s), floor {floor:.3f} s at {peak / 1e3:.0f} TFLOP/s -> "
                  f"{t / floor:.2f}x floor; map {t + t2:.3f} s; GPU memory peak {mem:.2f} GiB")
        if (size, "bfloat16") in feats:
            (a, la), (b, lb) = feats[(size, "bfloat16")], feats[(size, "float32")]
            print(f"   BF16 vs FP32: min cosine {cosine(a, b).min():.6f}, labels equal on "
                  f"{100 * agreement(la, lb):.2f}% of windows")


def section_sweep(device, rounds, n=10000, d=50):
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(0)
    centres = 4.0 * rng.standard_normal((6, d))
    X = (centres[rng.integers(0, 6, n)] + rng.standard_normal((n, d))).astype(np.float32)
    print(f"\n== 4. k-sweep with silhouette, n={n}, d={d}, k={K_RANGE.start}..{K_RANGE.stop - 1}, n_init=10, "
          f"float32; best of {rounds}")

    def sk():
        out = {}
        for k in K_RANGE:
            lab = KMeans(n_clusters=k, n_init=10, random_state=0).fit_predict(X)
            out[k] = (silhouette_score(X, lab), lab)
        return out

    t = time.perf_counter()
    r_sk = sk()  # one call: the slowest side, timed once
    t_sk = time.perf_counter() - t
    rows = {"scikit-learn (all cores)": t_sk}
    sels = {}
    for dev in ("cpu", device) if device != "cpu" else ("cpu",):
        t, sel = best_time(lambda dev=dev: stemroi.select_n_clusters(X, K_RANGE, n_init=10, random_state=0,
                                                                     device=dev), dev, rounds)
        rows[f"stemroi on {dev}" + (" (all cores)" if dev == "cpu" else "")] = t
        sels[dev] = sel
    for name, t in rows.items():
        print(f"   {name:32s} {t:7.3f} s  {t_sk / t:6.1f}x scikit-learn")
    k_sk = max(r_sk, key=lambda k: r_sk[k][0])
    for dev, sel in sels.items():
        same = all(same_partition(sel.labels[k], sels["cpu"].labels[k]) for k in K_RANGE)
        print(f"   stemroi on {dev}: k = {sel.best_k} (scikit-learn {k_sk}); labels of every k identical to stemroi "
              f"on the CPU: {same}; silhouette max |diff| vs CPU "
              f"{np.abs(np.asarray(sel.scores) - np.asarray(sels['cpu'].scores)).max():.1e}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tiles", type=int, default=1024, help="tiles of section 1")
    ap.add_argument("--synth", type=int, default=4096, help="synthetic frame side of section 5 (0 skips)")
    ap.add_argument("--quick", action="store_true", help="small sizes, 1 round (a smoke test)")
    ap.add_argument("--skip", default="", help="comma list of sections to skip: features,study,dense,sweep,synth")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.tiles, args.synth = 1, 32, 0
    skip = set(filter(None, args.skip.split(",")))
    device = args.device
    global DTYPES
    if not device.startswith("cuda"):
        from _common import bf16_available

        if not bf16_available()[0]:
            DTYPES = ("float32",)
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            print("gpu.py: torch.cuda.is_available() is False: nothing to measure (use --device cpu for a smoke test)")
            return 1
        p = torch.cuda.get_device_properties(0)
        print(f"{p.name}, {p.multi_processor_count} SMs, {p.total_memory / 2**30:.0f} GiB; torch {torch.__version__} "
              f"(CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}); stemroi CUDA kernels built: "
              f"{_core.cuda_built}")
    print("Weights: untrained VGG16 (torchvision init, torch.manual_seed(0)), the same on both sides.")
    import torchvision

    torch.manual_seed(0)
    tv = torchvision.models.vgg16(weights=None).features.eval()
    state = {f"features.{k}": v.numpy() for k, v in tv.state_dict().items()}
    data = os.environ.get("STEMROI_DATA_DIR")
    path = os.path.join(data, "ayyubi-stem-defects", "CdTe_Training_Image.tif") if data else ""
    if path and os.path.exists(path):
        img, tag = read_grey(path), "CdTe 768"
    else:
        from stemroi.io import synth

        img = synth.make_image((768, 768), random_state=0).image.astype(np.float32)
        img, tag = (img - img.min()) / (img.max() - img.min()), "synthetic 768 (no STEMROI_DATA_DIR)"
    print(f"frame: {tag}")
    tiles = tiles_of(img)
    reps = -(-args.tiles // len(tiles))
    many = np.concatenate([np.roll(tiles, i, axis=-1) for i in range(reps)])[:args.tiles]
    sections = [
        ("features", lambda: section_features(many, tv, state, device, args.rounds)),
        ("study", lambda: section_study(img, tv, state, device, args.rounds)),
        ("dense", lambda: section_dense(img, state, device, args.rounds, "3. " + tag, (224, None))),
        ("sweep", lambda: section_sweep(device, args.rounds, n=2000 if args.quick else 10000)),
    ]
    if args.synth:
        def synth_map():
            from stemroi.io import synth

            big = synth.make_image((args.synth, args.synth), defects={"vacancy": 40, "interstitial": 40},
                                   random_state=0).image.astype(np.float32)
            big = (big - big.min()) / (big.max() - big.min())
            section_dense(big, state, device, 1, f"5. synthetic {args.synth}", (None,))
        sections.append(("synth", synth_map))
    failed = 0
    for name, fn in sections:
        if name in skip:
            continue
        t = time.perf_counter()
        try:
            fn()
        except Exception as exc:  # one broken section must not hide the others' figures
            failed += 1
            print(f"   section {name} FAILED: {type(exc).__name__}: {exc}")
        print(f"   ({name}: {time.perf_counter() - t:.0f} s)")
        sys.stdout.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
